"""The agent's own end-to-end tests, run again against the agent executable
(scripts/build_agent_binary.sh; .ci/services/agent.sh builds it) instead of `python -m
hodei.agent`: every server here starts its local workers with `--local-agent DIR`, so the same
checks (PTY output, exit codes, masking, cancel of the whole process group, timeouts, retries,
a kill -9 of the server while jobs run) prove the frozen agent behaves as the Python one.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import RunningServer, start_server, stop_server
from services import require_service

# The tests below are the Python agent's, collected here again with this module's fixtures.
from test_core import (
    test_cancel_kills_the_whole_process_group,
    test_retries_with_backoff_record_each_attempt,
    test_secret_is_delivered_as_env_and_masked,
    test_submit_follow_prints_output_and_exits_with_the_job_code,
    test_timeout_ends_the_job_timed_out_and_kills_it,
    test_workers_are_provisioned_on_demand_and_none_outlive_the_server,
    test_workers_report_usage_in_heartbeats,
)
from test_masking_e2e import (
    test_secret_in_an_error_message_is_masked,
    test_secret_is_masked_in_every_output_path,
)
from test_resilience import test_kill_9_of_the_server_while_50_jobs_run_loses_none

from hodei.agent_bundle import bundle_problem

pytestmark = pytest.mark.e2e

__all__ = [
    "test_cancel_kills_the_whole_process_group",
    "test_kill_9_of_the_server_while_50_jobs_run_loses_none",
    "test_retries_with_backoff_record_each_attempt",
    "test_secret_in_an_error_message_is_masked",
    "test_secret_is_delivered_as_env_and_masked",
    "test_secret_is_masked_in_every_output_path",
    "test_submit_follow_prints_output_and_exits_with_the_job_code",
    "test_timeout_ends_the_job_timed_out_and_kills_it",
    "test_workers_are_provisioned_on_demand_and_none_outlive_the_server",
    "test_workers_report_usage_in_heartbeats",
]


@pytest.fixture
def agent_bundle() -> str:
    path = os.environ.get("HODEI_TEST_AGENT_BINARY", "")
    problem = bundle_problem(path) if path else "HODEI_TEST_AGENT_BINARY is not set"
    require_service("agent executable", problem is None, f"{problem} (.ci/services/agent.sh)")
    return path


@pytest.fixture
def server_factory(tmp_path: Path, agent_bundle: str) -> Iterator[type[object]]:
    started: list[RunningServer] = []

    class Factory:
        @staticmethod
        def start(*extra: str, home: Path | None = None) -> RunningServer:
            s = start_server(home or tmp_path / "home", "--local-agent", agent_bundle, *extra)
            started.append(s)
            return s

    yield Factory
    for s in started:
        stop_server(s)


def test_the_workers_run_the_executable_not_python(server: RunningServer) -> None:
    out = server.hodei("submit", "-f", "--", "sh", "-c", "cat /proc/$PPID/cmdline | tr '\\0' ' '")
    assert out.returncode == 0, out.stderr.decode()
    pids = server.agent_pids()
    assert pids
    with open(f"/proc/{pids[0]}/cmdline", "rb") as f:
        argv = f.read().split(b"\0")
    assert argv[0].endswith(b"glibc/ld-linux-x86-64.so.2") and b"hodei-agent" in argv[1]
