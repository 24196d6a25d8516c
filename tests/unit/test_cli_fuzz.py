"""Fuzzing the CLI's flags, as the REST API is fuzzed: whatever value an option gets, the
command either goes on and sends a request the server's own rules accept, or stops before
any request with exit status 2 and one `error: ...` line, never a traceback.

No server: `httpx.Client.send` is replaced by a recorder that answers every request with a
small JSON object, so everything the CLI does up to the wire (its checks, httpx's encoding)
runs for real.
"""

from __future__ import annotations

import json
import math
import ssl
import sys
import types
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from unittest import mock

import httpx
import pytest
import typer.main
import typer.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner, Result

from hodei.cli import app
from hodei.domain.jobs import JobSpec, validate_job_id, validate_spec

runner = CliRunner()
SERVER = "http://hodei.invalid:8080"
FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ANSWER = {"id": "job-1", "state": "queued", "otp": "otp-1", "token": "tok-1", "items": []}

# Values that broke or could break a parser: non-finite and huge numbers, signs, odd units,
# empty and blank text, missing '=', NUL, control characters, an undecodable byte of argv.
NASTY = [
    "",
    " ",
    "inf",
    "-inf",
    "+inf",
    "nan",
    "-nan",
    "Infinity",
    "-1",
    "-0",
    "0",
    "1e400",
    "-1e400",
    "1e99s",
    "1e308",
    "99999999999999999999",
    "-99999999999999999999",
    "12XB",
    "-5M",
    "5 M",
    "3 days",
    "1h 30m",
    "0x10",
    "1_000",
    "1,5",
    "=",
    "==",
    "=x",
    "k=",
    "k",
    "a/b",
    "a b",
    "\x00",
    "a\x00b",
    "\n",
    "\x1b[2J",
    "\udcff",
    "٣",
    "½",
    "31d",
    "2Gi",
    "1024",
    "1025",
    "101",
    "100",
    "1000000",
    "1000001",
    "10m",
    "7d",
    "8d",
    "1ms",
]


def numbers() -> st.SearchStrategy[str]:
    return st.one_of(
        st.integers().map(str),
        st.integers(min_value=-(10**30), max_value=10**30).map(str),
        st.floats(allow_nan=True, allow_infinity=True).map(repr),
        st.floats(allow_nan=False, allow_infinity=False).map(str),
        st.tuples(
            st.floats(min_value=0, max_value=1e6, allow_nan=False),
            st.sampled_from(["", "ms", "s", "m", "h", "d", "k", "M", "G", "T", "Gi", "XB"]),
        ).map(lambda pair: f"{pair[0]:g}{pair[1]}"),
    )


VALUES = st.one_of(st.sampled_from(NASTY), numbers(), st.text(max_size=30))


@pytest.fixture(autouse=True, scope="module")
def built_once() -> Iterator[None]:
    """CliRunner builds the click command from the typer app on every invoke (most of the time
    an invoke takes), and each client its TLS context: make both once for the thousands of
    invokes here."""
    if not hasattr(typer.testing, "_get_command"):  # another typer: slower, still right
        yield
        return
    command = typer.main.get_command(app)
    context = ssl.create_default_context()  # not one per client either
    with (
        mock.patch.object(typer.testing, "_get_command", lambda _app: command),
        mock.patch("hodei.cli_client.https_verify", lambda _url: context),
    ):
        yield


@contextmanager
def intercepted() -> Iterator[list[httpx.Request]]:
    """Record every request the CLI would send; answer each with ANSWER."""
    sent: list[httpx.Request] = []

    def send(self: httpx.Client, request: httpx.Request, **_: Any) -> httpx.Response:
        sent.append(request)
        if request.url.path.endswith("/logs/stream"):
            end = b'event: end\ndata: {"state": "succeeded", "exit_code": 0}\n\n'
            headers = {"Content-Type": "text/event-stream"}
            return httpx.Response(200, content=end, headers=headers, request=request)
        return httpx.Response(200, json=ANSWER, request=request)

    with mock.patch.object(httpx.Client, "send", send):
        yield sent


def invoke(args: list[str], stdin: str | None = None) -> tuple[Result, list[httpx.Request]]:
    with intercepted() as sent:
        result = runner.invoke(app, args, input=stdin)
    return result, sent


