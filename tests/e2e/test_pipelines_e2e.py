"""Pipeline runs as a user drives them: `hodei pipeline ...` against a real server with local
workers (the smallest pipeline and its artifact, a failure and its log tail, retry, a manual
step's approval, lists, the DAG drawing, a refused file), and the gRPC PipelineService."""

from __future__ import annotations

import asyncio
import json
import queue
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from harness import RunningServer, start_server, stop_server

from hodei._proto.hodei.v1 import pipelines_pb2, pipelines_pb2_grpc

pytestmark = pytest.mark.e2e

SMALLEST = """\
name: demo
steps:
  build:
    run: echo building > out.txt
    artifacts: [out.txt]
  test:
    needs: [build]
    run: cat out.txt
"""
STARTED = re.compile(r"run (r[0-9a-f]{17}) of pipeline")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """One server for the module: each test makes runs of its own."""
    home = tmp_path_factory.mktemp("pipelines") / "home"
    running = start_server(home, "--max-workers", "3", "--worker-idle", "20s")
    yield running
    stop_server(running)


def write(tmp_path: Path, text: str, name: str = "pipeline.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def run_follow(server: RunningServer, path: Path, *args: str) -> tuple[str, Any]:
    """`hodei pipeline run -f FILE`: the run's id and the finished process."""
    out = server.hodei("pipeline", "run", "-f", str(path), *args, timeout=90)
    match = STARTED.search(out.stderr.decode())
    assert match, out.stderr.decode()
    return match.group(1), out


def shown(server: RunningServer, run_id: str) -> dict[str, Any]:
    out = server.hodei("pipeline", "show", run_id, "-o", "json")
    assert out.returncode == 0, out.stderr.decode()
    view: dict[str, Any] = json.loads(out.stdout)
    return view


def by_id(view: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {row["id"]: row for row in view["steps"]}


def run_count(server: RunningServer) -> int:
    with server.http() as client:
        return len(client.get("/api/v1/pipelines", params={"limit": 1000}).json()["items"])


def test_the_smallest_pipeline_runs_and_its_artifact_reaches_the_next_step(
    server: RunningServer, tmp_path: Path
) -> None:
    run_id, out = run_follow(server, write(tmp_path, SMALLEST))
    assert out.returncode == 0, (out.stdout.decode(), out.stderr.decode())
    stdout = out.stdout.decode()
    assert "test: succeeded" in stdout and "build: succeeded" in stdout
    assert out.stderr.decode().splitlines()[-1] == f"run {run_id} succeeded"
    logs = server.hodei("logs", run_id, "test")
    assert logs.returncode == 0, logs.stderr.decode()
    assert "building" in logs.stdout.decode()  # build's out.txt, unpacked for test

    build_job = by_id(shown(server, run_id))["build"]["job_id"]
    listed = server.hodei("artifacts", build_job)
    assert listed.returncode == 0, listed.stderr.decode()
    assert re.search(r"^  out\.txt  9B$", listed.stdout.decode(), re.M), listed.stdout.decode()
    target = tmp_path / "got"
    extracted = server.hodei("artifacts", build_job, "--out", str(target))
    assert extracted.returncode == 0, extracted.stderr.decode()
    assert (target / "out.txt").read_text() == "building\n"
    assert f"{target}/out.txt" in extracted.stdout.decode()


def test_a_failing_step_skips_its_dependents_exits_1_and_prints_its_log_tail(
    server: RunningServer, tmp_path: Path
) -> None:
    text = """\
name: failing
steps:
  compile:
    run: |
      for n in $(seq 1 60); do echo "noise $n"; done
      echo "boom: compiler on fire"
      exit 3
  package:
    needs: [compile]
    run: echo never
  publish:
    needs: [package]
    run: echo never either
"""
    run_id, out = run_follow(server, write(tmp_path, text))
    stdout = out.stdout.decode()
    assert out.returncode == 1, (stdout, out.stderr.decode())
    assert "compile: failed" in stdout and "exited with code 3" in stdout
    assert "boom: compiler on fire" in stdout
    assert "noise 20\n" not in stdout and "noise 22\n" in stdout  # the last 40 lines only
    assert "package: skipped: needs compile, which failed" in stdout
    assert "publish: skipped: needs package, which was skipped" in stdout
    assert out.stderr.decode().splitlines()[-1].startswith(f"run {run_id} failed: compile")

    drawing = server.hodei("pipeline", "show", run_id)
    assert drawing.returncode == 0, drawing.stderr.decode()
    lines = drawing.stdout.decode().splitlines()
    assert lines[0].startswith(f"pipeline failing, run {run_id}: failed")
    assert lines[1].startswith("├─ compile ") and "✗ failed" in lines[1]
    assert lines[2].startswith("├─ package ◀─ compile ") and "skipped" in lines[2]
    assert lines[3].startswith("└─ publish ◀─ package ") and "needs package" in lines[3]
    assert f"{run_id}.0.0" in lines[1]


def test_retry_runs_again_only_the_failed_and_skipped_steps(
    server: RunningServer, tmp_path: Path
) -> None:
    marks = tmp_path / "marks"
    marks.mkdir()
    text = f"""\
name: flaky
steps:
  build:
    run: echo built >> {marks}/build
  test:
    needs: [build]
    run: test -e {marks}/second || {{ touch {marks}/second; echo first time; exit 1; }}
  deploy:
    needs: [test]
    run: echo deployed
"""
    run_id, out = run_follow(server, write(tmp_path, text))
    assert out.returncode == 1, out.stdout.decode()
    before = by_id(shown(server, run_id))
    assert [before[s]["status"] for s in ("build", "test", "deploy")] == [
        "succeeded",
        "failed",
        "skipped",
    ]

    again = server.hodei("pipeline", "retry", run_id, "-f", timeout=90)
    assert again.returncode == 0, (again.stdout.decode(), again.stderr.decode())
    assert "retry 1, 2 step job(s) again" in again.stderr.decode()
    after = shown(server, run_id)
    rows = by_id(after)
    assert after["state"] == "succeeded" and after["generation"] == 1
    assert rows["build"]["job_id"] == before["build"]["job_id"] == f"{run_id}.0.0"
    assert rows["test"]["job_id"] == f"{run_id}.1.1"
    assert rows["deploy"]["job_id"] == f"{run_id}.2.1"
    assert (marks / "build").read_text() == "built\n"  # build ran once
    assert server.hodei("logs", run_id, "deploy").stdout == b"deployed\n"


def _lines(proc: subprocess.Popen[bytes]) -> queue.Queue[str]:
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for raw in proc.stdout:
            lines.put(raw.decode(errors="replace"))

    threading.Thread(target=pump, daemon=True).start()
    return lines


def _wait_for(lines: queue.Queue[str], needle: str, timeout: float = 60) -> list[str]:
    seen: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=max(0.05, deadline - time.monotonic()))
        except queue.Empty:
            break
        seen.append(line)
        if needle in line:
            return seen
    raise AssertionError(f"never saw {needle!r} in:\n{''.join(seen)}")


def test_a_manual_step_waits_for_its_approval_and_the_follow_goes_on(
    server: RunningServer, tmp_path: Path
) -> None:
    text = """\
name: gated
steps:
  build:
    run: echo built
  deploy:
    needs: [build]
    when: manual
    run: echo deployed
"""
    path = write(tmp_path, text)
    proc = subprocess.Popen(
        [sys.executable, "-m", "hodei", "pipeline", "run", "-f", str(path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=server.env(),
    )
    try:
        lines = _lines(proc)
        seen = _wait_for(lines, "deploy: awaiting approval: hodei pipeline approve ")
        run_id = seen[-1].split()[-2]
        view = shown(server, run_id)
        assert view["state"] == "waiting" and view["awaiting_approval"] == ["deploy"]
        drawing = server.hodei("pipeline", "show", run_id).stdout.decode()
        assert "└─ deploy ◀─ build (manual)" in drawing and "awaiting approval" in drawing
        assert f"hodei pipeline approve {run_id} deploy" in drawing
        assert proc.poll() is None  # waiting keeps following

        approved = server.hodei("pipeline", "approve", run_id, "deploy")
        assert approved.returncode == 0, approved.stderr.decode()
        assert proc.wait(60) == 0
        _wait_for(lines, "deploy: succeeded")
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
    followed = server.hodei("logs", run_id, "deploy", "-f")
    assert followed.returncode == 0 and followed.stdout == b"deployed\n"
    again = server.hodei("pipeline", "approve", run_id, "deploy")
    assert again.returncode == 1 and "has ended" in again.stderr.decode()


def test_the_list_as_json_and_as_a_table(server: RunningServer, tmp_path: Path) -> None:
    run_id, out = run_follow(server, write(tmp_path, SMALLEST))
    assert out.returncode == 0
    listed = server.hodei("pipelines", "-o", "json")
    assert listed.returncode == 0, listed.stderr.decode()
    body = json.loads(listed.stdout)
    assert set(body) == {"items", "next"}
    mine = next(item for item in body["items"] if item["id"] == run_id)
    assert mine["state"] == "succeeded" and mine["counts"] == {"succeeded": 2}
    table = server.hodei("pipelines", "--state", "succeeded").stdout.decode().splitlines()
    assert table[0].split() == ["ID", "NAME", "STATE", "STEPS", "CREATED", "REASON"]
    row = next(line for line in table if line.startswith(run_id))
    assert row.split()[1:4] == ["demo", "succeeded", "2/2"]
    failed = server.hodei("pipelines", "--state", "failed", "-o", "json")
    assert run_id not in [item["id"] for item in json.loads(failed.stdout)["items"]]


def test_a_bad_file_prints_file_line_col_exits_2_and_stores_nothing(
    server: RunningServer, tmp_path: Path
) -> None:
    text = (
        "name: bad\nsteps:\n  a:\n    nedds: [b]\n    run: x\n  b:\n    needs: [zz]\n    run: y\n"
    )
    path = write(tmp_path, text, "bad.yaml")
    before = run_count(server)
    out = server.hodei("pipeline", "run", str(path))
    assert out.returncode == 2 and out.stdout == b""
    assert out.stderr.decode().splitlines() == [
        f"{path}: 2 errors",
        f"{path}:4:5: unknown field 'nedds' in step 'a' (did you mean 'needs'?)",
        f"{path}:7:13: step 'b' needs unknown step 'zz'",
    ]
    assert run_count(server) == before
    checked = server.hodei("pipeline", "validate", str(path))
    assert checked.returncode == 2 and f"{path}:4:5: " in checked.stderr.decode()
    good = server.hodei("pipeline", "validate", str(write(tmp_path, SMALLEST)))
    assert good.returncode == 0 and b"valid (pipeline demo, 2 steps)" in good.stdout
    missing = server.hodei("pipeline", "run", str(tmp_path / "nope.yaml"))
    assert missing.returncode == 2 and b"cannot read" in missing.stderr
    assert run_count(server) == before


async def test_grpc_run_get_and_list_with_a_token(server: RunningServer) -> None:
    async with grpc.aio.insecure_channel(server.grpc) as channel:
        stub = pipelines_pb2_grpc.PipelineServiceStub(channel)
        token = server.grpc_metadata()
        run = await stub.RunPipeline(
            pipelines_pb2.RunPipelineRequest(source=SMALLEST, filename="small.yaml"),
            metadata=token,
            timeout=10,
        )
        assert run.name == "demo" and run.filename == "small.yaml"
        assert [s.id for s in run.steps] == ["build", "test"]
        assert list(run.steps[1].needs) == ["build"]
        deadline = time.monotonic() + 60
        ask = pipelines_pb2.PipelineRunRequest(run_id=run.id)
        while True:
            got = await stub.GetPipelineRun(ask, metadata=token, timeout=10)
            if got.state not in ("running", "waiting") or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
        assert got.state == "succeeded", got
        assert all(s.status == "succeeded" and s.HasField("duration_s") for s in got.steps)
        assert got.steps[0].job_id == f"{run.id}.0.0" and got.steps[0].artifact_sha256

        listed = await stub.ListPipelineRuns(
            pipelines_pb2.ListPipelineRunsRequest(state="succeeded", limit=1000),
            metadata=token,
            timeout=10,
        )
        mine = next(item for item in listed.items if item.id == run.id)
        assert dict(mine.counts) == {"succeeded": 2} and not mine.steps

        with pytest.raises(grpc.aio.AioRpcError) as bad:
            await stub.RunPipeline(
                pipelines_pb2.RunPipelineRequest(
                    source="name: x\nsteps:\n  a:\n    nedds: []\n    run: x\n", filename="x.yaml"
                ),
                metadata=token,
                timeout=10,
            )
        assert bad.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "x.yaml:4:5: unknown field 'nedds'" in (bad.value.details() or "")

        with pytest.raises(grpc.aio.AioRpcError) as anonymous:
            await stub.GetPipelineRun(ask, timeout=10)
        assert anonymous.value.code() is grpc.StatusCode.UNAUTHENTICATED
        with pytest.raises(grpc.aio.AioRpcError) as finished:
            await stub.CancelPipelineRun(ask, metadata=token, timeout=10)
        assert finished.value.code() is grpc.StatusCode.FAILED_PRECONDITION

    viewer = server.hodei("token", "create", "--role", "viewer", "--name", "pipelines-viewer")
    assert viewer.returncode == 0, viewer.stderr.decode()
    as_viewer = (("authorization", f"Bearer {viewer.stdout.decode().strip()}"),)
    async with grpc.aio.insecure_channel(server.grpc) as channel:
        stub = pipelines_pb2_grpc.PipelineServiceStub(channel)
        seen = await stub.GetPipelineRun(ask, metadata=as_viewer, timeout=10)
        assert seen.id == run.id
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.RunPipeline(
                pipelines_pb2.RunPipelineRequest(source=SMALLEST), metadata=as_viewer, timeout=10
            )
        assert refused.value.code() is grpc.StatusCode.PERMISSION_DENIED
