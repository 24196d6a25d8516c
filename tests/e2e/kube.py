"""Helpers of the Kubernetes end-to-end tests: the test cluster of .ci/services/kubernetes.sh
(an admin kubeconfig in HODEI_TEST_K8S_KUBECONFIG, its directory in HODEI_TEST_K8S_DIR), a
namespace with the Role of examples/kubernetes/hodei.yaml bound to a service account, that
account's token in a kubeconfig of its own, the test node agent, and an API server a test
may start (and restart) itself against the same etcd."""

from __future__ import annotations

import base64
import os
import secrets
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

ROOT = Path(__file__).resolve().parents[2]
MANIFEST = ROOT / "examples" / "kubernetes" / "hodei.yaml"
NODE_AGENT = ROOT / "tests" / "k8s_node" / "node_agent.py"
CLUSTER_DIR = Path(os.environ.get("HODEI_TEST_K8S_DIR", "/var/lib/hodei-ci-kubernetes"))
ADMIN_KUBECONFIG = Path(
    os.environ.get("HODEI_TEST_K8S_KUBECONFIG", str(CLUSTER_DIR / "admin.kubeconfig"))
)
SERVER_LABEL = "io.hodei/server"
WORKER_LABEL = "io.hodei/worker-id"


def wait_for(what: str, check: Callable[[], Any], timeout: float) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, f"{what}: not within {timeout}s"
        time.sleep(0.2)
    return value


@dataclass(frozen=True, slots=True)
class Cluster:
    server: str  # https://127.0.0.1:port
    ca_pem: str
    admin_token: str

    def client(self, server: str = "", token: str = "") -> httpx.Client:
        context = ssl.create_default_context(cadata=self.ca_pem)
        return httpx.Client(
            base_url=server or self.server,
            verify=context,
            headers={"Authorization": f"Bearer {token or self.admin_token}"},
            timeout=30,
        )

    def kubeconfig(self, path: Path, token: str, namespace: str, server: str = "") -> Path:
        ca = base64.b64encode(self.ca_pem.encode()).decode()
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [
                {
                    "name": "test",
                    "cluster": {"server": server or self.server, "certificate-authority-data": ca},
                }
            ],
            "users": [{"name": "test", "user": {"token": token}}],
            "contexts": [
                {
                    "name": "test",
                    "context": {"cluster": "test", "user": "test", "namespace": namespace},
                }
            ],
            "current-context": "test",
        }
        path.write_text(yaml.safe_dump(config))
        path.chmod(0o600)
        return path


def load_cluster() -> tuple[Cluster | None, str]:
    """The test cluster, or None and why not."""
    if not ADMIN_KUBECONFIG.exists():
        return None, f"no admin kubeconfig at {ADMIN_KUBECONFIG} (run .ci/services/kubernetes.sh)"
    config = yaml.safe_load(ADMIN_KUBECONFIG.read_text())
    cluster = config["clusters"][0]["cluster"]
    ca = base64.b64decode(cluster["certificate-authority-data"]).decode()
    found = Cluster(cluster["server"], ca, config["users"][0]["user"]["token"])
    try:
        with found.client() as client:
            ready = client.get("/readyz")
    except httpx.HTTPError as exc:
        return None, f"the API server at {found.server} does not answer: {exc}"
    if ready.status_code != 200:
        return None, f"the API server at {found.server} is not ready: {ready.text[:200]}"
    return found, ""


def manifest_objects(kinds: set[str]) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(MANIFEST.read_text()) if d and d["kind"] in kinds]


def created(answer: httpx.Response) -> None:
    assert answer.status_code in (200, 201, 409), answer.text


