"""The Kubernetes provider's pure part: the pod and Secret it creates, and what it reads from a
pod's status, on plain dicts shaped as the API's JSON."""

from __future__ import annotations

from typing import Any

import pytest

from hodei.adapters.providers.kubernetes_api import refused
from hodei.adapters.providers.kubernetes_spec import (
    LABEL_SERVER,
    LABEL_WORKER,
    KubernetesOptions,
    Toleration,
    end_reason,
    exit_code,
    parse_pair,
    parse_toleration,
    pod_manifest,
    running,
    secret_manifest,
    start_problem,
)
from hodei.config import ServerSettings
from hodei.errors import ValidationError
from hodei.ports import WorkerLaunch

OTP = "otp-secret-value-123"


def launch(**fields: Any) -> WorkerLaunch:
    base: dict[str, Any] = {
        "worker_id": "kubernetes-ab12cd34",
        "otp": OTP,
        "server_url": "127.0.0.1:50051",
    }
    return WorkerLaunch(**{**base, **fields})


def agent(pod: dict[str, Any]) -> dict[str, Any]:
    containers: list[dict[str, Any]] = pod["spec"]["containers"]
    assert [c["name"] for c in containers] == ["agent"]
    return containers[0]


def test_the_pod_carries_identity_labels_and_never_the_otp() -> None:
    options = KubernetesOptions(namespace="hodei", image="hodei-worker:v1")
    pod = pod_manifest(options, "server-1", launch(labels={"zone": "a"}, slots=2))
    meta = pod["metadata"]
    assert meta["name"] == "hodei-kubernetes-ab12cd34" and meta["namespace"] == "hodei"
    assert meta["labels"][LABEL_SERVER] == "server-1"
    assert meta["labels"][LABEL_WORKER] == "kubernetes-ab12cd34"
    assert OTP not in repr(pod)  # nowhere in the spec: only a reference to the Secret
    container = agent(pod)
    assert container["image"] == "hodei-worker:v1"
    assert container["command"] == ["hodei", "agent"]
    assert container["args"] == ["--slots", "2", "--label", "zone=a"]
    env = {e["name"]: e for e in container["env"]}
    assert env["HODEI_TOKEN"] == {
        "name": "HODEI_TOKEN",
        "valueFrom": {"secretKeyRef": {"name": "hodei-kubernetes-ab12cd34-otp", "key": "token"}},
    }
    assert env["HODEI_SERVER_URL"]["value"] == "127.0.0.1:50051"
    spec = pod["spec"]
    assert spec["automountServiceAccountToken"] is False
    assert spec["restartPolicy"] == "Never"
    assert "serviceAccountName" not in spec and "nodeSelector" not in spec
    assert "resources" not in container  # no job request, no per-slot default


def test_the_secret_holds_the_otp_and_is_owned_by_the_pod() -> None:
    options = KubernetesOptions(namespace="hodei")
    created = {"metadata": {"name": "hodei-kubernetes-ab12cd34", "uid": "uid-42"}}
    secret = secret_manifest(options, "server-1", "kubernetes-ab12cd34", OTP, created)
    assert secret["stringData"] == {"token": OTP}
    assert secret["metadata"]["name"] == "hodei-kubernetes-ab12cd34-otp"
    assert secret["metadata"]["labels"][LABEL_SERVER] == "server-1"
    assert secret["metadata"]["ownerReferences"] == [
        {"apiVersion": "v1", "kind": "Pod", "name": "hodei-kubernetes-ab12cd34", "uid": "uid-42"}
    ]


def test_the_jobs_request_becomes_requests_and_limits() -> None:
    pod = pod_manifest(KubernetesOptions(), "s", launch(cpu=0.5, memory_bytes=192 << 20))
    amounts = {"cpu": "500m", "memory": str(192 << 20)}
    assert agent(pod)["resources"] == {"requests": amounts, "limits": amounts}
    # Too little memory for the agent itself is raised to its minimum.
    tiny = pod_manifest(KubernetesOptions(), "s", launch(memory_bytes=1 << 20))
    assert agent(tiny)["resources"]["limits"] == {"memory": str(64 << 20)}


