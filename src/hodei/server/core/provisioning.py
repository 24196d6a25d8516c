"""Provisioning: asks the provider for workers when jobs wait for capacity, stops idle ones
after a grace period, and tracks launches that never registered.

Workers are keyed by image: a job that names one waits for a worker started in that image
(the provider injects the agent into it), and the workers being started are counted per
image. An image the provider cannot get at all fails the jobs waiting for it (an
`ImageUnavailable` event, which the scheduler acts on) without backing off the others."""

from __future__ import annotations

import asyncio
import logging
import math
import secrets
import time
from collections.abc import Collection
from dataclasses import dataclass, field

from hodei.domain.jobs import Job, JobSpec
from hodei.domain.scheduling import labels_fit, size_fits
from hodei.errors import ImageUnavailable
from hodei.ports import WorkerLaunch, WorkerProvider
from hodei.server.core.background import Background
from hodei.server.core.bus import EventBus, ProvisioningFailed, WorkerProvisioned
from hodei.server.core.bus import ImageUnavailable as ImageUnavailableEvent
from hodei.server.core.passes import PassSignal
from hodei.server.core.tracing import NO_TRACING, Tracing
from hodei.server.core.workers import WorkerRegistry
from hodei.server.security.otp import OtpRegistry

log = logging.getLogger(__name__)

REGISTER_DEADLINE_S = 60.0  # a launched worker that has not registered by then is given up
# Why a launch came to nothing (the metrics' bounded reason label).
FAILURE_REASONS = ("start_failed", "image_unavailable", "exited_early", "register_timeout")


@dataclass(slots=True)
class Launch:
    worker_id: str
    image: str | None = None
    started: float = field(default_factory=time.monotonic)
    taken: tuple[tuple[str, str], ...] = ()  # the job labels it was started with


