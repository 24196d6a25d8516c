"""Nothing outlives a job: how the agent finds and ends every process a job started.

`CgroupContainment` (hodei.agent.cgroups): a cgroup per job, killed whole when the job ends, is
cancelled or times out; the job reaper kills it if the agent dies.

`SubreaperContainment`, where no cgroup can be made: the agent becomes a child subreaper
(PR_SET_CHILD_SUBREAPER), so whatever a job orphans (setsid and fork, double fork) is
reparented to the agent instead of pid 1. When a job ends the agent sweeps its descendants: it
kills and reaps each one that belongs to no other live job (descendant of its first process,
in its session or process group, or HODEI_JOB_ID/HODEI_ATTEMPT of it in its environment) and is
not one of the agent's helpers. Spawns and sweeps take one lock, so a job being started is
never swept. If the agent dies, the job reaper kills the job groups and every process whose
environment names a listed job; an orphan that also cleared its environment is not found then
(the agent's descendants are not knowable once it is gone).

`HODEI_AGENT_CONTAINMENT` picks one: `auto` (the default: a cgroup where possible),
`cgroup`, `subreaper`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import ctypes.util
import logging
import os
import signal
import threading
import time
from dataclasses import dataclass, field

import psutil

from hodei.agent.cgroups import JobCgroups

log = logging.getLogger(__name__)

PR_SET_CHILD_SUBREAPER = 36
SWEEP_LIMIT_S = 5.0


@dataclass(slots=True)
class Jail:
    """One job's containment: its cgroup (or "") and, once started, its first pid."""

    key: tuple[str, int]  # (job id, attempt)
    cgroup: str = ""
    pid: int = 0
    prefix: list[str] = field(default_factory=list)
    v2: bool = False  # the cgroup is in the unified hierarchy


class Containment:
    """Base: the job's process group only (what the runner always kills)."""

    name = "group"
    lock = threading.Lock()  # held by spawns (in threads) and sweeps

    def open(self, job_id: str, attempt: int) -> Jail:
        return Jail((job_id, attempt))

    def started(self, jail: Jail, pid: int) -> None:
        jail.pid = pid

    async def close(self, jail: Jail) -> None:
        """The job has ended: end everything it left."""


class CgroupContainment(Containment):
    name = "cgroup"

    def __init__(self, cgroups: JobCgroups) -> None:
        self.cgroups = cgroups

    def open(self, job_id: str, attempt: int) -> Jail:
        path = self.cgroups.create(f"{job_id}-{attempt}")
        return Jail((job_id, attempt), path, prefix=self.cgroups.prefix(path), v2=self.cgroups.v2)

    async def close(self, jail: Jail) -> None:
        if jail.cgroup:
            await self.cgroups.kill(jail.cgroup)


def become_subreaper() -> bool:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), os.strerror(ctypes.get_errno()))
    except (OSError, AttributeError) as exc:
        log.warning("cannot become a child subreaper (%s): orphans of jobs may survive", exc)
        return False
    return True


class SubreaperContainment(Containment):
    name = "subreaper"

    def __init__(self) -> None:
        self.enabled = become_subreaper()
        self._live: dict[int, Jail] = {}  # first pid -> jail, for jobs still running
        self.helpers: set[int] = set()  # the agent's own children that are not jobs

    def started(self, jail: Jail, pid: int) -> None:
        jail.pid = pid
        self._live[pid] = jail  # called with `lock` held, right after the spawn

    async def close(self, jail: Jail) -> None:
        self._live.pop(jail.pid, None)
        if self.enabled:
            await self.sweep()

    def _kept(self, proc: psutil.Process, kept_trees: set[int]) -> bool:
        if proc.pid in self.helpers or proc.pid in kept_trees:
            return True
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                return False  # dead: reaped below if it is the agent's child
            if os.getsid(proc.pid) in self._live or os.getpgid(proc.pid) in self._live:
                return True
            env = proc.environ()
        except (OSError, psutil.Error):
            return True  # gone, or not ours to read
        key = (env.get("HODEI_JOB_ID", ""), env.get("HODEI_ATTEMPT", ""))
        return any(key == (j, str(a)) for j, a in (jail.key for jail in self._live.values()))

    def _round(self) -> bool:
        """Kill and reap the agent's descendants that belong to no live job; True if none."""
        me = os.getpid()
        with self.lock:
            try:
                children = psutil.Process(me).children(recursive=True)
            except psutil.Error:
                return True
            kept_trees: set[int] = set()
            for root in [*self._live, *self.helpers]:
                kept_trees.add(root)
                with contextlib.suppress(psutil.Error):
                    kept_trees.update(p.pid for p in psutil.Process(root).children(True))
            doomed = [p for p in children if not self._kept(p, kept_trees)]
            for proc in doomed:
                with contextlib.suppress(psutil.Error):
                    proc.send_signal(signal.SIGKILL)
            for proc in doomed:
                with contextlib.suppress(psutil.Error, ChildProcessError, OSError):
                    if proc.ppid() == me:
                        os.waitpid(proc.pid, os.WNOHANG)
        return not doomed

    async def sweep(self) -> None:
        deadline = time.monotonic() + SWEEP_LIMIT_S
        while not self._round():
            if time.monotonic() > deadline:
                log.warning("sweep: processes of an ended job are still there")
                return
            await asyncio.sleep(0.005)


_CHOSEN: Containment | None = None


def choose(mode: str | None = None) -> Containment:
    """The containment for this agent's jobs, chosen once (HODEI_AGENT_CONTAINMENT)."""
    global _CHOSEN
    if mode is None and _CHOSEN is not None:
        return _CHOSEN
    mode = mode or os.environ.get("HODEI_AGENT_CONTAINMENT", "auto")
    chosen: Containment | None = None
    if mode in ("auto", "cgroup"):
        cgroups = JobCgroups.find(os.environ.get("HODEI_AGENT_CGROUP") or None)
        if cgroups is not None:
            log.info("jobs run in cgroups under %s", cgroups.parent)
            chosen = CgroupContainment(cgroups)
        elif mode == "cgroup":
            log.warning("no writable cgroup found: falling back to a subreaper")
    if chosen is None:
        chosen = SubreaperContainment()
    _CHOSEN = chosen
    return chosen
