"""The floor under W1 on this machine: how fast one Python process can spawn `true` serially.

Four ways, each for about `seconds`: plain `/bin/true`; `bash -c true` (what a one-string
Hodei job runs); the same under `setpriv --pdeathsig KILL`; and what the Hodei agent does per
job (a PTY, a private temp dir, setpriv, bash -c true in a new session). Rates are for one job
at a time, with the CPU time used per job by the spawning process and by the children.
"""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from typing import Any


def _plain() -> None:
    subprocess.Popen(["/bin/true"]).wait()


def _bash() -> None:
    subprocess.Popen(["bash", "-c", "true"]).wait()


def _setpriv_bash() -> None:
    subprocess.Popen(["setpriv", "--pdeathsig", "KILL", "--", "bash", "-c", "true"]).wait()


def _agent_like() -> None:
    workdir = tempfile.mkdtemp(prefix="bench-job-")
    master, slave = os.openpty()
    prefix = ["setpriv", "--pdeathsig", "KILL", "--"] if shutil.which("setpriv") else []
    try:
        proc = subprocess.Popen(
            [*prefix, "bash", "-c", "true"],
            stdin=subprocess.DEVNULL,
            stdout=slave,
            stderr=slave,
            cwd=workdir,
            start_new_session=True,
        )
        os.close(slave)
        slave = -1
        proc.wait()
    finally:
        if slave >= 0:
            os.close(slave)
        os.close(master)
        shutil.rmtree(workdir, ignore_errors=True)


def _rate(fn: Callable[[], None], seconds: float) -> dict[str, float]:
    count = 0
    children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu0 = time.process_time()
    start = time.perf_counter()
    deadline = start + seconds
    while time.perf_counter() < deadline and count < 100_000:
        fn()
        count += 1
    wall = time.perf_counter() - start
    cpu = time.process_time() - cpu0
    children1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    child_cpu = (children1.ru_utime + children1.ru_stime) - (
        children0.ru_utime + children0.ru_stime
    )
    return {
        "per_s": count / wall,
        "ms_each": 1000 * wall / count,
        "parent_cpu_ms_each": 1000 * cpu / count,
        "child_cpu_ms_each": 1000 * child_cpu / count,
    }


def measure(seconds: float = 1.0) -> dict[str, Any]:
    return {
        "true": _rate(_plain, seconds),
        "bash_c_true": _rate(_bash, seconds),
        "setpriv_bash_c_true": _rate(_setpriv_bash, seconds),
        "agent_like": _rate(_agent_like, seconds),
    }


if __name__ == "__main__":
    for name, figures in measure().items():
        print(
            f"{name:20s} {figures['per_s']:6.0f}/s  {figures['ms_each']:.2f} ms each, CPU "
            f"{figures['parent_cpu_ms_each']:.2f} ms parent + {figures['child_cpu_ms_each']:.2f} "
            "ms child"
        )
