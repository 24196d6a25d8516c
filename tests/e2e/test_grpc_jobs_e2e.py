"""CancelJob and RetryJob of the gRPC JobExecutionService, against a real server and its agents:
what they do to a job and its process, and the status codes they answer when they may not."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import psutil
import pytest
from harness import RunningServer

from hodei._proto.hodei.v1 import common_pb2, jobs_pb2, jobs_pb2_grpc

pytestmark = pytest.mark.e2e

TERMINAL = {"succeeded", "failed", "cancelled", "timed_out"}
Metadata = tuple[tuple[str, str], ...]


@pytest.fixture
def stub(server: RunningServer) -> Iterator[jobs_pb2_grpc.JobExecutionServiceStub]:
    """The job API over a channel whose calls carry the admin token."""
    with server.grpc_channel() as channel:
        yield jobs_pb2_grpc.JobExecutionServiceStub(channel)


def ask(job_id: str) -> jobs_pb2.GetJobRequest:
    return jobs_pb2.GetJobRequest(job_id=common_pb2.JobId(value=job_id))


def queue(
    stub: jobs_pb2_grpc.JobExecutionServiceStub, command: str, *arguments: str
) -> jobs_pb2.Job:
    reply = stub.QueueJob(
        jobs_pb2.QueueJobRequest(
            job_definition=jobs_pb2.JobDefinition(command=command, arguments=list(arguments)),
            queued_by="grpc-e2e",
        ),
        timeout=10,
    )
    assert reply.success and reply.created
    job: jobs_pb2.Job = reply.job
    return job


def wait_state(
    stub: jobs_pb2_grpc.JobExecutionServiceStub,
    job_id: str,
    states: set[str],
    timeout: float = 30,
) -> jobs_pb2.JobStatus:
    """Poll GetJobStatus until the job is in one of `states`."""
    deadline = time.monotonic() + timeout
    while True:
        status: jobs_pb2.JobStatus = stub.GetJobStatus(ask(job_id), timeout=10)
        if status.state in states:
            return status
        if time.monotonic() > deadline:
            raise AssertionError(f"job {job_id} still {status.state} after {timeout}s")
        time.sleep(0.05)


def refused(
    call: object, request: jobs_pb2.GetJobRequest, metadata: Metadata = ()
) -> grpc.RpcError:
    """The error a unary call answers with (the test fails if it succeeds)."""
    assert callable(call)
    with pytest.raises(grpc.RpcError) as error:
        call(request, timeout=10, metadata=metadata)
    return error.value


def sleeps_of(server: RunningServer, timeout: float = 10) -> list[psutil.Process]:
    """The `sleep` processes the server's agents run (each test has its own server)."""
    deadline = time.monotonic() + timeout
    while True:
        found = []
        for p in psutil.Process(server.proc.pid).children(recursive=True):
            try:
                if p.name() == "sleep":
                    found.append(p)
            except psutil.NoSuchProcess:
                continue
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


def make_token(server: RunningServer, role: str) -> str:
    out = server.hodei("token", "create", "--role", role, "--name", f"grpc-{role}")
    assert out.returncode == 0, out.stderr.decode()
    return out.stdout.decode().strip()


def audit(server: RunningServer, action: str) -> list[dict[str, str]]:
    with server.http() as client:
        answer = client.get("/api/v1/audit", params={"action": action, "limit": 1000})
    assert answer.status_code == 200, answer.text
    items: list[dict[str, str]] = answer.json()["items"]
    return items


def test_cancel_job_ends_a_running_sleep_and_its_process(
    server: RunningServer, stub: jobs_pb2_grpc.JobExecutionServiceStub
) -> None:
    job = queue(stub, "sleep", "300")
    wait_state(stub, job.id, {"running"})
    victims = sleeps_of(server)
    assert len(victims) == 1 and victims[0].cmdline() == ["sleep", "300"]
    t0 = time.monotonic()
    answer = stub.CancelJob(ask(job.id), timeout=10)
    assert answer.id == job.id and answer.state in {"running", "cancelled"}
    status = wait_state(stub, job.id, TERMINAL, timeout=15)
    assert status.state == "cancelled" and time.monotonic() - t0 < 10
    _, alive = psutil.wait_procs(victims, timeout=5)
    assert not [p for p in alive if p.status() != psutil.STATUS_ZOMBIE]
    assert sleeps_of(server, timeout=0) == []
    shown = stub.GetJob(ask(job.id), timeout=10)
    assert shown.state == "cancelled" and shown.finished_at
    assert [(a.number, a.state) for a in shown.attempt_history] == [(1, "cancelled")]
    entries = [e for e in audit(server, "job.cancel") if e["target"] == job.id]
    assert len(entries) == 1 and entries[0]["actor"].startswith("token:")


def test_cancel_of_a_finished_job_is_a_failed_precondition(
    stub: jobs_pb2_grpc.JobExecutionServiceStub,
) -> None:
    job = queue(stub, "true")
    wait_state(stub, job.id, TERMINAL)
    error = refused(stub.CancelJob, ask(job.id))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert f"job {job.id} already ended (succeeded)" in (error.details() or "")
    shown = stub.GetJob(ask(job.id), timeout=10)
    assert shown.state == "succeeded" and shown.has_exit_code and shown.exit_code == 0
    assert [a.state for a in shown.attempt_history] == ["succeeded"]