def test_per_slot_defaults_apply_when_the_job_asks_nothing() -> None:
    options = KubernetesOptions(cpu_per_slot=0.25, memory_per_slot=256 << 20)
    pod = pod_manifest(options, "s", launch(slots=4))
    assert agent(pod)["resources"]["limits"] == {"cpu": "1000m", "memory": str(1 << 30)}
    own = pod_manifest(options, "s", launch(slots=4, cpu=2.0))
    assert agent(own)["resources"]["limits"]["cpu"] == "2000m"


def test_operator_settings_reach_the_pod() -> None:
    options = KubernetesOptions(
        service_account="workers",
        automount_token=True,
        image_pull_policy="Always",
        image_pull_secrets=("regcred",),
        node_selector=(("pool", "ci"),),
        label_node_selectors=(("gpu", "accelerator"),),
        tolerations=(Toleration("dedicated", "ci", "NoSchedule"), Toleration("spot")),
        labels=(("team", "build"),),
        annotations=(("note", "x"),),
        server_url="hodei.hodei.svc:50051",
    )
    pod = pod_manifest(options, "s", launch(labels={"gpu": "1"}))
    spec = pod["spec"]
    assert spec["serviceAccountName"] == "workers"
    assert spec["automountServiceAccountToken"] is True
    assert spec["imagePullSecrets"] == [{"name": "regcred"}]
    assert spec["nodeSelector"] == {"pool": "ci", "accelerator": "1"}
    assert spec["tolerations"] == [
        {"key": "dedicated", "operator": "Equal", "value": "ci", "effect": "NoSchedule"},
        {"key": "spot", "operator": "Exists"},
    ]
    assert pod["metadata"]["labels"]["team"] == "build"
    assert pod["metadata"]["annotations"] == {"note": "x"}
    container = agent(pod)
    assert container["imagePullPolicy"] == "Always"
    assert {e["name"]: e.get("value") for e in container["env"]}["HODEI_SERVER_URL"] == (
        "hodei.hodei.svc:50051"
    )
    # Without the worker label, no node selector for it.
    plain = pod_manifest(options, "s", launch())
    assert plain["spec"]["nodeSelector"] == {"pool": "ci"}


def test_tls_settings_are_passed_but_nothing_else_of_the_launch_env() -> None:
    env = {"HODEI_CA_PEM": "PEM", "HODEI_ENROLL_URL": "https://x", "OTHER": "no"}
    container = agent(pod_manifest(KubernetesOptions(), "s", launch(env=env)))
    names = [e["name"] for e in container["env"]]
    assert names == ["HODEI_TOKEN", "HODEI_SERVER_URL", "HODEI_CA_PEM", "HODEI_ENROLL_URL"]


def test_parsing_tolerations_and_pairs() -> None:
    assert parse_toleration("k=v:NoExecute") == Toleration("k", "v", "NoExecute")
    assert parse_toleration("k:NoSchedule") == Toleration("k", "", "NoSchedule")
    assert parse_toleration("k") == Toleration("k")
    with pytest.raises(ValueError, match="EFFECT"):
        parse_toleration("k=v:Sometimes")
    assert parse_pair("a=b", "x") == ("a", "b")
    with pytest.raises(ValueError, match="KEY=VALUE"):
        parse_pair("novalue", "node selector")


def test_settings_validate_the_kubernetes_options() -> None:
    settings = ServerSettings(provider="kubernetes", k8s_node_selector=("pool=ci",))
    assert settings.validate().kubernetes_options().node_selector == (("pool", "ci"),)
    with pytest.raises(ValidationError, match="pull policy"):
        ServerSettings(provider="kubernetes", k8s_image_pull_policy="Sometimes").validate()
    with pytest.raises(ValidationError, match="toleration"):
        ServerSettings(provider="kubernetes", k8s_tolerations=("k:Bad",)).validate()


# ---- reading pod status ----------------------------------------------------------------------
def pod(
    phase: str = "Pending", state: dict[str, Any] | None = None, **status: Any
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "metadata": {"name": "hodei-w", "labels": {LABEL_WORKER: "w"}},
        "spec": {"containers": [{"name": "agent", "image": "hodei-worker:v2"}]},
        "status": {"phase": phase, **status},
    }
    if state is not None:
        body["status"]["containerStatuses"] = [{"name": "agent", "state": state}]
    return body


def test_a_pending_pod_has_no_problem_yet() -> None:
    assert start_problem(pod()) is None
    assert start_problem(pod(state={"waiting": {"reason": "ContainerCreating"}})) is None
    assert not running(pod())
    assert running(pod("Running", {"running": {"startedAt": "now"}}))


