"""The Kubernetes provider end to end: `hodei server --provider kubernetes` as a real process
against a real API server (.ci/services/kubernetes.sh: kube-apiserver with RBAC, the
controller manager with its garbage collector, the scheduler), under exactly the Role of
examples/kubernetes/hodei.yaml (a token of a service account bound to it). There is no
kubelet: tests/k8s_node/node_agent.py registers a node and runs its pods with the local Docker
engine, so each worker's agent really connects and runs its jobs.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import httpx
import pytest
import yaml
from harness import RunningServer, stop_server
from kube import (
    ApiServer,
    Cluster,
    NodeAgent,
    delete_namespace,
    load_cluster,
    make_namespace,
    manifest_objects,
    ours,
    server_id,
    unique,
    wait_for,
)
from services import require_service

pytestmark = pytest.mark.e2e

WORKER_IMAGE = os.environ.get("HODEI_TEST_WORKER_IMAGE", "hodei-worker:latest")


@dataclass(frozen=True, slots=True)
class Space:
    cluster: Cluster
    name: str
    kubeconfig: Path  # the service account bound to the manifest's Role
    node: str  # the test node (pods are pinned to it: the cluster may hold other nodes)


@pytest.fixture(scope="module")
def cluster() -> Cluster:
    found, why = load_cluster()
    require_service("kubernetes", found is not None, why)
    assert found is not None
    return found


@pytest.fixture(scope="module")
def node(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    try:
        engine = docker.from_env(timeout=30)
        engine.images.get(WORKER_IMAGE)
        engine.close()
    except Exception as exc:  # no engine, or no worker image: the node cannot run pods
        require_service("docker", False, f"the test node needs Docker and {WORKER_IMAGE}: {exc}")
    name = unique("hodei-e2e-node")
    agent = NodeAgent(name, tmp_path_factory.mktemp("node") / "node-agent.log")
    agent.start()
    yield name
    agent.stop()
    with cluster.client() as client:
        client.delete(f"/api/v1/nodes/{name}")


@pytest.fixture(scope="module")
def space(cluster: Cluster, node: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Space]:
    name = unique("hodei-e2e")
    token = make_namespace(cluster, name)
    path = cluster.kubeconfig(tmp_path_factory.mktemp("kube") / "kubeconfig", token, name)
    yield Space(cluster, name, path, node)
    delete_namespace(cluster, name)


@pytest.fixture
def home(tmp_path: Path, space: Space) -> Iterator[Path]:
    path = tmp_path / "home"
    yield path
    with space.cluster.client() as client:  # a failed test must leave no pod behind
        for pod in ours(space.cluster, space.name, path, "pods"):
            client.delete(
                f"/api/v1/namespaces/{space.name}/pods/{pod['metadata']['name']}",
                params={"gracePeriodSeconds": "0"},
            )


def k8s_flags(space: Space, kubeconfig: Path | None = None) -> list[str]:
    return [
        "--provider",
        "kubernetes",
        "--k8s-kubeconfig",
        str(kubeconfig or space.kubeconfig),
        "--k8s-namespace",
        space.name,
        "--worker-image",
        WORKER_IMAGE,
        "--k8s-node-selector",
        f"kubernetes.io/hostname={space.node}",
    ]


def start(factory: type, home: Path, space: Space, *extra: str) -> RunningServer:
    server: RunningServer = factory.start(*k8s_flags(space), *extra, home=home)  # type: ignore[attr-defined]
    return server


def post(client: httpx.Client, command: str, **fields: Any) -> str:
    response = client.post("/api/v1/jobs", json={"command": command, **fields})
    assert response.status_code == 201, response.text
    job_id: str = response.json()["id"]
    return job_id


def job(server: RunningServer, job_id: str) -> dict[str, Any]:
    with server.http() as client:
        found: dict[str, Any] = client.get(f"/api/v1/jobs/{job_id}").json()
    return found


def wait_state(
    server: RunningServer, job_id: str, states: set[str], timeout: float = 30
) -> dict[str, Any]:
    """server.wait_state, failing with the job's reason and the server's last log lines."""
    try:
        found: dict[str, Any] = server.wait_state(job_id, states, timeout)
    except AssertionError as exc:
        now = job(server, job_id)
        tail = "".join(server.stderr[-25:])
        raise AssertionError(f"{exc}; reason {now.get('reason')!r}; server log:\n{tail}") from None
    return found


def provisioning_error(server: RunningServer) -> str:
    with server.http() as client:
        return str(client.get("/api/v1/workers").json()["provisioning_error"])


def pods(space: Space, home: Path) -> list[dict[str, Any]]:
    return ours(space.cluster, space.name, home, "pods")


def secrets(space: Space, home: Path) -> list[dict[str, Any]]:
    return ours(space.cluster, space.name, home, "secrets")


def nothing_left(space: Space, home: Path) -> bool:
    return not pods(space, home) and not secrets(space, home)


def test_a_job_runs_in_a_pod_that_is_deleted_once_idle(
    server_factory: type, home: Path, space: Space
) -> None:
    server = start(server_factory, home, space, "--worker-idle", "2s", "--max-workers", "2")
    with server.http() as client:
        job_id = post(client, "echo from a pod; sleep 2", cpu=0.5, memory_bytes="192M")
    running = wait_state(server, job_id, {"running"}, timeout=90)
    [pod] = [
        p for p in pods(space, home) if p["metadata"]["name"] == f"hodei-{running['worker_id']}"
    ]
    labels = pod["metadata"]["labels"]
    assert labels["io.hodei/server"] == server_id(home)
    assert labels["io.hodei/worker-id"] == running["worker_id"]
    spec = pod["spec"]
    assert spec["automountServiceAccountToken"] is False
    assert not any(v.get("name", "").startswith("kube-api-access") for v in spec.get("volumes", []))
    [container] = spec["containers"]
    amounts = {"cpu": "500m", "memory": str(192 << 20)}
    assert container["resources"] == {"requests": amounts, "limits": amounts}
    token_env = next(e for e in container["env"] if e["name"] == "HODEI_TOKEN")
    assert "value" not in token_env and token_env["valueFrom"]["secretKeyRef"]
    # The OTP was spent when the agent registered: its Secret is gone.
    wait_for("the OTP Secret's removal", lambda: not secrets(space, home), 30)

    done = wait_state(server, job_id, {"succeeded", "failed"}, timeout=60)
    assert done["state"] == "succeeded", done
    with server.http() as client:
        assert client.get(f"/api/v1/jobs/{job_id}/logs").text == "from a pod\n"
    wait_for("the idle pod's removal", lambda: nothing_left(space, home), 60)
    # A user's view: the CLI shows the job's output too.
    shown = server.hodei("logs", job_id)
    assert b"from a pod" in shown.stdout, shown.stderr


def test_a_job_in_its_own_image_runs_in_a_pod_with_the_agent_from_an_init_container(
    server_factory: type, home: Path, space: Space, engine: Any
) -> None:
    image = "hodei-test-busybox:1"  # no Python, no libc (scripts/build_test_images.sh)
    require_service("test job images", bool(engine.images.list(name=image)), f"{image} missing")
    server = start(server_factory, home, space, "--worker-idle", "2s", "--max-workers", "2")
    with server.http() as client:
        job_id = post(client, "echo in busybox; head -1 /etc/os-release", image=image)
        missing = post(client, "true", image="hodei-test-missing:404")
    done = wait_state(server, job_id, {"succeeded", "failed"}, timeout=90)
    assert done["state"] == "succeeded", done
    with server.http() as client:
        assert client.get(f"/api/v1/jobs/{job_id}/logs").text == (
            'in busybox\nNAME="busybox only"\n'
        )
    # The job's image that no node can pull fails its job with the reason, with no pod loop.
    failed = wait_state(server, missing, {"failed", "succeeded"}, timeout=90)
    assert failed["state"] == "failed", failed
    assert "hodei-test-missing:404 cannot be pulled" in failed["reason"], failed
    wait_for("the idle pod's removal", lambda: nothing_left(space, home), 60)


def test_a_job_bigger_than_any_node_is_unschedulable_in_the_schedulers_words(
    server_factory: type, home: Path, space: Space
) -> None:
    server = start(server_factory, home, space)
    with server.http() as client:
        job_id = post(client, "true", memory_bytes="64G")
    error = wait_for("the provisioning error", lambda: provisioning_error(server), 60)
    assert "no node can run its pod: 0/" in error and "Insufficient memory" in error, error
    shown = server.hodei("workers")  # what a user sees
    assert b"provisioning: start failed: worker pod hodei-kubernetes-" in shown.stdout, shown
    assert b"Insufficient memory" in shown.stdout
    reason = wait_for(
        "the pending reason", lambda: "Insufficient memory" in job(server, job_id)["reason"], 30
    )
    assert reason
    assert job(server, job_id)["state"] == "queued"
    with server.http() as client:
        assert client.post(f"/api/v1/jobs/{job_id}/cancel").status_code == 200
    wait_for("no pod left", lambda: nothing_left(space, home), 30)


def test_a_job_label_becomes_a_node_selector_named_when_no_node_matches(
    server_factory: type, home: Path, space: Space
) -> None:
    server = start(
        server_factory, home, space, "--k8s-label-node-selector", "gpu=hodei.test/accelerator"
    )
    with server.http() as client:
        job_id = post(client, "true", labels={"gpu": "1"})
    error = wait_for("the provisioning error", lambda: provisioning_error(server), 60)
    assert "didn't match" in error, error  # 1.20: "didn't match Pod's node affinity"
    assert "hodei.test/accelerator=1" in error  # named: no node carries it
    with server.http() as client:
        assert client.post(f"/api/v1/jobs/{job_id}/cancel").status_code == 200
    # Once the node has the label, such a job runs on a worker labelled gpu=1, on that node.
    with space.cluster.client() as client:
        patch = {"metadata": {"labels": {"hodei.test/accelerator": "1"}}}
        answer = client.patch(
            f"/api/v1/nodes/{space.node}",
            content=json.dumps(patch),
            headers={"Content-Type": "application/merge-patch+json"},
        )
        assert answer.status_code == 200, answer.text
    try:
        with server.http() as client:
            job_id = post(client, "echo on the gpu node", labels={"gpu": "1"})
        running = wait_state(server, job_id, {"running", "succeeded"}, timeout=90)
        done = wait_state(server, job_id, {"succeeded", "failed"}, timeout=60)
        assert done["state"] == "succeeded", done
        with server.http() as client:
            [worker] = [
                w for w in client.get("/api/v1/workers").json()["items"]
                if w["id"] == running["worker_id"]
            ]  # fmt: skip
        assert worker["labels"] == {"gpu": "1"}
    finally:
        with space.cluster.client() as client:
            unlabel: dict[str, Any] = {"metadata": {"labels": {"hodei.test/accelerator": None}}}
            client.patch(
                f"/api/v1/nodes/{space.node}",
                content=json.dumps(unlabel),
                headers={"Content-Type": "application/merge-patch+json"},
            )


def test_an_unknown_image_fails_with_the_pull_reason_and_backs_off(
    server_factory: type, home: Path, space: Space
) -> None:
    server = start(server_factory, home, space, "--worker-image", "hodei-worker:does-not-exist")
    with server.http() as client:
        job_id = post(client, "true")
    error = wait_for("the provisioning error", lambda: provisioning_error(server), 60)
    assert "image hodei-worker:does-not-exist cannot be pulled" in error, error
    assert "ErrImagePull" in error or "ImagePullBackOff" in error
    # No pod loop: the failed pod is deleted, and the next try waits out a backoff.
    reason = wait_for(
        "the backoff",
        lambda: "backing off" in (r := job(server, job_id)["reason"]) and r,
        30,
    )
    assert "cannot be pulled" in reason
    with server.http() as client:
        assert client.post(f"/api/v1/jobs/{job_id}/cancel").status_code == 200
    wait_for("no pod left", lambda: nothing_left(space, home), 30)


def test_kill_9_and_a_restart_leave_no_orphan_pod_or_secret(
    server_factory: type, home: Path, space: Space
) -> None:
    flags = ("--worker-idle", "2s", "--worker-grace", "60s")
    first = start(server_factory, home, space, *flags)
    with first.http() as client:
        kept = post(client, "sleep 6; echo survived")
    running = wait_state(first, kept, {"running"}, timeout=90)
    grpc_port, http_port = first.grpc.rsplit(":", 1)[1], first.url.rsplit(":", 1)[1]
    stop_server(first, signal.SIGKILL)
    assert len(pods(space, home)) == 1  # nothing ties a pod to the server's life
    # What a crash between two calls could leave: a Secret of this server whose pod is gone.
    stray = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {
            "name": "hodei-kubernetes-deadbeef-otp",
            "labels": {
                "io.hodei/server": server_id(home),
                "io.hodei/worker-id": "kubernetes-deadbeef",
            },
        },
        "stringData": {"token": "x"},
    }
    with space.cluster.client() as client:
        answer = client.post(f"/api/v1/namespaces/{space.name}/secrets", json=stray)
        assert answer.status_code == 201, answer.text

    again = start(
        server_factory,
        home,
        space,
        *flags,
        "--grpc-addr",
        f"127.0.0.1:{grpc_port}",
        "--http-addr",
        f"127.0.0.1:{http_port}",
    )
    assert not secrets(space, home)  # the stray Secret was deleted at start
    [pod] = pods(space, home)  # the live worker was adopted, not deleted
    assert pod["metadata"]["name"] == f"hodei-{running['worker_id']}"
    done = wait_state(again, kept, {"succeeded", "failed"}, timeout=60)
    assert done["state"] == "succeeded" and done["attempts"] == 1, done
    with again.http() as client:
        assert client.get(f"/api/v1/jobs/{kept}/logs").text == "survived\n"
    wait_for("the idle pod's removal", lambda: nothing_left(space, home), 60)


def test_a_pod_deleted_or_killed_under_a_job_is_a_platform_fault_with_its_reason(
    server_factory: type, home: Path, space: Space
) -> None:
    server = start(server_factory, home, space, "--worker-idle", "2s")
    with server.http() as client:
        job_id = post(
            client, 'echo attempt-$HODEI_ATTEMPT; [ "$HODEI_ATTEMPT" = 1 ] && sleep 300; true'
        )
    worker = wait_state(server, job_id, {"running"}, timeout=90)["worker_id"]
    with space.cluster.client() as client:  # as `kubectl delete pod` would (graceful)
        answer = client.delete(f"/api/v1/namespaces/{space.name}/pods/hodei-{worker}")
        assert answer.status_code == 200, answer.text
    done = wait_state(server, job_id, {"succeeded", "failed"}, timeout=120)
    assert done["state"] == "succeeded", done
    with server.http() as client:
        attempts = client.get(f"/api/v1/jobs/{job_id}/attempts").json()["items"]
    first, last = attempts[0], attempts[-1]
    assert first["worker_id"] == worker and first["failure"] == "worker_lost", first
    assert last["state"] == "succeeded" and last["worker_id"] != worker, last
    # Platform faults only, a handful at most: no attempt bounced between pods.
    assert all(a["failure"] in ("worker_lost", "not_run", None) for a in attempts), attempts
    assert len(attempts) <= 3, attempts
    assert any("deleted by someone else" in line for line in server.stderr)
    # The agent killed outright (SIGKILL: no chance to report): the pod fails, and its end,
    # in the provider's words, is the job's reason.
    with server.http() as client:
        killed = post(client, "sleep 300", no_infra_retry=True)
    worker = wait_state(server, killed, {"running"}, timeout=90)["worker_id"]
    [pod] = [p for p in pods(space, home) if p["metadata"]["name"] == f"hodei-{worker}"]
    engine = docker.from_env(timeout=30)
    try:
        label = f"io.hodei.test-pod-uid={pod['metadata']['uid']}"
        [container] = engine.containers.list(filters={"label": label})
        container.kill()
    finally:
        engine.close()
    lost = wait_state(server, killed, {"succeeded", "failed"}, timeout=60)
    assert lost["state"] == "failed", lost
    assert f"worker {worker} lost (its agent exited with code 137)" in str(lost["reason"]), lost
    wait_for("the idle pod's removal", lambda: nothing_left(space, home), 60)


def test_the_watch_survives_an_api_server_restart(
    server_factory: type, home: Path, space: Space, tmp_path: Path
) -> None:
    why = ApiServer.available()
    require_service("kubernetes", not why, why)
    api = ApiServer(space.cluster, tmp_path / "apiserver.log")
    api.start()
    try:
        token = next(
            u["user"]["token"] for u in yaml.safe_load(space.kubeconfig.read_text())["users"]
        )
        kubeconfig = space.cluster.kubeconfig(tmp_path / "ours", token, space.name, api.url)
        server: RunningServer = server_factory.start(  # type: ignore[attr-defined]
            *k8s_flags(space, kubeconfig), "--worker-idle", "1m", home=home
        )
        with server.http() as client:
            before = post(client, "echo before")
        assert wait_state(server, before, {"succeeded", "failed"}, 90)["state"] == "succeeded"
        api.stop()
        api.start()
        # The worker pod is deleted behind the server's back while its watch is being
        # resumed: the change reaches it through the resumed watch (or the list after 410).
        [pod] = pods(space, home)
        with space.cluster.client() as client:
            client.delete(f"/api/v1/namespaces/{space.name}/pods/{pod['metadata']['name']}")
        wait_for(
            "the deletion seen",
            lambda: any("deleted by someone else" in s for s in server.stderr),
            60,
        )
        with server.http() as client:
            after = post(client, "echo after")  # a new pod, whose start the watch reports
        assert wait_state(server, after, {"succeeded", "failed"}, 90)["state"] == "succeeded"
        stop_server(server)
        wait_for("no pod left", lambda: not pods(space, home), 30)
    finally:
        api.stop()


def test_a_narrowed_role_fails_naming_the_missing_verb(
    cluster: Cluster, node: str, tmp_path: Path
) -> None:
    [role] = manifest_objects({"Role"})
    rules = role["rules"]
    for rule in rules:
        if rule["resources"] == ["pods"]:
            rule["verbs"] = [v for v in rule["verbs"] if v != "watch"]
    name = unique("hodei-e2e-narrow")
    token = make_namespace(cluster, name, rules)
    try:
        kubeconfig = cluster.kubeconfig(tmp_path / "kubeconfig", token, name)
        env = {**os.environ, "HODEI_HOME": str(tmp_path / "home")}
        env.pop("HODEI_PROVIDER", None)
        done = subprocess.run(
            [sys.executable, "-m", "hodei", "server", "--http-addr", "127.0.0.1:0",
             "--grpc-addr", "127.0.0.1:0", "--provider", "kubernetes",
             "--k8s-kubeconfig", str(kubeconfig), "--k8s-namespace", name],
            capture_output=True, text=True, timeout=60, env=env, stdin=subprocess.DEVNULL,
        )  # fmt: skip
        assert done.returncode != 0
        assert "lacks 'watch' on 'pods'" in done.stderr, done.stderr[-2000:]
    finally:
        delete_namespace(cluster, name)
