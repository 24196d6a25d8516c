"""The layout of the agent executable directory (scripts/build_agent_binary.sh), which the
providers start and the frozen agent starts again: shared, so all of them agree."""

from __future__ import annotations

import os

EXECUTABLE = "hodei-agent"
LOADER = os.path.join("glibc", "ld-linux-x86-64.so.2")  # its own dynamic loader


def command_in(directory: str) -> tuple[str, ...]:
    """The argv that starts the agent of `directory` through its own loader, so it needs
    neither the C library nor the loader of the system it runs on."""
    return (os.path.join(directory, LOADER), os.path.join(directory, EXECUTABLE))


def bundle_problem(directory: str) -> str | None:
    """Why `directory` is not an agent executable directory, or None when it is."""
    for part in (EXECUTABLE, LOADER):
        if not os.access(os.path.join(directory, part), os.X_OK):
            return (
                f"{directory} is not an agent executable directory (no executable {part}); "
                "build one with scripts/build_agent_binary.sh"
            )
    return None
