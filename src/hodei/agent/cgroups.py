"""A cgroup per job, so that nothing a job starts outlives it (setsid, double fork, SIGTERM
ignored: the kernel keeps every descendant in the cgroup, whatever it does).

Where: cgroup v2 (the unified hierarchy, at /sys/fs/cgroup or /sys/fs/cgroup/unified on a
hybrid host) under the agent's own cgroup (read from /proc/self/cgroup) or under a delegated
directory given as `parent`; else cgroup v1's pids or freezer hierarchy. Each job gets a child
`hodei-job-<id>-<attempt>`. v2's "no internal processes" rule: when the agent's own cgroup
refuses job children while the agent is in it, the agent moves itself into a leaf
`hodei-agent` first, and the job cgroups become its siblings.

Entering, race-free: the job is exec'd through `sh -c 'echo $$ >cgroup.procs && exec "$@"'`,
so its first process moves itself into the cgroup before any of the job's code runs, hence
before it can fork (no Python code runs between fork and exec: unsafe with gRPC's threads).
If the move fails the job does not run (exit 125).

Ending: `cgroup.kill` where the kernel has it (v2, Linux 5.14), else SIGKILL to every pid in
cgroup.procs until it is empty; then the directory is removed.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import re
import shutil
import signal
import subprocess
import time

log = logging.getLogger(__name__)

KILL_LIMIT_S = 5.0  # how long a cgroup may take to empty once killed
ENTER = 'echo $$ >"$0/cgroup.procs" || exit 125; exec "$@"'


def _mounts() -> list[tuple[str, str, str, str]]:
    """(mount point, fstype, super options, root: the hierarchy's path mounted there) of every
    cgroup mount."""
    out = []
    try:
        with open("/proc/self/mountinfo") as f:
            lines = f.read().splitlines()
    except OSError:
        return []
    for line in lines:
        left, _, right = line.partition(" - ")
        fields, rfields = left.split(), right.split()
        if len(fields) >= 5 and len(rfields) >= 3 and rfields[0] in ("cgroup", "cgroup2"):
            out.append((fields[4], rfields[0], rfields[2], fields[3]))
    return out


def _own_paths() -> dict[str, str]:
    """This process's cgroup per hierarchy: "" for v2, else the controller names."""
    paths: dict[str, str] = {}
    try:
        with open("/proc/self/cgroup") as f:
            for line in f:
                _, controllers, path = line.rstrip("\n").split(":", 2)
                for name in controllers.split(",") if controllers else [""]:
                    paths[name] = path
    except (OSError, ValueError):
        pass
    return paths


def candidates() -> list[tuple[str, bool]]:
    """(the agent's own cgroup directory, is v2), best first: v2, then v1 pids, then freezer."""
    own = _own_paths()
    out: list[tuple[str, bool]] = []
    for point, fstype, options, root in _mounts():
        if fstype == "cgroup2" and "" in own:
            out.insert(0, (_under(point, root, own[""]), True))
        elif fstype == "cgroup":
            for name in ("pids", "freezer"):
                if name in options.split(",") and name in own:
                    out.append((_under(point, root, own[name]), False))
    return out


def _under(point: str, root: str, own: str) -> str:
    """Where the cgroup `own` (a path in its hierarchy, as /proc/self/cgroup says) is, for a
    mount at `point` of the hierarchy's `root`: in a container without a cgroup namespace the
    mount's root is the container's cgroup (/docker/<id>), and /proc/self/cgroup still names
    the full path."""
    root = root.rstrip("/")
    if root and (own == root or own.startswith(root + "/")):
        own = own[len(root) :]
    return os.path.join(point, own.lstrip("/"))


def _sh() -> str:
    return shutil.which("sh") or "/bin/sh"


class JobCgroups:
    """Creates, enters and kills job cgroups under `parent`."""

    def __init__(self, parent: str, v2: bool) -> None:
        self.parent = parent
        self.v2 = v2

    @classmethod
    def find(cls, parent: str | None = None) -> JobCgroups | None:
        """The first place where a job cgroup can be created and entered, or None."""
        places = candidates()
        if parent:
            places = [(parent, os.path.exists(os.path.join(parent, "cgroup.controllers")))]
        for path, v2 in places:
            cgroups = cls(path, v2)
            if cgroups._probe():
                return cgroups
            if v2 and cgroups._into_leaf() and cgroups._probe():
                return cgroups
        return None

    def _probe(self) -> bool:
        try:
            path = self.create("probe")
        except OSError:
            return False
        try:
            done = subprocess.run(
                [*self.prefix(path), "true"], stdin=subprocess.DEVNULL, capture_output=True
            )
            return done.returncode == 0
        except OSError:
            return False
        finally:
            self.kill_sync(path)

    def _into_leaf(self) -> bool:
        """Move the agent into `<parent>/hodei-agent` (v2: a cgroup with job children should
        hold no process itself)."""
        if os.path.abspath(self.parent) in {p for p, _, _, _ in _mounts()}:
            return False  # the root cgroup is exempt: the rule is not what failed
        leaf = os.path.join(self.parent, "hodei-agent")
        try:
            with contextlib.suppress(FileExistsError):
                os.mkdir(leaf)
            with open(os.path.join(leaf, "cgroup.procs"), "w") as f:
                f.write(str(os.getpid()))
        except OSError as exc:
            log.info("cannot move the agent into %s: %s", leaf, exc)
            return False
        log.info("agent moved into %s; job cgroups are its siblings", leaf)
        return True

    def create(self, name: str) -> str:
        """A new empty cgroup `hodei-job-<name>` (with a suffix when taken); OSError if not."""
        base = os.path.join(self.parent, "hodei-job-" + re.sub(r"[^A-Za-z0-9_.-]", "_", name))
        for n in range(1000):
            path = base if n == 0 else f"{base}.{n}"
            try:
                os.mkdir(path)
            except FileExistsError:
                continue
            return path
        raise FileExistsError(errno.EEXIST, "no free cgroup name", base)

    def prefix(self, path: str) -> list[str]:
        """The exec prefix that puts the job into `path` before it runs."""
        return [_sh(), "-c", ENTER, path]

    def _kill_once(self, path: str) -> bool:
        """Signal everything in the cgroup; True when it is empty."""
        if self.v2:
            try:
                with open(os.path.join(path, "cgroup.events")) as f:
                    if "populated 0" in f.read():
                        return True
            except FileNotFoundError:
                return True
            except OSError:
                pass
            kill = os.path.join(path, "cgroup.kill")
            if os.path.exists(kill):
                with contextlib.suppress(OSError), open(kill, "w") as f:
                    f.write("1")
                return False
        try:
            with open(os.path.join(path, "cgroup.procs")) as f:
                pids = [int(p) for p in f.read().split()]
        except FileNotFoundError:
            return True
        except (OSError, ValueError):
            pids = []
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        return not pids

    def _remove(self, path: str) -> bool:
        try:
            os.rmdir(path)
        except FileNotFoundError:
            return True
        except OSError:
            return False
        return True

    async def kill(self, path: str) -> bool:
        """Kill every process in the cgroup and remove it; False if it would not empty."""
        deadline = time.monotonic() + KILL_LIMIT_S
        while not self._kill_once(path) or not self._remove(path):
            if time.monotonic() > deadline:
                log.warning("job cgroup %s did not empty; left in place", path)
                return False
            await asyncio.sleep(0.005)
        return True

    def kill_sync(self, path: str) -> bool:
        deadline = time.monotonic() + KILL_LIMIT_S
        while not self._kill_once(path) or not self._remove(path):
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        return True
