"""The server on PostgreSQL (`--database-url postgresql://...`): jobs, exit codes and secrets
survive a kill -9 of the server, and nothing is written to a SQLite file."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
from harness import RunningServer, stop_server

pytestmark = pytest.mark.e2e


def finished_jobs(server: RunningServer) -> list[dict[str, object]]:
    out = server.hodei("jobs", "-o", "json")
    assert out.returncode == 0, out.stderr
    items: list[dict[str, object]] = json.loads(out.stdout)["items"]
    return items


def test_server_on_postgresql_keeps_jobs_across_kill_9(
    postgres_dsn: str, server_factory: type, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    server: RunningServer = server_factory.start("--database-url", postgres_dsn, home=home)
    for code in (0, 3, 7):
        out = server.hodei("submit", "-f", "--", "sh", "-c", f"echo hi; exit {code}")
        assert out.returncode == code, out.stderr
        assert b"hi" in out.stdout
    stored = server.hodei("secret", "set", "TOKEN", input=b"s3cret")
    assert stored.returncode == 0, stored.stderr
    before = finished_jobs(server)

    stop_server(server, signal.SIGKILL)
    assert not (home / "hodei.db").exists()  # the jobs are in PostgreSQL only
    again: RunningServer = server_factory.start("--database-url", postgres_dsn, home=home)

    after = finished_jobs(again)
    assert after == before
    assert sorted((j["state"], j["exit_code"]) for j in after) == [
        ("failed", 3),
        ("failed", 7),
        ("succeeded", 0),
    ]
    log = again.hodei("logs", str(after[0]["id"]))
    assert log.returncode == 0 and b"hi" in log.stdout
    assert b"TOKEN" in again.hodei("secret", "list").stdout
    script = 'echo "$TOKEN"; exit 5'
    out = again.hodei("submit", "-f", "--secret", "TOKEN", "--", "sh", "-c", script)
    assert out.returncode == 5, out.stderr
    assert b"s3cret" not in out.stdout  # delivered (the key is in the home) and masked
    assert len(finished_jobs(again)) == 4
