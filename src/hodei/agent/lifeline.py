"""Die with the server that started us: PR_SET_PDEATHSIG, set by the agent on itself.

Set in the agent rather than in a preexec_fn of the server, because forking with a callback in
a multi-threaded server is unsafe.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1


def tie_to_parent(expected_ppid: str | None) -> None:
    """With HODEI_PARENT_PID set: get SIGTERM when that parent dies; exit if it already has."""
    if not expected_ppid or not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    # The parent may have died before prctl took effect: then we were re-parented already.
    if str(os.getppid()) != expected_ppid:
        raise SystemExit("hodei agent: the server that started this worker is gone")