def make_namespace(
    cluster: Cluster, name: str, role_rules: list[dict[str, Any]] | None = None
) -> str:
    """Namespace `name` with the manifest's ServiceAccount, Role (or `role_rules` instead of
    its rules) and RoleBinding; returns a token of that service account."""
    with cluster.client() as client:
        namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
        created(client.post("/api/v1/namespaces", json=namespace))
        account = ""
        for obj in manifest_objects({"ServiceAccount", "Role", "RoleBinding"}):
            obj["metadata"]["namespace"] = name
            kind = obj["kind"]
            if kind == "ServiceAccount":
                account = obj["metadata"]["name"]
                path = f"/api/v1/namespaces/{name}/serviceaccounts"
            else:
                path = f"/apis/rbac.authorization.k8s.io/v1/namespaces/{name}/{kind.lower()}s"
            if kind == "Role" and role_rules is not None:
                obj["rules"] = role_rules
            if kind == "RoleBinding":
                for subject in obj["subjects"]:
                    subject["namespace"] = name
            created(client.post(path, json=obj))
        request = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}}
        path = f"/api/v1/namespaces/{name}/serviceaccounts/{account}/token"
        answer = client.post(path, json=request)
        assert answer.status_code == 201, answer.text
        token: str = answer.json()["status"]["token"]
        # The namespace's default service account (worker pods run as it) comes from the
        # controller manager: wait for it, or pod creation is refused.
        wait_for(
            "the default service account",
            lambda: (
                client.get(f"/api/v1/namespaces/{name}/serviceaccounts/default").status_code == 200
            ),
            60,
        )
    return token


def delete_namespace(cluster: Cluster, name: str) -> None:
    with cluster.client() as client:
        client.delete(f"/api/v1/namespaces/{name}")


def server_id(home: Path) -> str:
    path = home / "server-id"
    return path.read_text().strip() if path.exists() else "none"


def ours(cluster: Cluster, namespace: str, home: Path, resource: str) -> list[dict[str, Any]]:
    """This home's server's pods or secrets (deleting ones included)."""
    with cluster.client() as client:
        answer = client.get(
            f"/api/v1/namespaces/{namespace}/{resource}",
            params={"labelSelector": f"{SERVER_LABEL}={server_id(home)}"},
        )
    answer.raise_for_status()
    items: list[dict[str, Any]] = answer.json()["items"]
    return items


class NodeAgent:
    """tests/k8s_node/node_agent.py as a process of ours."""

    def __init__(self, name: str, log: Path) -> None:
        self.name = name
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        out = self.log.open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, str(NODE_AGENT), str(ADMIN_KUBECONFIG), self.name],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=out,
        )
        wait_for(
            "the test node", lambda: b"node ready" in self.log.read_bytes() or self._dead(), 60
        )
        assert self.proc.poll() is None, self.log.read_text()[-3000:]

    def _dead(self) -> bool:
        return self.proc is not None and self.proc.poll() is not None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class ApiServer:
    """A kube-apiserver of ours against the test cluster's etcd, on a port of its own, with
    the CI one's flags ($HODEI_TEST_K8S_DIR/apiserver.args): stopped and started by pid."""

    def __init__(self, cluster: Cluster, log: Path) -> None:
        self.cluster = cluster
        self.log = log
        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        self.proc: subprocess.Popen[bytes] | None = None
        args = (CLUSTER_DIR / "apiserver.args").read_text().split("\n")
        binary = Path((CLUSTER_DIR / "bin-dir").read_text().strip()) / "kube-apiserver"
        self.argv = [str(binary)] + [
            f"--secure-port={self.port}" if a.startswith("--secure-port=") else a for a in args if a
        ]

    @staticmethod
    def available() -> str:
        """Why a test cannot start one ('' when it can)."""
        for name in ("apiserver.args", "bin-dir"):
            if not (CLUSTER_DIR / name).exists():
                return f"{CLUSTER_DIR / name} is missing (run .ci/services/kubernetes.sh)"
        return ""

    def ready(self) -> bool:
        try:
            with self.cluster.client(self.url) as client:
                return client.get("/readyz").status_code == 200
        except httpx.HTTPError:
            return False

    def start(self) -> None:
        out = self.log.open("ab")
        proc = self.proc = subprocess.Popen(
            self.argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out
        )
        wait_for("our API server", lambda: self.ready() or proc.poll() is not None, 90)
        assert proc.poll() is None, self.log.read_text()[-3000:]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"