def assert_refused(result: Result, sent: list[httpx.Request]) -> None:
    """Exit 2, one `error:` line on stderr, nothing sent, no traceback."""
    assert result.exit_code == 2, (result.output, result.exception)
    assert isinstance(result.exception, SystemExit), result.exception
    assert not sent
    lines = result.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert "Traceback" not in result.output


def assert_handled(result: Result, sent: list[httpx.Request]) -> list[httpx.Request]:
    """Either accepted (exit 0, requests sent) or refused as assert_refused says."""
    if result.exit_code == 0:
        assert result.exception is None or isinstance(result.exception, SystemExit)
        assert sent
        return sent
    assert_refused(result, sent)
    return []


def body_of(request: httpx.Request) -> Any:
    return json.loads(request.content)  # strict JSON: NaN and Infinity would not be here


# --- hodei submit --------------------------------------------------------------------------

SUBMIT_OPTIONS = [
    "--cpu", "--memory", "--timeout", "--retries", "--priority", "--label", "--env",
    "--secret", "--name", "--id", "--idempotency-key",
]  # fmt: skip
SPEC_FIELDS = {
    "command", "arguments", "name", "env", "secrets", "labels", "cpu", "memory_bytes",
    "timeout_s", "max_retries", "priority",
}  # fmt: skip


def check_submitted(sent: list[httpx.Request]) -> None:
    assert len(sent) == 1
    request = sent[0]
    assert (request.method, request.url.path) == ("POST", "/api/v1/jobs")
    body = body_of(request)
    for key in ("cpu", "timeout_s"):
        assert math.isfinite(body[key])
    spec = {k: v for k, v in body.items() if k in SPEC_FIELDS}
    spec["arguments"], spec["secrets"] = tuple(spec["arguments"]), tuple(spec["secrets"])
    validate_spec(JobSpec(**spec))  # what the server checks: it would accept this job
    if "id" in body:
        validate_job_id(body["id"])


@FUZZ
@given(st.lists(st.tuples(st.sampled_from(SUBMIT_OPTIONS), VALUES), min_size=1, max_size=4))
def test_submit_options(options: list[tuple[str, str]]) -> None:
    args = ["submit", "--server", SERVER, *(f"{flag}={value}" for flag, value in options)]
    result, sent = invoke([*args, "--", "true"])
    if assert_handled(result, sent):
        check_submitted(sent)
        assert result.stdout == "job-1\n"


@FUZZ
@given(st.lists(VALUES, min_size=1, max_size=3))
def test_submit_command(command: list[str]) -> None:
    result, sent = invoke(["submit", "--server", SERVER, "--", *command])
    if assert_handled(result, sent):
        check_submitted(sent)


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(NASTY))
def test_nasty_values_never_reach_the_server_as_numbers(value: str) -> None:
    for flag in ("--cpu", "--memory", "--timeout", "--retries", "--priority"):
        result, sent = invoke(["submit", "--server", SERVER, f"{flag}={value}", "--", "true"])
        if assert_handled(result, sent):
            check_submitted(sent)


def test_the_reported_cases_are_one_line_errors() -> None:
    for flag, value in [
        ("--cpu", "inf"), ("--cpu", "nan"), ("--cpu", "-1"), ("--cpu", "1e400"),
        ("--retries", "99999999999999999999"), ("--priority", "99999999999999999999"),
        ("--memory", "12XB"), ("--memory", "-5M"), ("--memory", "9" * 400 + "T"),
        ("--timeout", "3 days"), ("--timeout", "1e99s"), ("--timeout", "inf"),
        ("--timeout", "nan"), ("--timeout", "1e400"), ("--timeout", ""), ("--memory", ""),
        ("--label", "novalue"), ("--env", "=1"), ("--secret", ""), ("--id", ""),
        ("--idempotency-key", ""), ("--name", "x" * 201),
    ]:  # fmt: skip
        result, sent = invoke(["submit", "--server", SERVER, f"{flag}={value}", "--", "true"])
        assert_refused(result, sent)


# --- the other commands that talk to the server ----------------------------------------------


def command_line(template: list[str], value: str) -> list[str]:
    """The template with `value` in place of {}: an option's value, or a positional argument
    (after `--`, so that a value starting with '-' stays a value)."""
    if "{}" in template:
        words = [w for w in template if w != "{}"]
        return [*words, "--server", SERVER, "--", value]
    return [*(w.replace("{}", value) for w in template), "--server", SERVER]


