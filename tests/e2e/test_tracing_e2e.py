"""OpenTelemetry traces as an operator receives them: a real server and its real local agents
export to an OTLP gRPC trace collector built here from opentelemetry-proto's service
definitions, on loopback. A job submitted with a W3C `traceparent` yields one trace whose root
is the caller's span: the job span under it, its submit, and an attempt whose children are the
queue wait, the worker's provisioning, the scheduling decision, the dispatch, the agent's run
(exported by the agent itself) and the result; the job's process sees TRACEPARENT (the run
span's). A job without one starts a trace of its own; a pipeline run is one trace with its
steps' jobs as children."""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from harness import RunningServer, start_server, stop_server
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc

pytestmark = pytest.mark.e2e


@dataclass(frozen=True)
class Got:
    service: str
    name: str
    trace_id: str
    span_id: str
    parent: str  # "" for a root
    attributes: dict[str, Any]


class Collector(trace_service_pb2_grpc.TraceServiceServicer):  # type: ignore[misc]
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.spans: list[Got] = []

    def Export(self, request: Any, context: Any) -> Any:
        with self.lock:
            for resource_spans in request.resource_spans:
                service = next(
                    (
                        a.value.string_value
                        for a in resource_spans.resource.attributes
                        if a.key == "service.name"
                    ),
                    "",
                )
                for scope in resource_spans.scope_spans:
                    for span in scope.spans:
                        attributes = {
                            a.key: a.value.string_value or a.value.int_value
                            for a in span.attributes
                        }
                        self.spans.append(
                            Got(
                                service,
                                span.name,
                                span.trace_id.hex(),
                                span.span_id.hex(),
                                span.parent_span_id.hex(),
                                attributes,
                            )
                        )
        return trace_service_pb2.ExportTraceServiceResponse()

    def of_trace(self, trace_id: str) -> list[Got]:
        with self.lock:
            return [s for s in self.spans if s.trace_id == trace_id]

    def wait(self, trace_id: str, names: set[str], timeout: float = 30) -> list[Got]:
        """The trace's spans once every name in `names` has come (bounded)."""
        deadline = time.monotonic() + timeout
        while True:
            spans = self.of_trace(trace_id)
            if names <= {s.name for s in spans}:
                return spans
            if time.monotonic() > deadline:
                have = sorted(s.name for s in spans)
                raise AssertionError(f"trace {trace_id}: wanted {sorted(names)}, have {have}")
            time.sleep(0.05)


@pytest.fixture(scope="module")
def collector() -> Iterator[tuple[Collector, int]]:
    sink = Collector()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(sink, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield sink, port
    server.stop(grace=None)


@pytest.fixture(scope="module")
def traced(
    collector: tuple[Collector, int], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningServer]:
    _, port = collector
    home = tmp_path_factory.mktemp("tracing") / "home"
    mp = pytest.MonkeyPatch()
    # Batches leave every 100 ms (the default is 5 s), in the server and the agents it starts.
    mp.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
    try:
        running = start_server(
            home,
            "--max-workers",
            "2",
            "--worker-idle",
            "20s",
            "--otlp-endpoint",
            f"http://127.0.0.1:{port}",
        )
    finally:
        mp.undo()
    yield running
    stop_server(running)


def only(spans: list[Got], name: str) -> Got:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, (name, found)
    return found[0]


ATTEMPT_CHILDREN = {"queue wait", "provision", "schedule", "dispatch", "run", "result"}


def test_a_job_continues_the_callers_trace_into_the_agent_and_the_job(
    traced: RunningServer, collector: tuple[Collector, int]
) -> None:
    sink, _ = collector
    trace_id, caller = secrets.token_hex(16), secrets.token_hex(8)
    header = {"traceparent": f"00-{trace_id}-{caller}-01"}
    with traced.http() as client:
        made = client.post(
            "/api/v1/jobs",
            json={"command": 'echo "TP=$TRACEPARENT"', "name": "traced"},
            headers=header,
        )
        assert made.status_code == 201, made.text
        job_id = made.json()["id"]
    assert traced.wait_state(job_id, {"succeeded", "failed"})["state"] == "succeeded"
    spans = sink.wait(trace_id, {"job", "submit", "attempt"} | ATTEMPT_CHILDREN)

    job = only(spans, "job")
    assert job.parent == caller  # the root of the job's spans is the caller's span
    assert job.service == "hodei-server"
    assert job.attributes["hodei.job.id"] == job_id
    assert job.attributes["hodei.state"] == "succeeded"
    assert only(spans, "submit").parent == job.span_id
    attempt = only(spans, "attempt")
    assert attempt.parent == job.span_id
    assert attempt.attributes["hodei.attempt"] == 1
    for name in ATTEMPT_CHILDREN:
        assert only(spans, name).parent == attempt.span_id, name
    run = only(spans, "run")
    assert run.service == "hodei-agent"  # exported by the agent, in the server's trace
    assert run.attributes["hodei.job.id"] == job_id
    assert only(spans, "provision").attributes["hodei.provider"] == "local"
    # The job's process got the run span's context: tools inside it continue the trace.
    log = traced.hodei("logs", job_id).stdout.decode()
    assert f"TP=00-{trace_id}-{run.span_id}-01" in log


def test_a_job_without_traceparent_starts_its_own_trace(
    traced: RunningServer, collector: tuple[Collector, int]
) -> None:
    sink, _ = collector
    with traced.http() as client:
        made = client.post("/api/v1/jobs", json={"command": 'echo "TP=$TRACEPARENT"'})
        assert made.status_code == 201, made.text
        job_id = made.json()["id"]
    assert traced.wait_state(job_id, {"succeeded", "failed"})["state"] == "succeeded"
    log = traced.hodei("logs", job_id).stdout.decode()
    tp = next(line for line in log.splitlines() if line.startswith("TP="))[3:]
    version, trace_id, span_id, flags = tp.split("-")
    assert version == "00" and int(flags, 16) & 1  # sampled
    spans = sink.wait(trace_id, {"job", "attempt", "run", "result"})
    job = only(spans, "job")
    assert job.parent == ""  # a root: no caller's context came with the submit
    assert job.attributes["hodei.job.id"] == job_id
    assert only(spans, "run").span_id == span_id


def test_a_pipeline_run_is_one_trace_with_its_steps_jobs_as_children(
    traced: RunningServer, collector: tuple[Collector, int], tmp_path: Path
) -> None:
    sink, _ = collector
    path = tmp_path / "pipeline.yaml"
    path.write_text(
        "name: traced\nsteps:\n  build:\n    run: echo building\n"
        "  test:\n    needs: [build]\n    run: echo testing\n"
    )
    out = traced.hodei("pipeline", "run", "-f", str(path), timeout=90)
    assert out.returncode == 0, out.stderr.decode()
    deadline = time.monotonic() + 30
    while True:
        with sink.lock:
            runs = [s for s in sink.spans if s.name == "pipeline run"]
        if runs or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert len(runs) == 1, runs
    run = runs[0]
    assert run.parent == "" and run.attributes["hodei.state"] == "succeeded"
    spans = sink.wait(run.trace_id, {"job", "attempt", "run"})
    deadline = time.monotonic() + 30
    while len([s for s in spans if s.name == "run"]) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
        spans = sink.of_trace(run.trace_id)
    jobs = [s for s in spans if s.name == "job"]
    assert len(jobs) == 2
    assert all(j.parent == run.span_id for j in jobs)
    assert len([s for s in spans if s.name == "run" and s.service == "hodei-agent"]) == 2