def test_an_image_that_cannot_be_pulled_is_named() -> None:
    for reason in ("ErrImagePull", "ImagePullBackOff"):
        waiting = {"waiting": {"reason": reason, "message": "not found"}}
        assert start_problem(pod(state=waiting)) == (
            f"image hodei-worker:v2 cannot be pulled ({reason}: not found)"
        )


def test_unschedulable_carries_the_schedulers_message_and_the_node_selector() -> None:
    message = "0/1 nodes are available: 1 Insufficient memory."
    condition = {
        "type": "PodScheduled",
        "status": "False",
        "reason": "Unschedulable",
        "message": message,
    }
    assert start_problem(pod(conditions=[condition])) == f"no node can run its pod: {message}"
    selected = pod(conditions=[condition])
    selected["spec"]["nodeSelector"] = {"accelerator": "1"}
    assert "(the pod's node selector: accelerator=1)" in str(start_problem(selected))


def test_container_config_errors_and_early_ends_are_start_problems() -> None:
    waiting = {"waiting": {"reason": "CreateContainerConfigError", "message": "secret missing"}}
    assert "cannot be created (CreateContainerConfigError: secret missing)" in str(
        start_problem(pod(state=waiting))
    )
    ended = pod("Failed", {"terminated": {"exitCode": 2, "reason": "Error"}})
    assert start_problem(ended) == (
        "its pod ended before its agent started: its agent exited with code 2"
    )


def test_end_reasons() -> None:
    oom = pod("Failed", {"terminated": {"exitCode": 137, "reason": "OOMKilled"}})
    assert end_reason(oom).startswith("OOMKilled")
    assert exit_code(oom) == 137
    evicted = pod("Failed", reason="Evicted", message="The node was low on resource: memory.")
    assert end_reason(evicted) == "evicted by its node: The node was low on resource: memory."
    assert exit_code(evicted) == -1
    done = pod("Succeeded", {"terminated": {"exitCode": 0, "reason": "Completed"}})
    assert end_reason(done) == "its agent exited with code 0"


def test_a_403_names_the_verb_and_resource() -> None:
    body = (
        '{"kind":"Status","reason":"Forbidden","message":"pods is forbidden: User '
        '\\"system:serviceaccount:hodei:hodei-server\\" cannot delete resource \\"pods\\""}'
    )
    error = refused("delete", "pods", "hodei", 403, body)
    assert error.status == 403 and error.reason == "Forbidden"
    assert "lacks the 'delete' verb on 'pods'" in str(error)
    assert "cannot delete resource" in str(error)
    assert "cannot list secrets in namespace x: gone" in str(
        refused("list", "secrets", "x", 500, '{"message": "gone"}')
    )


def test_a_job_image_pod_gets_the_agent_from_an_init_container_read_only() -> None:
    options = KubernetesOptions(image="hodei-worker:7")
    pod = pod_manifest(options, "s", launch(image="node:20"))
    spec = pod["spec"]
    [init] = spec["initContainers"]
    assert init["image"] == "hodei-worker:7"  # the worker image carries the executable
    assert init["volumeMounts"] == [{"name": "hodei-agent", "mountPath": "/dst"}]
    assert "cp -R /opt/hodei/agent/. /dst/" in init["command"][-1]
    assert {v["name"]: v for v in spec["volumes"]} == {
        "hodei-agent": {"name": "hodei-agent", "emptyDir": {}},
        "hodei-tmp": {"name": "hodei-tmp", "emptyDir": {}},
    }
    [container] = spec["containers"]
    assert container["image"] == "node:20"
    assert container["command"] == [
        "/.hodei/agent/glibc/ld-linux-x86-64.so.2",
        "/.hodei/agent/hodei-agent",
    ]
    assert {"name": "hodei-agent", "mountPath": "/.hodei/agent", "readOnly": True} in (
        container["volumeMounts"]
    )
    env = {e["name"]: e for e in container["env"]}
    assert env["HODEI_WORKER_IMAGE"]["value"] == "node:20"
    assert env["TMPDIR"]["value"] == "/.hodei/tmp"
    assert "value" not in env["HODEI_TOKEN"]  # still from the Secret
    plain = pod_manifest(options, "s", launch())["spec"]
    assert "initContainers" not in plain and plain["containers"][0]["image"] == "hodei-worker:7"
