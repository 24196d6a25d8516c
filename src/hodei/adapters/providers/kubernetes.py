"""Kubernetes provider: each worker is a pod running `hodei agent`, in one namespace.

The client is kubernetes_asyncio (asyncio throughout: no call blocks the event loop). Pods and
their Secrets carry labels (io.hodei/managed, io.hodei/server = this server's instance id kept
in HODEI_HOME, io.hodei/worker-id), so the server finds its own and only its own.

- The worker's single-use OTP is in a Secret owned by its pod (an ownerReference: the garbage
  collector removes it with the pod), read by the agent through `secretKeyRef`; the Secret is
  deleted once the agent has registered. The pod gets no service account token unless asked.
- Pod states come from one watch on this server's pods, resumed from its resourceVersion and
  listed again on 410 Gone: no polling. `provision()` returns once the agent's container runs;
  a pod that cannot start (unschedulable, its image cannot be pulled, its container cannot be
  made, or not running within the start timeout) is deleted and the start fails with the
  reason, which the provisioner shows and backs off on. A pod that ends (the agent exited,
  OOMKilled, evicted) or is deleted by someone else is reported through `on_exit`.
- `start()` checks the permissions it needs (SelfSubjectAccessReview: a missing verb is named),
  adopts this server's running pods whose agent had registered (their Secret is gone), deletes
  every other pod and Secret of this server, and deletes an adopted pod that has not
  reconnected within the grace period. `stop()` deletes every pod it holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from hodei.adapters.providers.kubernetes_api import KubeApi, KubeError, WatchExpired
from hodei.adapters.providers.kubernetes_spec import (
    KubernetesOptions,
    Pod,
    cannot_pull,
    deleting,
    end_reason,
    exit_code,
    finished,
    ours_selector,
    pod_manifest,
    pod_name,
    running,
    secret_manifest,
    secret_name,
    start_problem,
    worker_of,
)
from hodei.errors import ImageUnavailable, ProviderError
from hodei.ports import WorkerLaunch

log = logging.getLogger(__name__)

ExitHandler = Callable[[str, int, str], None]  # worker id, exit code, why (pod's words)
AdoptHandler = Callable[[str], None]
RETRY_S = (0.5, 1.0, 2.0, 5.0)  # waits between failed watch attempts (then the last, again)


@dataclass(slots=True)
class _Worker:
    started: asyncio.Future[str | None]  # None: the agent runs; else why it cannot start
    secret: bool = True  # its OTP Secret may still exist
    terminated: bool = False  # deleted by us: its end is expected
    ended: bool = False
    last: dict[str, Any] = field(default_factory=dict)


class KubernetesProvider:
    name = "kubernetes"
    runs_images = True  # a job image gets the agent executable from an init container

    def __init__(
        self,
        options: KubernetesOptions,
        api: KubeApi,
        server_id: str,
        on_exit: ExitHandler,
        *,
        grace_s: float = 30.0,
        on_adopt: AdoptHandler | None = None,
    ) -> None:
        self.options = options
        self.api = api
        self.server_id = server_id
        self._on_exit = on_exit
        self._on_adopt = on_adopt
        self._grace_s = grace_s
        self._selector = ours_selector(server_id)
        self._workers: dict[str, _Worker] = {}
        self._adopted: set[str] = set()
        self._grace_timer: asyncio.Task[None] | None = None
        self._watch_task: asyncio.Task[None] | None = None
        self._inflight: set[asyncio.Task[None]] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._closing = False
        self.watch_restarts = 0  # how many times the watch was resumed or listed again

    # ---- start: connect, check permissions, reconcile, watch -----------------------------
    async def start(self) -> None:
        await self.api.open()
        missing = await self.api.missing_permissions()
        if missing:
            await self.api.close()
            wanted = ", ".join(f"'{verb}' on '{resource}'" for verb, resource in missing)
            raise ProviderError(
                f"the kubernetes provider may not do what it needs in namespace "
                f"{self.api.namespace}: its service account lacks {wanted} (the Role in "
                "docs/kubernetes.md grants exactly what is needed)"
            )
        version = await self._reconcile()
        if self._adopted:
            log.info(
                "adopted %d worker pod(s) of an earlier run; they have %.0fs to reconnect",
                len(self._adopted),
                self._grace_s,
            )
            self._grace_timer = asyncio.create_task(self._expire_adopted())
        self._watch_task = asyncio.create_task(self._watch_loop(version), name="k8s-pod-watch")

    async def _reconcile(self) -> str:
        """Adopt this server's running pods whose agent registered (no Secret left); delete
        the other pods and Secrets of this server. Returns the pod list's resourceVersion."""
        pods = await self.api.list_of("pods", self._selector)
        secrets = await self.api.list_of("secrets", self._selector)
        with_secret = {worker_of(s) for s in secrets.get("items") or ()}
        removed = 0
        for pod in pods.get("items") or ():
            worker_id = worker_of(pod)
            if worker_id and running(pod) and not deleting(pod) and worker_id not in with_secret:
                log.info("adopting worker %s (pod %s)", worker_id, pod_name(worker_id))
                worker = self._new_worker(worker_id, secret=False)
                worker.started.set_result(None)
                worker.last = dict(pod)
                self._adopted.add(worker_id)
                if self._on_adopt is not None:
                    self._on_adopt(worker_id)
            else:
                name = str((pod.get("metadata") or {}).get("name", ""))
                await self.api.delete("pods", name, grace_s=0)
                removed += 1
        for secret in secrets.get("items") or ():
            if worker_of(secret) not in self._adopted:
                await self.api.delete("secrets", str(secret["metadata"]["name"]))
        if removed:
            log.warning("deleted %d worker pod(s) of an earlier run", removed)
        return str((pods.get("metadata") or {}).get("resourceVersion", ""))

    async def _expire_adopted(self) -> None:
        await asyncio.sleep(self._grace_s)
        late = [w for w in self._adopted if w in self._workers]
        self._adopted.clear()
        for worker_id in late:
            log.warning("worker %s did not reconnect in time; deleting its pod", worker_id)
        await asyncio.gather(*(self.terminate(w) for w in late))

    def connected(self, worker_id: str) -> None:
        """The worker registered or resumed: its OTP is spent, so its Secret goes."""
        self._adopted.discard(worker_id)
        worker = self._workers.get(worker_id)
        if worker is not None and worker.secret:
            worker.secret = False
            self._spawn(self._delete_quietly("secrets", secret_name(worker_id)))

    # ---- the watch ---------------------------------------------------------------------------
    async def _watch_loop(self, version: str) -> None:
        failures = 0
        while not self._closing:
            try:
                if not version:
                    version = await self._relist()
                async for event in self.api.watch("pods", self._selector, version):
                    failures = 0
                    obj = event.get("object") or {}
                    version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
                    if event.get("type") != "BOOKMARK":
                        self._observe(obj, deleted=event.get("type") == "DELETED")
            except WatchExpired:
                log.info("the pod watch's resourceVersion expired; listing the pods again")
                version = ""
            except KubeError as exc:
                failures += 1
                if failures in (1, 10) or failures % 100 == 0:
                    log.warning("pod watch: %s; resuming", exc)
                await asyncio.sleep(RETRY_S[min(failures, len(RETRY_S)) - 1])
            self.watch_restarts += 1

    async def _relist(self) -> str:
        """After 410 Gone: the current pods (every change missed is in them), and the
        resourceVersion to watch from."""
        pods = await self.api.list_of("pods", self._selector)
        seen = set()
        for pod in pods.get("items") or ():
            seen.add(worker_of(pod))
            self._observe(pod, deleted=False)
        for worker_id, worker in list(self._workers.items()):
            if worker_id not in seen and worker.last:  # deleted while we were not watching
                self._observe(worker.last, deleted=True)
        return str((pods.get("metadata") or {}).get("resourceVersion", ""))

    def _observe(self, pod: Pod, deleted: bool) -> None:
        worker_id = worker_of(pod)
        worker = self._workers.get(worker_id)
        if worker is None or worker.ended:
            return
        worker.last = dict(pod)
        if not worker.started.done():
            if running(pod):
                worker.started.set_result(None)
            elif deleted:
                worker.started.set_result("its pod was deleted before its agent started")
            else:
                problem = start_problem(pod)
                if problem is not None:
                    worker.started.set_result(problem)
            return
        if deleted:
            why = "its pod was deleted" + ("" if worker.terminated else " by someone else")
            self._ended(worker_id, worker, -1 if not finished(pod) else exit_code(pod), why)
        elif finished(pod):
            self._ended(worker_id, worker, exit_code(pod), end_reason(pod))
            self._spawn(self._delete_quietly("pods", pod_name(worker_id), grace_s=0))

    def _ended(self, worker_id: str, worker: _Worker, code: int, why: str) -> None:
        worker.ended = True
        self._workers.pop(worker_id, None)
        self._adopted.discard(worker_id)
        if not (worker.terminated or self._closing) and not (code == 0 and "exited" in why):
            log.warning("worker %s: %s", worker_id, why)
        else:
            log.info("worker %s: %s", worker_id, why)
        self._on_exit(worker_id, code, why)

    # ---- provision ---------------------------------------------------------------------------
    def _new_worker(self, worker_id: str, secret: bool = True) -> _Worker:
        worker = _Worker(asyncio.get_running_loop().create_future(), secret=secret)
        self._workers[worker_id] = worker
        return worker

    async def provision(self, launch: WorkerLaunch) -> None:
        if self._closing:
            raise ProviderError("the kubernetes provider is stopping")
        # Shielded: a caller that gives up must not leave a pod behind half made; stop()
        # waits for provisions in flight, which clean up after themselves.
        task = asyncio.create_task(self._provision(launch))
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)
        await asyncio.shield(task)

    async def _provision(self, launch: WorkerLaunch) -> None:
        worker_id = launch.worker_id
        worker = self._new_worker(worker_id)
        manifest = pod_manifest(self.options, self.server_id, launch)
        try:
            pod = await self.api.create("pods", manifest)
            secret = secret_manifest(self.options, self.server_id, worker_id, launch.otp, pod)
            await self.api.create("secrets", secret)
        except ProviderError:
            self._workers.pop(worker_id, None)
            await self._delete_quietly("pods", pod_name(worker_id), grace_s=0)
            raise
        try:
            problem = await asyncio.wait_for(
                asyncio.shield(worker.started), self.options.start_timeout_s
            )
        except TimeoutError:
            problem = self._not_started(worker)
        if problem is None:
            log.info("worker %s: pod %s runs", worker_id, pod_name(worker_id))
            return
        self._workers.pop(worker_id, None)
        worker.ended = True
        await self._delete_quietly("pods", pod_name(worker_id), grace_s=0)
        if worker.terminated or self._closing:
            return  # given up by the provisioner (or stopping): nothing more to say
        if launch.image is not None and cannot_pull(worker.last):
            # A job's own image: its jobs fail with the reason, no backoff for the others.
            raise ImageUnavailable(launch.image, f"worker pod {pod_name(worker_id)}: {problem}")
        raise ProviderError(f"worker pod {pod_name(worker_id)}: {problem}")

    def _not_started(self, worker: _Worker) -> str:
        pod = worker.last
        waiting = (pod.get("status") or {}).get("containerStatuses") or ()
        state = ""
        for status in waiting:
            reason = ((status.get("state") or {}).get("waiting") or {}).get("reason")
            state = f", its container waiting ({reason})" if reason else state
        phase = (pod.get("status") or {}).get("phase", "not seen")
        return (
            f"its agent did not start within {self.options.start_timeout_s:.0f}s "
            f"(pod {phase}{state})"
        )

    # ---- terminate and stop ------------------------------------------------------------------
    async def terminate(self, worker_id: str) -> None:
        worker = self._workers.get(worker_id)
        if worker is None:
            return
        worker.terminated = True
        if not worker.started.done():
            worker.started.set_result("terminated")
        grace = max(0, round(self.options.stop_grace_s))
        await self._delete_quietly("pods", pod_name(worker_id), grace_s=grace)

    async def _delete_quietly(self, resource: str, name: str, grace_s: int | None = None) -> None:
        try:
            await self.api.delete(resource, name, grace_s)
        except ProviderError as exc:
            log.warning("cannot delete %s %s: %s", resource, name, exc)

    async def stop(self) -> None:
        self._closing = True
        if self._grace_timer is not None:
            self._grace_timer.cancel()
            await asyncio.gather(self._grace_timer, return_exceptions=True)
        await asyncio.gather(*self._inflight, return_exceptions=True)
        await asyncio.gather(*(self.terminate(w) for w in list(self._workers)))
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._watch_task is not None:
            self._watch_task.cancel()
            await asyncio.gather(self._watch_task, return_exceptions=True)
        with contextlib.suppress(ProviderError):
            await self.api.close()

    def running(self) -> list[str]:
        return list(self._workers)

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        task = asyncio.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
