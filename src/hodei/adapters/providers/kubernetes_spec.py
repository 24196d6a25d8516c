"""The Kubernetes provider's pure part: the objects it creates (a worker's pod and the Secret
holding its OTP) and what a pod's status says (started, why it cannot start, why it ended).

Everything here works on plain dicts, the API's own JSON, and reads only fields that exist
from Kubernetes 1.20 on and that later versions keep (`status.phase`, `status.reason`,
`status.conditions`, `status.containerStatuses[].state`), so no client model and no newer
field is needed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from hodei.agent_bundle import command_in
from hodei.ports import WorkerLaunch

LABEL_MANAGED = "io.hodei/managed"
LABEL_SERVER = "io.hodei/server"
LABEL_WORKER = "io.hodei/worker-id"
AGENT_CONTAINER = "agent"
SECRET_KEY = "token"  # the Secret's key holding the OTP
AGENT_ENTRYPOINT = ("hodei", "agent")
MIN_MEMORY = 64 << 20  # the agent itself lives inside the pod's memory limit
PULL_FAILURES = ("ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull")
CREATE_FAILURES = ("CreateContainerConfigError", "CreateContainerError", "RunContainerError")
PULL_POLICIES = ("Always", "IfNotPresent", "Never")
TOLERATION_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")

Pod = Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Toleration:
    key: str
    value: str = ""  # empty: operator Exists
    effect: str = ""  # empty: every effect

    def spec(self) -> dict[str, str]:
        out = {"key": self.key, "operator": "Equal" if self.value else "Exists"}
        if self.value:
            out["value"] = self.value
        if self.effect:
            out["effect"] = self.effect
        return out


def parse_toleration(text: str) -> Toleration:
    """'key[=value][:Effect]' -> Toleration (ValueError with the accepted forms)."""
    rest, _, effect = text.partition(":")
    key, _, value = rest.partition("=")
    if not key.strip() or (effect and effect not in TOLERATION_EFFECTS):
        raise ValueError(
            f"invalid toleration {text!r}: use KEY[=VALUE][:EFFECT], EFFECT one of "
            f"{', '.join(TOLERATION_EFFECTS)}"
        )
    return Toleration(key.strip(), value.strip(), effect)


def parse_pair(text: str, what: str) -> tuple[str, str]:
    """'key=value' -> (key, value) (ValueError naming `what`)."""
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise ValueError(f"invalid {what} {text!r}: use KEY=VALUE")
    return key.strip(), value.strip()


@dataclass(frozen=True, slots=True)
class KubernetesOptions:
    namespace: str = "default"
    image: str = "hodei-worker:latest"
    server_url: str = ""  # the gRPC address pods dial; empty: the one the server gives
    service_account: str = ""  # empty: the namespace's default
    automount_token: bool = False  # give the worker pod its service account's API token
    image_pull_policy: str = "IfNotPresent"
    image_pull_secrets: tuple[str, ...] = ()
    node_selector: tuple[tuple[str, str], ...] = ()  # node label -> value, for every pod
    # label key -> node label key: a worker started with label k=v (the provisioner gives a
    # job's label k=v to the worker it starts for it) gets the node selector node_label=v
    label_node_selectors: tuple[tuple[str, str], ...] = ()
    tolerations: tuple[Toleration, ...] = ()
    labels: tuple[tuple[str, str], ...] = ()  # extra pod labels
    annotations: tuple[tuple[str, str], ...] = ()
    cpu_per_slot: float = 0.0  # a worker's cpu when its job asks none, per slot (0: none)
    memory_per_slot: int = 0  # likewise, bytes
    entrypoint: tuple[str, ...] = AGENT_ENTRYPOINT
    stop_grace_s: float = 10.0  # SIGTERM to the agent, then SIGKILL (the pod's grace)
    start_timeout_s: float = 50.0  # a pod not running by then is deleted (a failed start)


def pod_name(worker_id: str) -> str:
    return f"hodei-{worker_id}"


def secret_name(worker_id: str) -> str:
    return f"hodei-{worker_id}-otp"


def cpu_quantity(cpu: float) -> str:
    return f"{max(1, round(cpu * 1000))}m"


def ours_selector(server_id: str) -> str:
    """The label selector that finds this server's pods and Secrets."""
    return f"{LABEL_SERVER}={server_id}"


def identity_labels(server_id: str, worker_id: str) -> dict[str, str]:
    return {LABEL_MANAGED: "true", LABEL_SERVER: server_id, LABEL_WORKER: worker_id}


def node_selector(options: KubernetesOptions, labels: Mapping[str, str]) -> dict[str, str]:
    selector = dict(options.node_selector)
    for label, node_label in options.label_node_selectors:
        if label in labels:
            selector[node_label] = labels[label]
    return selector


