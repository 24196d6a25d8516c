"""A test-only stand-in for a kubelet: registers one Node with the API server, watches the pods
bound to it and runs each with the local Docker engine (host networking, as the Docker
provider's workers; the pod's image, command, args, env with secretKeyRef resolved, cpu and
memory limits), and writes the pod's status back (Running, then Succeeded or Failed with the
exit code, OOMKilled when the kernel killed it; ErrImagePull then ImagePullBackOff for an image
the engine does not have: this node pulls nothing). A pod being deleted has its container
stopped, then is deleted for good (grace 0), as a kubelet confirms a deletion.

It is small on purpose: no probes, restarts or pod networking; of volumes only emptyDir (a
host directory per pod, mode 0777, as a kubelet makes it), and init containers run one after
the other to completion before the pod's container (a failure fails the pod).

Usage: python tests/k8s_node/node_agent.py KUBECONFIG NODE_NAME [--cpu 2] [--memory 4Gi]
Ends on SIGTERM, removing its containers.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import logging
import os
import shutil
import signal
import ssl
import tempfile
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import docker
import httpx
import yaml
from docker import errors as derr

log = logging.getLogger("k8s-node")
NODE_LABEL = "io.hodei.test-node"  # on the containers this agent runs: the node's name
POD_LABEL = "io.hodei.test-pod-uid"


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def api_client(kubeconfig: str) -> httpx.Client:
    """An httpx client for the kubeconfig's current context (server, CA data, token)."""
    with open(kubeconfig) as f:
        config = yaml.safe_load(f)
    context = next(
        c["context"] for c in config["contexts"] if c["name"] == config["current-context"]
    )
    cluster = next(c["cluster"] for c in config["clusters"] if c["name"] == context["cluster"])
    user = next(u["user"] for u in config["users"] if u["name"] == context["user"])
    ca = base64.b64decode(cluster["certificate-authority-data"]).decode()
    verify = ssl.create_default_context(cadata=ca)
    return httpx.Client(
        base_url=cluster["server"],
        verify=verify,
        headers={"Authorization": f"Bearer {user['token']}"},
        timeout=httpx.Timeout(30, read=None),
    )


def parse_cpu(text: str) -> float:
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


UNITS = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "K": 1000, "M": 10**6, "G": 10**9}


def parse_memory(text: str) -> int:
    for suffix, factor in UNITS.items():
        if text.endswith(suffix):
            return int(float(text[: -len(suffix)]) * factor)
    return int(text)