OTHER = [
    ["jobs", "--limit={}"],
    ["jobs", "--state={}"],
    ["jobs", "--output={}"],
    ["logs", "{}"],
    ["logs", "-f", "{}"],
    ["show", "{}"],
    ["cancel", "{}"],
    ["retry", "{}"],
    ["worker-otp", "--ttl={}"],
    ["worker-otp", "--label={}"],
    ["audit", "--action={}"],
    ["audit", "--target={}"],
    ["audit", "--limit={}"],
    ["token", "create", "--role={}"],
    ["token", "create", "--role=viewer", "--name={}"],
    ["token", "revoke", "{}"],
    ["secret", "set", "{}"],
    ["secret", "rm", "{}"],
    ["pki", "revoke", "{}"],
    ["workers", "--output={}"],
]


@FUZZ
@given(st.sampled_from(OTHER), VALUES)
def test_other_commands(template: list[str], value: str) -> None:
    args = command_line(template, value)
    result, sent = invoke(args, stdin="a-long-enough-secret\n")
    if not assert_handled(result, sent):
        return
    if args[0] == "worker-otp":
        body = body_of(sent[0])
        assert 0 < body["ttl_s"] <= 7 * 86400
        validate_spec(JobSpec(command="true", labels=body["labels"]))
    if args[:2] == ["secret", "set"]:
        validate_spec(JobSpec(command="true", secrets=(value,)))
        assert sent[0].url.path == f"/api/v1/secrets/{value}"


@FUZZ
@given(VALUES)
def test_server_url(value: str) -> None:
    result, sent = invoke(["jobs", f"--server={value}"])
    assert_handled(result, sent)


def test_secret_name_with_a_slash_is_refused_by_the_cli() -> None:
    for name in ("a/b", "a%2Fb", "", "1abc", "a.b"):
        result, sent = invoke(["secret", "set", name, "--server", SERVER], stdin="long-value\n")
        assert_refused(result, sent)
        assert "invalid secret name" in result.stderr


# --- the local commands: agent and server (their long-running part replaced) --------------


@contextmanager
def fake_module(name: str, function: str) -> Iterator[list[tuple[Any, ...]]]:
    calls: list[tuple[Any, ...]] = []
    module = types.ModuleType(name)
    setattr(module, function, lambda *args, **kwargs: calls.append((*args, kwargs)) or 0)
    with mock.patch.dict(sys.modules, {name: module}):
        yield calls


AGENT_OPTIONS = ["--slots", "--cancel-grace", "--label", "--server", "--token"]


@FUZZ
@given(st.sampled_from(AGENT_OPTIONS), VALUES)
def test_agent_options(flag: str, value: str) -> None:
    with fake_module("hodei.agent.main", "run_agent") as calls:
        result = runner.invoke(app, ["agent", "--token", "otp", f"{flag}={value}"], env={})
    if result.exit_code == 0:
        (call,) = calls
        assert math.isfinite(call[4]) and 0 <= call[4] <= 3600
        assert 1 <= call[3] <= 1024
        return
    assert_refused(result, [])
    assert not calls


SERVER_OPTIONS = [
    "--worker-idle", "--heartbeat-interval", "--cancel-grace", "--retry-backoff",
    "--priority-aging", "--worker-grace", "--max-output", "--cert-lifetime",
    "--max-workers", "--worker-slots", "--scheduling-policy", "--http-addr", "--grpc-addr",
    "--provider", "--docker-network", "--docker-mount",
]  # fmt: skip


@FUZZ
@given(st.sampled_from(SERVER_OPTIONS), VALUES)
def test_server_options(flag: str, value: str) -> None:
    with fake_module("hodei.server.app", "run_server") as calls:
        result = runner.invoke(
            app, ["server", "--home", "/nonexistent/hodei-fuzz", f"{flag}={value}"], env={}
        )
    if result.exit_code == 0:
        (call,) = calls
        settings_ = call[0]
        for name in ("worker_idle_s", "heartbeat_interval_s", "cancel_grace_s", "retry_backoff_s",
                     "priority_aging_s", "worker_grace_s", "cert_lifetime_s"):  # fmt: skip
            assert math.isfinite(getattr(settings_, name)) and getattr(settings_, name) >= 0
        return
    assert_refused(result, [])
    assert not calls