def resources(options: KubernetesOptions, launch: WorkerLaunch) -> dict[str, dict[str, str]]:
    """Requests and limits (equal): the job's own, else the per-slot defaults x slots."""
    cpu = launch.cpu or options.cpu_per_slot * launch.slots
    memory = launch.memory_bytes or options.memory_per_slot * launch.slots
    amounts: dict[str, str] = {}
    if cpu > 0:
        amounts["cpu"] = cpu_quantity(cpu)
    if memory > 0:
        amounts["memory"] = str(max(memory, MIN_MEMORY))
    return {"requests": dict(amounts), "limits": dict(amounts)} if amounts else {}


def agent_container(options: KubernetesOptions, launch: WorkerLaunch, image: str) -> dict[str, Any]:
    """The container running the agent. The OTP comes from the pod's Secret (secretKeyRef),
    never as a value in the pod spec."""
    args = ["--slots", str(launch.slots)]
    for key, value in sorted(launch.labels.items()):
        args += ["--label", f"{key}={value}"]
    env: list[dict[str, Any]] = [
        {
            "name": "HODEI_TOKEN",
            "valueFrom": {
                "secretKeyRef": {"name": secret_name(launch.worker_id), "key": SECRET_KEY}
            },
        },
        {"name": "HODEI_SERVER_URL", "value": options.server_url or launch.server_url},
    ]
    # With --tls: the CA certificate itself and where to enroll (public values).
    env += [
        {"name": k, "value": v}
        for k, v in sorted(launch.env.items())
        if k in ("HODEI_CA_PEM", "HODEI_ENROLL_URL")
    ]
    container: dict[str, Any] = {
        "name": AGENT_CONTAINER,
        "image": image,
        "imagePullPolicy": options.image_pull_policy,
        "command": list(options.entrypoint),
        "args": args,
        "env": env,
        "securityContext": {"allowPrivilegeEscalation": False, "privileged": False},
    }
    amounts = resources(options, launch)
    if amounts:
        container["resources"] = amounts
    return container


# A worker in a job's own image: an init container of the worker image copies the agent
# executable (hodei.agent_bundle) into an emptyDir, which the job image's container mounts
# read-only and starts through the executable's own loader; another emptyDir is its TMPDIR.
AGENT_VOLUME, TMP_VOLUME = "hodei-agent", "hodei-tmp"
AGENT_DIR, TMP_DIR, WORKER_AGENT_DIR = "/.hodei/agent", "/.hodei/tmp", "/opt/hodei/agent"


def inject_agent(options: KubernetesOptions, pod_spec: dict[str, Any], image: str) -> None:
    """Make `pod_spec` (one agent container of the worker image) run in the job's `image`."""
    copy = f"cp -R {WORKER_AGENT_DIR}/. /dst/"  # not -a: the emptyDir is not ours to touch
    pod_spec["initContainers"] = [
        {
            "name": "hodei-agent-copy",
            "image": options.image,
            "imagePullPolicy": options.image_pull_policy,
            "command": ["/bin/sh", "-c", copy],
            "volumeMounts": [{"name": AGENT_VOLUME, "mountPath": "/dst"}],
            "securityContext": {"allowPrivilegeEscalation": False, "privileged": False},
        }
    ]
    pod_spec["volumes"] = [
        {"name": AGENT_VOLUME, "emptyDir": {}},
        {"name": TMP_VOLUME, "emptyDir": {}},
    ]
    container = pod_spec["containers"][0]
    container["image"] = image
    container["command"] = list(command_in(AGENT_DIR))
    container["env"] = [
        *container["env"],
        {"name": "HODEI_WORKER_IMAGE", "value": image},
        {"name": "TMPDIR", "value": TMP_DIR},
    ]
    container["volumeMounts"] = [
        {"name": AGENT_VOLUME, "mountPath": AGENT_DIR, "readOnly": True},
        {"name": TMP_VOLUME, "mountPath": TMP_DIR},
    ]


def pod_manifest(
    options: KubernetesOptions, server_id: str, launch: WorkerLaunch
) -> dict[str, Any]:
    """The pod of one worker: the agent in the worker image, or in the job's image with the
    agent injected (inject_agent)."""
    labels = {**dict(options.labels), **identity_labels(server_id, launch.worker_id)}
    spec: dict[str, Any] = {
        "restartPolicy": "Never",
        "automountServiceAccountToken": options.automount_token,
        "terminationGracePeriodSeconds": max(0, round(options.stop_grace_s)),
        "enableServiceLinks": False,
        "containers": [agent_container(options, launch, options.image)],
    }
    if launch.image is not None:
        inject_agent(options, spec, launch.image)
    if options.service_account:
        spec["serviceAccountName"] = options.service_account
    if options.image_pull_secrets:
        spec["imagePullSecrets"] = [{"name": n} for n in options.image_pull_secrets]
    selector = node_selector(options, launch.labels)
    if selector:
        spec["nodeSelector"] = selector
    if options.tolerations:
        spec["tolerations"] = [t.spec() for t in options.tolerations]
    metadata: dict[str, Any] = {
        "name": pod_name(launch.worker_id),
        "namespace": options.namespace,
        "labels": labels,
    }
    if options.annotations:
        metadata["annotations"] = dict(options.annotations)
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata, "spec": spec}