def test_retry_job_of_a_failed_job_runs_a_second_attempt(
    server: RunningServer, stub: jobs_pb2_grpc.JobExecutionServiceStub, tmp_path: Path
) -> None:
    # Fails the first time, succeeds once the first attempt has left its mark.
    mark = tmp_path / "first-attempt-ran"
    script = (
        f'if [ -e "{mark}" ]; then echo second attempt; exit 0; fi\n'
        f'touch "{mark}"; echo first attempt; exit 3'
    )
    job = queue(stub, "sh", "-c", script)
    status = wait_state(stub, job.id, TERMINAL)
    assert status.state == "failed" and status.has_exit_code and status.exit_code == 3
    answer = stub.RetryJob(ask(job.id), timeout=10)
    assert answer.id == job.id and answer.state in {"queued", "assigned", "running", "succeeded"}
    status = wait_state(stub, job.id, TERMINAL)
    assert status.state == "succeeded" and status.has_exit_code and status.exit_code == 0
    shown = stub.GetJob(ask(job.id), timeout=10)
    assert shown.attempts == 2
    assert [(a.number, a.state, a.exit_code) for a in shown.attempt_history] == [
        (1, "failed", 3),
        (2, "succeeded", 0),
    ]
    logs = stub.SubscribeLogs(jobs_pb2.SubscribeLogsRequest(job_id=ask(job.id).job_id), timeout=30)
    assert b"".join(e.data for e in logs) == b"second attempt\n"  # the latest attempt's log
    entries = [e for e in audit(server, "job.retry") if e["target"] == job.id]
    assert [e["detail"] for e in entries] == ["attempt 1"]


def test_retry_of_a_running_job_is_a_failed_precondition(
    stub: jobs_pb2_grpc.JobExecutionServiceStub,
) -> None:
    job = queue(stub, "sleep", "300")
    wait_state(stub, job.id, {"running"})
    error = refused(stub.RetryJob, ask(job.id))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "only a finished job can be retried" in (error.details() or "")
    shown = stub.GetJob(ask(job.id), timeout=10)
    assert shown.state == "running" and shown.attempts == 1
    stub.CancelJob(ask(job.id), timeout=10)
    assert wait_state(stub, job.id, TERMINAL, timeout=15).state == "cancelled"


def test_list_jobs_filters_by_name_and_labels(
    stub: jobs_pb2_grpc.JobExecutionServiceStub,
) -> None:
    def named(name: str, **labels: str) -> str:
        definition = jobs_pb2.JobDefinition(command="true", name=name, labels=labels)
        request = jobs_pb2.QueueJobRequest(job_definition=definition, queued_by="grpc-e2e")
        job: jobs_pb2.Job = stub.QueueJob(request, timeout=10).job
        return job.id

    build = named("Nightly build", team="core")  # no worker has the label: it waits, listed
    named("nightly test")
    named("release build")
    by_name = stub.ListJobs(jobs_pb2.ListJobsRequest(name="NIGHTLY"), timeout=10)
    assert sorted(j.name for j in by_name.items) == ["Nightly build", "nightly test"]
    both = stub.ListJobs(jobs_pb2.ListJobsRequest(name="build", labels=["team=core"]), timeout=10)
    assert [j.id for j in both.items] == [build]
    for bad in (
        jobs_pb2.ListJobsRequest(labels=["team"]),
        jobs_pb2.ListJobsRequest(pipeline="not-a-run"),
        jobs_pb2.ListJobsRequest(state="sleeping"),
    ):
        with pytest.raises(grpc.RpcError) as error:
            stub.ListJobs(bad, timeout=10)
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT, error.value.details()
    stub.CancelJob(ask(build), timeout=10)


def test_unknown_job_ids_are_not_found(stub: jobs_pb2_grpc.JobExecutionServiceStub) -> None:
    for call in (stub.CancelJob, stub.RetryJob):
        error = refused(call, ask("no-such-job"))
        assert error.code() == grpc.StatusCode.NOT_FOUND, error.details()


def test_cancel_and_retry_need_the_submitter_role(
    server: RunningServer, stub: jobs_pb2_grpc.JobExecutionServiceStub
) -> None:
    viewer = (("authorization", f"Bearer {make_token(server, 'viewer')}"),)
    submitter = (("authorization", f"Bearer {make_token(server, 'submitter')}"),)
    done = queue(stub, "false")
    wait_state(stub, done.id, TERMINAL)
    running = queue(stub, "sleep", "300")
    wait_state(stub, running.id, {"running"})
    with grpc.insecure_channel(server.grpc) as channel:  # calls carry only the given metadata
        plain = jobs_pb2_grpc.JobExecutionServiceStub(channel)
        for call, job_id in ((plain.CancelJob, running.id), (plain.RetryJob, done.id)):
            anonymous = refused(call, ask(job_id))
            assert anonymous.code() == grpc.StatusCode.UNAUTHENTICATED
            forbidden = refused(call, ask(job_id), viewer)
            assert forbidden.code() == grpc.StatusCode.PERMISSION_DENIED
            assert "role viewer may not do this" in (forbidden.details() or "")
        # Refused calls change nothing; the viewer may still look.
        assert plain.GetJob(ask(running.id), timeout=10, metadata=viewer).state == "running"
        shown = plain.GetJob(ask(done.id), timeout=10, metadata=viewer)
        assert shown.state == "failed" and shown.attempts == 1
        # A submitter may do both.
        plain.CancelJob(ask(running.id), timeout=10, metadata=submitter)
        plain.RetryJob(ask(done.id), timeout=10, metadata=submitter)
    assert wait_state(stub, running.id, TERMINAL, timeout=15).state == "cancelled"
    wait_state(stub, done.id, TERMINAL)
    assert stub.GetJob(ask(done.id), timeout=10).attempts == 2
    assert any("grpc-viewer" in e["actor"] for e in audit(server, "auth.forbidden"))
