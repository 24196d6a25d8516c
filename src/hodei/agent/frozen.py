"""The agent as a self-contained executable (scripts/build_agent_binary.sh): its entry point,
and what differs when it runs frozen.

The executable directory carries its own C library and dynamic loader, and is started through
that loader (`DIR/glibc/ld-linux-x86-64.so.2 DIR/hodei-agent`), so it runs in any image. Two
things follow. Starting itself again (the job reaper) must go through the loader too: the
image may have no loader at the path the executable names, or another C library. And its
bootloader puts its own library directory on LD_LIBRARY_PATH (keeping the caller's value in
LD_LIBRARY_PATH_ORIG): a job must get the image's value back, or its programs would load the
agent's libraries instead of the image's.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping

from hodei.agent_bundle import LOADER

REAPER_FLAG = "--hodei-reaper"
# The bootloader's own variables: meaningless (and misleading) in a job's environment.
_BOOTLOADER_PREFIX = "_PYI_"


def frozen() -> bool:
    return bool(getattr(sys, "frozen", False))


def self_command() -> list[str]:
    """The argv that starts this executable again (frozen only)."""
    loader = os.path.join(os.path.dirname(sys.executable), LOADER)
    return [loader, sys.executable] if os.path.exists(loader) else [sys.executable]


def python_command(script: str) -> list[str]:
    """The argv that runs `script` (Python source) in a new process of this agent."""
    if frozen():
        return [*self_command(), REAPER_FLAG]  # the only script it runs; see main()
    return [sys.executable, "-I", "-S", "-c", script]


def job_environment(source: Mapping[str, str], *, is_frozen: bool | None = None) -> dict[str, str]:
    """`source` (the agent's environment) as a job should inherit it: what the frozen
    bootloader changed is put back."""
    env = dict(source)
    if not (frozen() if is_frozen is None else is_frozen):
        return env
    for key in [k for k in env if k.startswith(_BOOTLOADER_PREFIX)]:
        del env[key]
    original = env.pop("LD_LIBRARY_PATH_ORIG", None)
    if original is None:
        env.pop("LD_LIBRARY_PATH", None)
    else:
        env["LD_LIBRARY_PATH"] = original
    return env


def main() -> None:
    """The executable's entry point: the agent (`python -m hodei.agent`'s arguments), its job
    reaper, or `--version`."""
    args = sys.argv[1:]
    if args[:1] == [REAPER_FLAG]:
        from hodei.agent.reaper import SCRIPT

        exec(compile(SCRIPT, "<hodei-reaper>", "exec"), {"__name__": "__main__"})
        sys.exit(0)
    if args[:1] == ["--version"]:
        from hodei import __version__

        print(f"hodei-agent {__version__}")
        sys.exit(0)
    from hodei.agent.__main__ import main as agent_main

    sys.exit(agent_main(args))
