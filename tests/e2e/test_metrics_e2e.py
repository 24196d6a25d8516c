"""Metrics as an operator scrapes them: `--metrics-addr` without a token, /metrics on the API
port with one; after a few jobs the histograms count what ran; the Grafana dashboard and the
alert rules in examples/observability name only metrics the live server exposes."""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path

import httpx
import yaml
from harness import RunningServer
from prometheus_client.parser import text_string_to_metric_families

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "observability"
SUFFIXES = ("_bucket", "_count", "_sum", "_total", "_created")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def value(
    scraped: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
) -> float:
    return scraped.get((name, tuple(sorted(labels.items()))), 0.0)


def names_in(expressions: list[str]) -> set[str]:
    found: set[str] = set()
    for expr in expressions:
        found |= set(re.findall(r"\bhodei_[a-z_]+", expr))
    return found


def exposed(text: str) -> set[str]:
    """Every metric the exposition has (its family, with or without samples yet)."""
    names: set[str] = set()
    for family in text_string_to_metric_families(text):
        names.add(family.name)
        names |= {sample.name for sample in family.samples}
    for name in list(names):
        for suffix in SUFFIXES:
            if name.endswith(suffix):
                names.add(name[: -len(suffix)])
    return names


def test_metrics_count_the_jobs_run_and_the_examples_name_only_real_metrics(
    server_factory: type,
) -> None:
    port = free_port()
    server: RunningServer = server_factory.start(  # type: ignore[attr-defined]
        "--max-workers", "2", "--worker-idle", "30s", "--metrics-addr", f"127.0.0.1:{port}"
    )
    with server.http() as client:
        ids = [
            client.post("/api/v1/jobs", json={"command": command}).json()["id"]
            for command in ("echo one", "echo two", "echo three; exit 3")
        ]
        for job_id in ids:
            server.wait_state(job_id, {"succeeded", "failed"}, timeout=60)
        log = client.get(f"/api/v1/jobs/{ids[0]}/logs")
        assert log.status_code == 200 and b"one" in log.content
        assert client.get(f"/api/v1/jobs/{ids[0]}").status_code == 200
        with_token = client.get("/metrics")
    assert with_token.status_code == 200
    with server.http(authenticated=False) as anonymous:
        assert anonymous.get("/metrics").status_code == 401  # the API port wants a token
    # The metrics listener: no token, and nothing but /metrics.
    scrape = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10)
    assert scrape.status_code == 200
    assert httpx.get(f"http://127.0.0.1:{port}/api/v1/jobs", timeout=10).status_code == 404
    assert httpx.post(f"http://127.0.0.1:{port}/metrics", timeout=10).status_code == 405
    m = samples(scrape.text)
    assert value(m, "hodei_jobs_submitted_total") == 3
    assert value(m, "hodei_job_queue_wait_seconds_count") == 3
    assert value(m, "hodei_job_start_latency_seconds_count") == 3
    assert value(m, "hodei_attempt_run_seconds_count", outcome="succeeded") == 2
    assert value(m, "hodei_attempt_run_seconds_count", outcome="failed") == 1
    assert value(m, "hodei_attempts_total", outcome="failed", failure="job") == 1
    assert value(m, "hodei_jobs_finished_total", state="succeeded") == 2
    assert value(m, "hodei_provisioning_seconds_count", provider="local") >= 1
    assert (
        value(m, "hodei_provisioning_failures_total", provider="local", reason="start_failed") == 0
    )
    assert value(m, "hodei_store_commit_seconds_count") >= 7  # 3 creates, 9 moves, grouped
    assert value(m, "hodei_log_received_bytes_total") >= len("one\ntwo\nthree\n")
    assert value(m, "hodei_log_sent_bytes_total") >= len("one\n")
    route = "/api/v1/jobs/{job_id}"
    http = "hodei_http_request_duration_seconds_count"
    assert value(m, http, method="GET", route=route, status="2xx") >= 1  # and the polls
    assert value(m, http, method="POST", route="/api/v1/jobs", status="2xx") == 3
    assert value(m, http, method="GET", route="/metrics", status="4xx") == 0  # 401: unrouted
    assert value(m, http, method="GET", route="unmatched", status="4xx") >= 1
    workers = sum(
        v
        for (name, labels), v in m.items()
        if name == "hodei_workers" and ("provider", "local") in labels
    )
    assert workers >= 1
    agent_streams = "/hodei.v1.WorkerService/Connect"
    assert value(m, "hodei_grpc_streams_open", method=agent_streams) == workers
    assert not any(job_id in scrape.text for job_id in ids)  # never a job id as a label
    # Every metric the dashboard and the alert rules name is exposed.
    dashboard = json.loads((EXAMPLES / "grafana-dashboard.json").read_text())
    exprs = [t["expr"] for panel in dashboard["panels"] for t in panel["targets"]]
    exprs += [v["query"] for v in dashboard["templating"]["list"] if v["type"] == "query"]
    rules = yaml.safe_load((EXAMPLES / "prometheus-alerts.yml").read_text())
    alerts = [rule["expr"] for group in rules["groups"] for rule in group["rules"]]
    assert {"HodeiQueueWaitHigh", "HodeiWorkersLost", "HodeiProvisioningFailing"} <= {
        rule["alert"] for group in rules["groups"] for rule in group["rules"]
    }
    named = names_in(exprs + alerts)
    assert len(named) >= 10
    assert named - exposed(scrape.text) == set()


def test_json_log_format_writes_one_object_a_line(server_factory: type) -> None:
    server: RunningServer = server_factory.start(  # type: ignore[attr-defined]
        "--max-workers", "1", "--log-format", "json"
    )
    with server.http() as client:
        job_id = client.post("/api/v1/jobs", json={"command": "true"}).json()["id"]
    server.wait_state(job_id, {"succeeded"}, timeout=60)
    logged = [json.loads(line) for line in server.stderr if line.startswith("{")]
    registered = [e for e in logged if e["message"].startswith("worker ") and "worker_id" in e]
    assert registered, server.stderr
    assert all({"time", "level", "logger", "message"} <= set(e) for e in logged)
    assert registered[0]["worker_id"].startswith("local-")