def secret_manifest(
    options: KubernetesOptions, server_id: str, worker_id: str, otp: str, pod: Pod
) -> dict[str, Any]:
    """The Secret holding a worker's OTP, owned by its pod: deleting the pod (or the
    namespace) lets the garbage collector remove it."""
    metadata = pod.get("metadata") or {}
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "Opaque",
        "metadata": {
            "name": secret_name(worker_id),
            "namespace": options.namespace,
            "labels": identity_labels(server_id, worker_id),
            "ownerReferences": [
                {
                    "apiVersion": "v1",
                    "kind": "Pod",
                    "name": metadata.get("name", pod_name(worker_id)),
                    "uid": metadata.get("uid", ""),
                }
            ],
        },
        "stringData": {SECRET_KEY: otp},
    }


# ---- reading a pod's status ------------------------------------------------------------------
def worker_of(obj: Pod) -> str:
    return str(((obj.get("metadata") or {}).get("labels") or {}).get(LABEL_WORKER, ""))


def _status(pod: Pod) -> Mapping[str, Any]:
    return pod.get("status") or {}


def phase(pod: Pod) -> str:
    return str(_status(pod).get("phase") or "Pending")


def deleting(pod: Pod) -> bool:
    return bool((pod.get("metadata") or {}).get("deletionTimestamp"))


def agent_state(pod: Pod) -> Mapping[str, Any]:
    """The agent container's `state` ({"waiting": ...}, {"running": ...} or
    {"terminated": ...}); empty before the node reports it."""
    for status in _status(pod).get("containerStatuses") or ():
        if status.get("name") == AGENT_CONTAINER:
            return status.get("state") or {}
    return {}


def running(pod: Pod) -> bool:
    return phase(pod) == "Running" and "running" in agent_state(pod)


def finished(pod: Pod) -> bool:
    return phase(pod) in ("Succeeded", "Failed")


def _image(pod: Pod) -> str:
    for container in (pod.get("spec") or {}).get("containers") or ():
        if container.get("name") == AGENT_CONTAINER:
            return str(container.get("image", ""))
    return ""


def _selector_text(pod: Pod) -> str:
    selector = (pod.get("spec") or {}).get("nodeSelector") or {}
    return ", ".join(f"{k}={v}" for k, v in sorted(selector.items()))


def start_problem(pod: Pod) -> str | None:
    """Why this pod will not start its agent, or None while it may still start."""
    if finished(pod):
        return f"its pod ended before its agent started: {end_reason(pod)}"
    for condition in _status(pod).get("conditions") or ():
        if (
            condition.get("type") == "PodScheduled"
            and condition.get("status") == "False"
            and condition.get("reason") == "Unschedulable"
        ):
            why = condition.get("message") or "no node can take it"
            selector = _selector_text(pod)
            if selector:
                why += f" (the pod's node selector: {selector})"
            return f"no node can run its pod: {why}"
    waiting = agent_state(pod).get("waiting") or {}
    reason = str(waiting.get("reason") or "")
    message = str(waiting.get("message") or "").strip()
    detail = f"{reason}: {message}" if message else reason
    if reason in PULL_FAILURES:
        return f"image {_image(pod)} cannot be pulled ({detail})"
    if reason in CREATE_FAILURES:
        return f"its agent container cannot be created ({detail})"
    return None


def cannot_pull(pod: Pod) -> bool:
    """Whether the agent container's image could not be pulled (its last waiting reason)."""
    return str((agent_state(pod).get("waiting") or {}).get("reason") or "") in PULL_FAILURES


def exit_code(pod: Pod) -> int:
    """The agent's exit code once it ended (-1 when the pod says none)."""
    terminated = agent_state(pod).get("terminated") or {}
    try:
        return int(terminated.get("exitCode", -1))
    except (TypeError, ValueError):
        return -1


def end_reason(pod: Pod) -> str:
    """Why a pod ended, in words: eviction, OOMKilled, or the agent's exit code."""
    status = _status(pod)
    if status.get("reason") == "Evicted":
        return f"evicted by its node: {status.get('message') or 'no reason given'}"
    terminated = agent_state(pod).get("terminated") or {}
    reason = str(terminated.get("reason") or "")
    if reason == "OOMKilled":
        return "OOMKilled: the agent's container went over its memory limit"
    if terminated:
        text = f"its agent exited with code {exit_code(pod)}"
        return f"{text} ({reason})" if reason and reason not in ("Completed", "Error") else text
    if status.get("reason"):
        return f"{status.get('reason')}: {status.get('message') or ''}".rstrip(": ")
    return f"its pod is {phase(pod)}"
