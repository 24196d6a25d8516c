"""Docker workers in a job's own image: the agent executable injected, the image untouched.

The worker image carries the agent as a self-contained executable directory
(scripts/build_agent_binary.sh) at `WORKER_AGENT_DIR`. The provider copies it once into a
named volume keyed by the worker image's id, and mounts that volume read-only at `AGENT_DIR` in
each container it starts from a job's image, with the executable's own loader as the entry
point: no Python, shell or C library of the image is needed, nothing is written into the image,
and a job cannot change the agent the next job gets (a fresh container per worker, the mount
read-only). A tmpfs at `TMP_DIR` gives the agent, and the job, a writable temp directory even
in an image without /tmp or as a user who may write nowhere else.
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from docker import errors as derr

from hodei.agent_bundle import command_in
from hodei.errors import ImageUnavailable, ProviderError

log = logging.getLogger(__name__)

WORKER_AGENT_DIR = "/opt/hodei/agent"  # in the worker image
AGENT_DIR = "/.hodei/agent"  # in a job's container, read-only
TMP_DIR = "/.hodei/tmp"  # in a job's container: writable by any user, exec allowed
AGENT_COMMAND = command_in(AGENT_DIR)
LABEL_IMAGE = "io.hodei.image"
LABEL_AGENT_VOLUME = "io.hodei.agent-volume"
_COMPLETE = ".complete"  # written last: a volume without it is filled again

Client = Any  # docker.DockerClient


def job_image_spec(spec: dict[str, Any], image: str, volume: str, user: str = "") -> dict[str, Any]:
    """A worker container's `containers.create` arguments (`spec`), changed to start in the
    job's `image` with the agent from `volume`; `user` overrides the image's own user."""
    changed = dict(spec)
    changed["image"] = image
    changed["entrypoint"] = list(AGENT_COMMAND)
    changed["environment"] = {
        **spec["environment"],
        "HODEI_WORKER_IMAGE": image,  # told to the server on registration (and re-registration)
        "TMPDIR": TMP_DIR,
    }
    changed["labels"] = {**spec["labels"], LABEL_IMAGE: image}
    changed["volumes"] = {**spec["volumes"], volume: {"bind": AGENT_DIR, "mode": "ro"}}
    changed["tmpfs"] = {TMP_DIR: "rw,exec,nosuid,nodev,mode=1777"}
    if user:
        changed["user"] = user
    return changed


class AgentVolume:
    """The named volume holding the agent executable of the current worker image, filled from
    that image on first use (blocking calls: run them in a thread)."""

    def __init__(self, worker_image: str) -> None:
        self.worker_image = worker_image
        self._lock = threading.Lock()
        self._ready: str | None = None

    def ensure(self, client: Client) -> str:
        """The volume's name, filled and complete; ProviderError saying what to do if not."""
        with self._lock:
            if self._ready is None:
                self._ready = self._fill(client)
            return self._ready

    def _fill(self, client: Client) -> str:
        try:
            image = client.images.get(self.worker_image)
        except derr.ImageNotFound:
            raise ProviderError(
                f"jobs in their own image need the worker image {self.worker_image}, which "
                "carries the agent executable, on the Docker engine: build it with "
                "scripts/build_worker_image.sh"
            ) from None
        name = "hodei-agent-" + str(image.id).rpartition(":")[2][:16]
        try:
            client.volumes.get(name)
        except derr.NotFound:
            client.volumes.create(name, labels={LABEL_AGENT_VOLUME: self.worker_image})
        # Cheap when it is full already (the test); a copy cut short is done again.
        script = (
            f"test -e /dst/{_COMPLETE} && exit 0; test -d {WORKER_AGENT_DIR} || exit 3; "
            f"rm -rf /dst/hodei-agent /dst/_internal /dst/glibc && "
            f"cp -a {WORKER_AGENT_DIR}/. /dst/ && touch /dst/{_COMPLETE}"
        )
        try:
            client.containers.run(
                self.worker_image,
                ["-c", script],
                entrypoint=["/bin/sh"],
                user="0",
                network_mode="none",
                volumes={name: {"bind": "/dst", "mode": "rw"}},
                remove=True,
                stdout=True,
                stderr=True,
            )
        except derr.ContainerError as exc:
            missing = exc.exit_status == 3
            raise ProviderError(
                f"the worker image {self.worker_image} carries no agent executable at "
                f"{WORKER_AGENT_DIR}; rebuild it with scripts/build_worker_image.sh"
                if missing
                else f"cannot copy the agent executable out of {self.worker_image}: {exc}"
            ) from None
        log.info("agent executable of %s ready in volume %s", self.worker_image, name)
        return name


def pull_job_image(client: Client, image: str) -> None:
    """Pull a job's image that is not on the engine; ImageUnavailable with the engine's words
    when that fails (the jobs that want it fail: no retry would do better)."""
    log.info("pulling job image %s", image)
    try:
        client.images.pull(image)
    except derr.APIError as exc:
        raise ImageUnavailable(
            image,
            f"image {image} is not on the Docker engine and cannot be pulled: "
            f"{exc.explanation or exc}",
        ) from None