class Node:
    def __init__(self, kubeconfig: str, name: str, cpu: str, memory: str) -> None:
        self.kubeconfig = kubeconfig
        self.name = name
        self.cpu = cpu
        self.memory = memory
        self.api = api_client(kubeconfig)
        self.engine = docker.from_env(timeout=60)
        self.lock = threading.Lock()
        self.pods: dict[str, str] = {}  # pod uid -> state: starting, running, stopping, done
        self.dirs: dict[str, list[str]] = {}  # pod uid -> its emptyDir host directories
        self.closed = threading.Event()

    # ---- the Node object ---------------------------------------------------------------------
    def register(self) -> None:
        resources = {"cpu": self.cpu, "memory": self.memory, "pods": "20"}
        body = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": self.name, "labels": {"kubernetes.io/hostname": self.name}},
        }
        answer = self.api.post("/api/v1/nodes", json=body)
        if answer.status_code not in (201, 409):
            answer.raise_for_status()
        status = {
            "status": {
                "capacity": resources,
                "allocatable": resources,
                "conditions": [
                    {
                        "type": "Ready",
                        "status": "True",
                        "reason": "KubeletReady",
                        "message": "test node agent (Docker)",
                        "lastHeartbeatTime": now(),
                        "lastTransitionTime": now(),
                    }
                ],
            }
        }
        self._merge(f"/api/v1/nodes/{self.name}/status", status).raise_for_status()
        # The admission plugin TaintNodesByCondition made the node not-ready; nothing here runs
        # the node-lifecycle controller that would lift that taint.
        for _ in range(20):
            node = self.api.get(f"/api/v1/nodes/{self.name}").json()
            taints = node["spec"].get("taints") or []
            kept = [t for t in taints if not t["key"].startswith("node.kubernetes.io/")]
            if kept == taints:
                break
            node["spec"]["taints"] = kept
            if self.api.put(f"/api/v1/nodes/{self.name}", json=node).status_code == 200:
                break
        log.info("node %s registered (cpu %s, memory %s)", self.name, self.cpu, self.memory)

    def _merge(self, path: str, body: dict[str, Any]) -> httpx.Response:
        return self.api.patch(
            path,
            content=json.dumps(body),
            headers={"Content-Type": "application/merge-patch+json"},
        )

    # ---- watching the pods bound here --------------------------------------------------------
    def run(self) -> None:
        version = ""
        while not self.closed.is_set():
            try:
                if not version:
                    version = self._list()
                for event in self._watch(version):
                    pod = event["object"]
                    version = pod["metadata"].get("resourceVersion", version)
                    if event["type"] in ("ADDED", "MODIFIED"):
                        self._changed(pod)
                    elif event["type"] == "DELETED":
                        self._gone(pod)
            except _Gone:
                version = ""
            except (httpx.HTTPError, KeyError, ValueError) as exc:
                if not self.closed.is_set():
                    log.info("pod watch: %s; again", exc)
                    self.closed.wait(1.0)

    def _list(self) -> str:
        answer = self.api.get(
            "/api/v1/pods", params={"fieldSelector": f"spec.nodeName={self.name}"}
        )
        answer.raise_for_status()
        pods = answer.json()
        for pod in pods["items"]:
            self._changed(pod)
        return str(pods["metadata"]["resourceVersion"])

    def _watch(self, version: str) -> Iterator[dict[str, Any]]:
        params = {
            "fieldSelector": f"spec.nodeName={self.name}",
            "watch": "true",
            "resourceVersion": version,
            "timeoutSeconds": "120",
        }
        with self.api.stream("GET", "/api/v1/pods", params=params) as answer:
            if answer.status_code == 410:
                raise _Gone()
            answer.raise_for_status()
            for line in answer.iter_lines():
                if not line.strip():
                    continue
                event = json.loads(line)
                if event["type"] == "ERROR":
                    raise _Gone()
                yield event

    def _changed(self, pod: dict[str, Any]) -> None:
        uid = pod["metadata"]["uid"]
        with self.lock:
            state = self.pods.get(uid)
            if pod["metadata"].get("deletionTimestamp"):
                if state != "stopping":
                    self.pods[uid] = "stopping"
                    threading.Thread(target=self._delete, args=(pod,), daemon=True).start()
                return
            if state is None and pod["status"].get("phase") in (None, "Pending"):
                self.pods[uid] = "starting"
                threading.Thread(target=self._run_pod, args=(pod,), daemon=True).start()

    def _gone(self, pod: dict[str, Any]) -> None:
        """Deleted at once (grace 0): its container goes too, with no grace."""
        uid = pod["metadata"]["uid"]
        with self.lock:
            state = self.pods.get(uid)
            self.pods[uid] = "done"
        if state in ("starting", "running", "stopping"):
            threading.Thread(target=self._remove, args=(uid,), daemon=True).start()

    # ---- one pod ---------------------------------------------------------------------------
    def _status_path(self, pod: dict[str, Any]) -> str:
        meta = pod["metadata"]
        return f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}/status"

    def _report(
        self, pod: dict[str, Any], phase: str, state: dict[str, Any], ready: bool = False
    ) -> None:
        container = pod["spec"]["containers"][0]
        status: dict[str, Any] = {
            "phase": phase,
            "hostIP": "127.0.0.1",
            "conditions": [
                {"type": "PodScheduled", "status": "True"},
                {"type": "Initialized", "status": "True"},
                {"type": "ContainersReady", "status": str(ready)},
                {"type": "Ready", "status": str(ready)},
            ],
            "containerStatuses": [
                {
                    "name": container["name"],
                    "image": container["image"],
                    "imageID": "",
                    "ready": ready,
                    "restartCount": 0,
                    "started": "running" in state,
                    "state": state,
                }
            ],
        }
        if phase != "Pending":
            status["startTime"] = pod["status"].get("startTime") or now()
        answer = self._merge(self._status_path(pod), {"status": status})
        if answer.status_code not in (200, 404):
            log.warning("status of %s: %s", pod["metadata"]["name"], answer.text[:300])

    def _env(self, pod: dict[str, Any], container: dict[str, Any]) -> dict[str, str] | None:
        """The container's environment, secretKeyRefs read from the API (None: a Secret is
        still missing after a while, reported as CreateContainerConfigError)."""
        namespace = pod["metadata"]["namespace"]
        env: dict[str, str] = {}
        for item in container.get("env") or ():
            ref = (item.get("valueFrom") or {}).get("secretKeyRef")
            if ref is None:
                env[item["name"]] = item.get("value", "")
                continue
            for _ in range(60):
                answer = self.api.get(f"/api/v1/namespaces/{namespace}/secrets/{ref['name']}")
                if answer.status_code == 200:
                    data = answer.json().get("data") or {}
                    env[item["name"]] = base64.b64decode(data.get(ref["key"], "")).decode()
                    break
                time.sleep(0.25)
            else:
                message = f'secret "{ref["name"]}" not found'
                self._report(
                    pod,
                    "Pending",
                    {"waiting": {"reason": "CreateContainerConfigError", "message": message}},
                )
                return None
        return env

    def _pullable(self, pod: dict[str, Any], image: str) -> bool:
        try:
            self.engine.images.get(image)
            return True
        except derr.ImageNotFound:
            message = f'failed to pull image "{image}": not found (this node pulls nothing)'
            self._report(
                pod, "Pending", {"waiting": {"reason": "ErrImagePull", "message": message}}
            )
            self.closed.wait(1.0)
            back_off = f'Back-off pulling image "{image}"'
            waiting = {"reason": "ImagePullBackOff", "message": back_off}
            self._report(pod, "Pending", {"waiting": waiting})
            return False

    def _empty_dirs(self, pod: dict[str, Any]) -> dict[str, str]:
        """The pod's emptyDir volumes as fresh host directories (name -> path)."""
        uid = pod["metadata"]["uid"]
        made: dict[str, str] = {}
        for volume in pod["spec"].get("volumes") or ():
            if "emptyDir" in volume:
                path = tempfile.mkdtemp(prefix=f"hodei-k8s-{uid[:8]}-{volume['name']}-")
                os.chmod(path, 0o777)
                made[volume["name"]] = path
        with self.lock:
            self.dirs[uid] = list(made.values())
        return made

    @staticmethod
    def _binds(container: dict[str, Any], dirs: dict[str, str]) -> dict[str, dict[str, str]]:
        return {
            dirs[m["name"]]: {"bind": m["mountPath"], "mode": "ro" if m.get("readOnly") else "rw"}
            for m in container.get("volumeMounts") or ()
            if m["name"] in dirs
        }

    def _init(self, pod: dict[str, Any], dirs: dict[str, str]) -> bool:
        """Run the pod's init containers in order; False (the pod failed) if one fails."""
        uid = pod["metadata"]["uid"]
        for init in pod["spec"].get("initContainers") or ():
            if not self._pullable(pod, init["image"]):
                return False
            try:
                self.engine.containers.run(
                    init["image"],
                    entrypoint=init.get("command") or None,
                    command=init.get("args") or None,
                    volumes=self._binds(init, dirs),
                    network_mode="host",
                    labels={NODE_LABEL: self.name, POD_LABEL: uid},
                    remove=True,
                )
            except derr.ContainerError as exc:
                message = f"init container {init['name']} exited with {exc.exit_status}"
                failed = {"exitCode": exc.exit_status, "reason": "Init:Error", "message": message}
                self._report(pod, "Failed", {"terminated": failed})
                return False
        return True

    def _run_pod(self, pod: dict[str, Any]) -> None:
        uid = pod["metadata"]["uid"]
        container = pod["spec"]["containers"][0]
        image = container["image"]
        if not self._pullable(pod, image):
            return
        env = self._env(pod, container)
        if env is None:
            return
        dirs = self._empty_dirs(pod)
        if not self._init(pod, dirs):
            return
        limits = (container.get("resources") or {}).get("limits") or {}
        options: dict[str, Any] = {}
        if "memory" in limits:
            options["mem_limit"] = options["memswap_limit"] = parse_memory(limits["memory"])
        if "cpu" in limits:
            options["nano_cpus"] = round(parse_cpu(limits["cpu"]) * 1e9)
        meta = pod["metadata"]
        with self.lock:
            if self.pods.get(uid) != "starting":
                return  # deleted meanwhile
            made = self.engine.containers.create(
                image,
                entrypoint=container.get("command") or None,
                command=container.get("args") or None,
                environment=env,
                network_mode="host",
                init=True,
                name=f"k8s-{meta['namespace']}-{meta['name']}-{uid[:8]}",
                labels={NODE_LABEL: self.name, POD_LABEL: uid},
                volumes=self._binds(container, dirs),
                **options,
            )
            self.pods[uid] = "running"
        made.start()
        self._report(pod, "Running", {"running": {"startedAt": now()}}, ready=True)
        log.info("pod %s/%s runs as container %s", meta["namespace"], meta["name"], made.id[:12])
        code = int(made.wait().get("StatusCode", -1))
        try:
            made.reload()
            oom = bool(made.attrs["State"].get("OOMKilled"))
        except derr.NotFound:  # removed by a deletion meanwhile
            oom = False
        with self.lock:
            stopping = self.pods.get(uid) in ("stopping", "done")
        if not stopping:
            reason = "OOMKilled" if oom else ("Completed" if code == 0 else "Error")
            terminated = {"exitCode": code, "reason": reason, "finishedAt": now()}
            self._report(pod, "Succeeded" if code == 0 else "Failed", {"terminated": terminated})
        self._remove(uid)

    def _remove(self, uid: str) -> None:
        with self.lock:
            dirs = self.dirs.pop(uid, [])
        for path in dirs:
            shutil.rmtree(path, ignore_errors=True)
        for container in self.engine.containers.list(
            all=True, filters={"label": f"{POD_LABEL}={uid}"}
        ):
            with contextlib.suppress(derr.APIError):  # gone, or being removed already
                container.remove(force=True)

    def _delete(self, pod: dict[str, Any]) -> None:
        """A pod being deleted: stop its container within its grace, then confirm."""
        uid = pod["metadata"]["uid"]
        grace = int(pod["metadata"].get("deletionGracePeriodSeconds") or 0)
        for container in self.engine.containers.list(filters={"label": f"{POD_LABEL}={uid}"}):
            with contextlib.suppress(derr.APIError):
                container.stop(timeout=grace)
        self._remove(uid)
        meta = pod["metadata"]
        path = f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}"
        body = {"gracePeriodSeconds": 0, "preconditions": {"uid": uid}}
        self.api.request("DELETE", path, json=body)
        with self.lock:
            self.pods[uid] = "done"

    def close(self) -> None:
        self.closed.set()
        for container in self.engine.containers.list(
            all=True, filters={"label": f"{NODE_LABEL}={self.name}"}
        ):
            with contextlib.suppress(derr.NotFound):
                container.remove(force=True)


class _Gone(Exception):
    """The watch's resourceVersion is too old: list again."""


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("kubeconfig")
    parser.add_argument("node")
    parser.add_argument("--cpu", default="2")
    parser.add_argument("--memory", default="4Gi")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="k8s-node %(levelname)s %(message)s")
    node = Node(args.kubeconfig, args.node, args.cpu, args.memory)
    node.register()
    signal.signal(signal.SIGTERM, lambda *_: node.closed.set())
    watcher = threading.Thread(target=node.run, daemon=True)
    watcher.start()
    print("node ready", flush=True)
    node.closed.wait()
    node.close()


if __name__ == "__main__":
    main()