class Provisioner:
    def __init__(
        self,
        provider: WorkerProvider,
        otps: OtpRegistry,
        registry: WorkerRegistry,
        bus: EventBus,
        server_url: str,
        max_workers: int,
        slots: int,
        idle_s: float,
        otp_ttl_s: float = 600.0,
        labels: dict[str, str] | None = None,
        max_cpus: float = 0.0,
        max_memory: int = 0,
        agent_env: dict[str, str] | None = None,
        passes: PassSignal | None = None,
        label_keys: Collection[str] = (),
        tracing: Tracing = NO_TRACING,
    ) -> None:
        self.provider = provider
        self.tracing = tracing  # a provision span in the trace of the job a worker is started for
        self.otps = otps
        self.registry = registry
        self.bus = bus
        self.server_url = server_url
        self.max_workers = max_workers
        self.slots = slots
        self.idle_s = idle_s
        self.otp_ttl_s = otp_ttl_s
        self.labels = dict(labels or {})
        # What agents need besides the OTP (with --tls: the CA to trust and where to enroll).
        self.agent_env = dict(agent_env or {})
        self.max_cpus = max_cpus  # the largest worker the provider can make (0 = unknown)
        self.max_memory = max_memory
        self.launching: dict[str, Launch] = {}
        self.owned: set[str] = set()  # launched by us and still alive
        self.last_error = ""
        self._background = Background()
        self._reaper: asyncio.Task[None] | None = None
        self._backoff_until = 0.0
        self._failures = 0
        # Kicked when a start fails (the waiting jobs' reason then says why) and when its
        # backoff ends (they are provisioned again): nothing else would pass for them.
        self.passes = passes
        # Job label keys the provider places a worker by (Kubernetes: a node selector): a job
        # with such a label gets a worker started with it.
        self.label_keys = frozenset(label_keys)
        self._retry: asyncio.TimerHandle | None = None

    def ceiling(self, spec: JobSpec) -> str | None:
        """Why no worker this provider can start would ever take `spec`; None when one would."""
        if self.max_workers <= 0:
            return "provisioning is off (max workers 0)"
        if spec.image is not None and not self.provider.runs_images:
            return f"image {spec.image}: the {self.provider.name} provider runs no container images"
        # Judged as a connected worker of the largest size it can make, so both read alike.
        labels = self.worker_labels(spec.labels)
        return size_fits(spec, labels, self.max_cpus, self.max_memory)

    # ---- demand -----------------------------------------------------------------------------
    def can_grow(self) -> bool:
        """Whether demand() could start a worker now. The scheduler asks first so that, with
        the cap reached (the usual state under load), it never lists the waiting jobs."""
        return self.max_workers > len(self.owned) and time.monotonic() >= self._backoff_until

    def fits(self, labels: dict[str, str], image: str | None) -> bool:
        """Whether this provider can start workers that carry `labels` and run `image`."""
        if image is not None and not self.provider.runs_images:
            return False
        return labels_fit(labels, self.worker_labels(labels)) is None

    def worker_labels(self, job_labels: dict[str, str]) -> dict[str, str]:
        """The labels of a worker started for a job with `job_labels`: the provider's own,
        plus the job's of the keys it places workers by."""
        if not self.label_keys:
            return self.labels
        taken = {k: v for k, v in job_labels.items() if k in self.label_keys}
        return {**self.labels, **taken} if taken else self.labels

    def _taken(self, job_labels: dict[str, str]) -> tuple[tuple[str, str], ...]:
        return tuple(sorted((k, v) for k, v in job_labels.items() if k in self.label_keys))

    def note(self, fitting: int) -> str | None:
        """What demand() would say about `fitting` waiting jobs, without starting anything."""
        if fitting <= 0:
            return None
        wanted = math.ceil(fitting / self.slots) - len(self.launching)
        if wanted <= 0:
            return "a worker is starting"
        if self.max_workers - len(self.owned) <= 0:
            return f"worker cap reached ({self.max_workers} {self.provider.name} workers)"
        if time.monotonic() < self._backoff_until:
            return f"provisioning backing off after an error: {self.last_error}"
        return None

    def demand(self, waiting: list[Job]) -> str | None:
        """Called by the scheduler with the jobs no current worker can take now."""
        # Keyed by image and by the job labels a worker is placed by: each needs workers of its own.
        by_image: dict[tuple[str | None, tuple[tuple[str, str], ...]], list[Job]] = {}
        for job in waiting:
            if self.fits(job.spec.labels, job.spec.image):
                key = (job.spec.image, self._taken(job.spec.labels))
                by_image.setdefault(key, []).append(job)
        if not by_image:
            return None
        why_not = self.note(sum(len(jobs) for jobs in by_image.values()))
        if why_not is not None:
            return why_not
        room = self.max_workers - len(self.owned)
        for key, jobs in by_image.items():  # highest ranked first (dicts keep that order)
            starting = sum(1 for s in self.launching.values() if (s.image, s.taken) == key)
            wanted = min(math.ceil(len(jobs) / self.slots) - starting, room)
            # Each new worker is sized for the next waiting jobs of its image.
            for job in jobs[starting * self.slots :][:: self.slots][: max(wanted, 0)]:
                self._launch(job)
                room -= 1
        return "a worker is starting"

    def _launch(self, job: Job) -> None:
        worker_id = f"{self.provider.name}-{secrets.token_hex(4)}"
        image = job.spec.image
        labels = self.worker_labels(job.spec.labels)
        otp = self.otps.issue(worker_id, self.otp_ttl_s, labels, image=image)
        self.launching[worker_id] = Launch(worker_id, image, taken=self._taken(job.spec.labels))
        self.owned.add(worker_id)
        self.tracing.provisioning(job, worker_id, self.provider.name)
        launch = WorkerLaunch(
            worker_id,
            otp,
            self.server_url,
            dict(labels),
            self.slots,
            cpu=job.spec.cpu,
            memory_bytes=job.spec.memory_bytes,
            env=dict(self.agent_env),
            image=image,
        )
        self._background.spawn(self._provision(launch))

    async def _provision(self, launch: WorkerLaunch) -> None:
        try:
            await self.provider.provision(launch)
        except ImageUnavailable as exc:
            # Not the provider's trouble: other images still start, with no backoff.
            log.error("worker %s: %s", launch.worker_id, exc.message)
            self.launching.pop(launch.worker_id, None)
            self.owned.discard(launch.worker_id)
            self.otps.revoke_worker(launch.worker_id)
            self.tracing.provisioned(launch.worker_id, exc.message)
            self.bus.publish(ProvisioningFailed(self.provider.name, "image_unavailable"))
            self.bus.publish(ImageUnavailableEvent(exc.image, exc.message))
        except Exception as exc:
            log.error("provider %s failed to start a worker: %s", self.provider.name, exc)
            self._failed(launch.worker_id, f"start failed: {exc}", "start_failed")

    def _failed(self, worker_id: str, error: str, reason: str) -> None:
        self.tracing.provisioned(worker_id, error)
        if worker_id in self.launching:
            self.bus.publish(ProvisioningFailed(self.provider.name, reason))
        self.launching.pop(worker_id, None)
        self.owned.discard(worker_id)
        self.otps.revoke_worker(worker_id)
        self.last_error = error
        self._failures += 1
        delay = min(30.0, 0.5 * 2 ** min(self._failures, 6))
        self._backoff_until = time.monotonic() + delay
        if self.passes is not None:
            self.passes.kick()
            if self._retry is not None:
                self._retry.cancel()
            self._retry = asyncio.get_running_loop().call_later(delay, self._backoff_over)

    def _backoff_over(self) -> None:
        """Pass again once the backoff is over. A loop timer may fire a little early (its
        clock is read once per loop turn), and a pass that still finds the backoff on would
        start nothing: then wait out the rest."""
        left = self._backoff_until - time.monotonic()
        if left > 0:
            self._retry = asyncio.get_running_loop().call_later(left + 0.01, self._backoff_over)
            return
        self._retry = None
        if self.passes is not None:
            self.passes.kick()

    # ---- lifecycle events -------------------------------------------------------------------
    def registered(self, worker_id: str) -> None:
        launch = self.launching.pop(worker_id, None)
        if launch is not None:
            self.tracing.provisioned(worker_id)
            seconds = time.monotonic() - launch.started
            self.bus.publish(WorkerProvisioned(self.provider.name, seconds))
            self._failures = 0
            self.last_error = ""

    def adopted(self, worker_id: str) -> None:
        """A worker of an earlier run the provider keeps: one of ours, for the worker cap and
        the idle stop."""
        self.owned.add(worker_id)

    def exited(self, worker_id: str, code: int) -> None:
        """The provider saw a worker process end."""
        if worker_id in self.launching:
            self._failed(
                worker_id, f"worker exited with code {code} before registering", "exited_early"
            )
        self.owned.discard(worker_id)

    # ---- idle scale-down --------------------------------------------------------------------
    def start(self) -> None:
        self._reaper = asyncio.create_task(self._reap_loop(), name="idle-reaper")

    async def _reap_loop(self) -> None:
        while True:
            await asyncio.sleep(min(1.0, self.idle_s / 2 or 1.0))
            self.reap()

    def reap(self) -> None:
        now = time.monotonic()
        for session in self.registry.sessions():
            idle = not session.jobs and now - session.last_busy > self.idle_s
            if session.id in self.owned and idle and session.view.accepting:
                log.info("stopping idle worker %s", session.id)
                session.shut_down("idle", grace_ms=0)
                self._background.spawn(self._terminate_later(session.id, 5.0))
        for launch in list(self.launching.values()):
            if time.monotonic() - launch.started > REGISTER_DEADLINE_S:
                self._failed(
                    launch.worker_id, "worker did not register in time", "register_timeout"
                )
                self._background.spawn(self.provider.terminate(launch.worker_id))

    async def _terminate_later(self, worker_id: str, delay: float) -> None:
        await asyncio.sleep(delay)
        await self.provider.terminate(worker_id)

    async def stop(self) -> None:
        if self._reaper:
            self._reaper.cancel()
        if self._retry is not None:
            self._retry.cancel()
        await self._background.stop()
        await self.provider.stop()
