"""Finding a test's own processes by a unique marker in their command line, from /proc."""

from __future__ import annotations

import os


def with_marker(mark: str, exact: bool = False) -> list[int]:
    """Pids of live (not zombie) processes whose command line holds `mark`; `exact`: only
    those whose last argument is the marker itself (`sleep MARKER`), not a shell naming it."""
    needle = mark.encode()
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                cmdline = f.read()
            with open(f"/proc/{name}/stat") as f:
                state = f.read().rpartition(")")[2].split()[0]
        except OSError:
            continue
        argv = cmdline.rstrip(b"\0").split(b"\0")
        if state != "Z" and (argv[-1] == needle if exact else needle in cmdline):
            found.append(int(name))
    return found
