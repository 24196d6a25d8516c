"""The gRPC job API (hodei.v1), server reflection, the demo, and ANSI colours."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from harness import READY, RunningServer

from hodei._proto.hodei.v1 import common_pb2, jobs_pb2, jobs_pb2_grpc

pytestmark = pytest.mark.e2e


def test_queue_job_definition_and_subscribe_to_its_logs(server: RunningServer) -> None:
    with server.grpc_channel() as channel:
        stub = jobs_pb2_grpc.JobExecutionServiceStub(channel)
        reply = stub.QueueJob(
            jobs_pb2.QueueJobRequest(
                job_definition=jobs_pb2.JobDefinition(
                    job_id=common_pb2.JobId(value="my-first-job"),
                    name="Hello",
                    command="echo",
                    arguments=["Hello from Hodei!"],
                ),
                queued_by="quickstart",
            ),
            timeout=10,
        )
        assert reply.success and reply.job.id == "my-first-job"
        events = list(
            stub.SubscribeLogs(
                jobs_pb2.SubscribeLogsRequest(
                    job_id=common_pb2.JobId(value="my-first-job"), follow=True
                ),
                timeout=30,
            )
        )
        assert b"".join(e.data for e in events) == b"Hello from Hodei!\n"
        assert events[-1].end and events[-1].state == "succeeded"
        status = stub.GetJobStatus(
            jobs_pb2.GetJobRequest(job_id=common_pb2.JobId(value="my-first-job")), timeout=10
        )
        assert status.state == "succeeded" and status.has_exit_code and status.exit_code == 0
        with pytest.raises(grpc.RpcError) as missing:
            stub.GetJob(jobs_pb2.GetJobRequest(job_id=common_pb2.JobId(value="nope")), timeout=10)
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
        with pytest.raises(grpc.RpcError) as dup:
            stub.QueueJob(reply_request("my-first-job"), timeout=10)
        assert dup.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        with pytest.raises(grpc.RpcError) as empty:
            stub.QueueJob(jobs_pb2.QueueJobRequest(), timeout=10)
        assert empty.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_queue_job_with_an_idempotency_key_queues_once(server: RunningServer) -> None:
    request = jobs_pb2.QueueJobRequest(
        job_definition=jobs_pb2.JobDefinition(command="echo", arguments=["idem"]),
        idempotency_key="grpc-key-1",
    )
    with server.grpc_channel() as channel:
        stub = jobs_pb2_grpc.JobExecutionServiceStub(channel)
        first = stub.QueueJob(request, timeout=10)
        again = stub.QueueJob(request, timeout=10)
        assert first.created and not again.created
        assert first.job.id == again.job.id and again.job.idempotency_key == "grpc-key-1"
        changed = jobs_pb2.QueueJobRequest(
            job_definition=jobs_pb2.JobDefinition(command="echo", arguments=["other"]),
            idempotency_key="grpc-key-1",
        )
        with pytest.raises(grpc.RpcError) as refused:
            stub.QueueJob(changed, timeout=10)
        assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "different submission" in (refused.value.details() or "")
        server.wait_state(first.job.id, {"succeeded"}, timeout=30)
        job = stub.GetJob(
            jobs_pb2.GetJobRequest(job_id=common_pb2.JobId(value=first.job.id)), timeout=10
        )
        assert [(a.number, a.state, a.exit_code) for a in job.attempt_history] == [
            (1, "succeeded", 0)
        ]
        assert job.attempt_history[0].has_exit_code


def reply_request(job_id: str) -> jobs_pb2.QueueJobRequest:
    return jobs_pb2.QueueJobRequest(
        job_definition=jobs_pb2.JobDefinition(job_id=common_pb2.JobId(value=job_id), command="true")
    )


def test_server_reflection_lists_the_services(server: RunningServer) -> None:
    with server.grpc_channel() as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        answer = next(iter(stub.ServerReflectionInfo(iter([request]), timeout=10)))
        names = {s.name for s in answer.list_services_response.service}
    assert {"hodei.v1.WorkerService", "hodei.v1.JobExecutionService"} <= names


def test_logs_keep_ansi_colours(server: RunningServer) -> None:
    out = server.hodei("submit", "-f", "--", "printf", r"\033[31mred\033[0m\n")
    assert out.returncode == 0
    assert out.stdout == b"\x1b[31mred\x1b[0m\n"


def test_demo_job_streams_its_log_live(tmp_path: Path) -> None:
    env = {**os.environ, "HODEI_HOME": str(tmp_path / "demo")}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "hodei",
            "server",
            "--demo",
            "--http-addr",
            "127.0.0.1:0",
            "--grpc-addr",
            "127.0.0.1:0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        env=env,
    )
    try:
        assert proc.stdout is not None and proc.stderr is not None
        assert READY.search(proc.stderr.readline().decode())
        lines: list[tuple[float, bytes]] = []
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            lines.append((time.monotonic(), line))
            if b"succeeded" in line or not line:
                break
        text = b"".join(line for _, line in lines)
        assert b"step 5/5" in text and b"succeeded" in text and b"\x1b[32m" in text
        steps = [t for t, line in lines if b"step " in line]
        assert steps[-1] - steps[0] > 1.0  # printed as they happened, not all at the end
    finally:
        proc.terminate()
        proc.wait(30)
        for stream in (proc.stdout, proc.stderr):
            if stream:
                stream.close()
