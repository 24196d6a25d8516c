"""Sampling profiles of running processes with py-spy, and a summary of the top functions.

`py-spy record -f raw` writes collapsed stacks ("frame;frame;frame count" per line, root
first); `top_functions` turns them into self and inclusive shares per function.
"""

from __future__ import annotations

import re
import signal
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from procs import Child, Procs

_LINE_NO = re.compile(r":\d+\)$")
# Frames every stack of a process shares (interpreter and CLI start-up): not informative.
_NOISE = ("<module>", "_run_module_as_main", "_run_code", "typer/", "click/", "runners.py")


@dataclass
class Recording:
    name: str
    path: Path
    child: Child


def start(procs: Procs, py_spy: str, pid: int, name: str, out: Path) -> Recording:
    argv = [py_spy, "record", "-p", str(pid), "-r", "100", "-f", "raw", "-o", str(out)]
    child = procs.spawn(f"py-spy {name}", [*argv, "--nonblocking", "--threads"])
    return Recording(name, out, child)


def stop(procs: Procs, rec: Recording) -> None:
    """SIGINT makes py-spy write its file and exit."""
    procs.stop(rec.child, grace=30, sig=signal.SIGINT)


def _frames(stack: str) -> list[str]:
    frames = [_LINE_NO.sub(")", f) for f in stack.split(";")]
    return [f for f in frames if f and not f.startswith(("process ", "thread "))]


def top_functions(path: Path, limit: int = 25) -> dict[str, Any]:
    """Self and inclusive sample shares per function (file:line folded away)."""
    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    threads: Counter[str] = Counter()
    total = 0
    if not path.exists():
        return {"samples": 0, "self": [], "inclusive": [], "threads": []}
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        thread = next((f for f in stack.split(";") if f.startswith("thread ")), "")
        threads[thread.split(": ", 1)[-1] or "main"] += n
        frames = _frames(stack)
        if not frames:
            continue
        own[frames[-1]] += n
        for frame in set(frames):
            if not any(noise in frame for noise in _NOISE):
                incl[frame] += n

    def share(counter: Counter[str]) -> list[tuple[float, str]]:
        return [(round(100.0 * n / total, 1), f) for f, n in counter.most_common(limit)]

    return {
        "samples": total,
        "self": share(own),
        "inclusive": share(incl),
        "threads": share(threads),
    }


def format_top(name: str, top: dict[str, Any], limit: int = 15) -> str:
    lines = [f"--- profile: {name} ({top['samples']} samples at 100 Hz) ---", "self time:"]
    lines += [f"  {pct:5.1f}%  {frame}" for pct, frame in top["self"][:limit]]
    lines.append("inclusive (with callees):")
    lines += [f"  {pct:5.1f}%  {frame}" for pct, frame in top["inclusive"][:limit]]
    return "\n".join(lines)
