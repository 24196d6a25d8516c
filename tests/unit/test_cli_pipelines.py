"""The pipeline commands of the CLI: the DAG drawing, the live view's lines, params, exit
statuses, and the commands against a recorded fake server (httpx's send replaced)."""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from unittest import mock

import httpx
import pytest
import typer
from typer.testing import CliRunner, Result

from hodei.cli import app
from hodei.cli.pipeline_follow import LiveFrame, RunView
from hodei.cli.pipeline_render import (
    ASCII,
    changes,
    draw_dag,
    duration,
    newly_failed,
    parse_params,
    run_exit,
    runs_table,
    show_run,
    steps_done,
    tail_lines,
)

runner = CliRunner()
RUN = "r0123456789abcdef0"
SERVER = "http://hodei.invalid:8080"


def step(
    sid: str,
    index: int,
    status: str = "pending",
    *,
    needs: tuple[str, ...] = (),
    name: str | None = None,
    matrix: dict[str, str] | None = None,
    when: str = "on_success",
    duration_s: float | None = None,
    reason: str = "",
    job: bool | None = None,
    generation: int = 0,
) -> dict[str, Any]:
    has_job = status not in ("pending", "skipped") if job is None else job
    return {
        "id": sid,
        "step": name or sid,
        "index": index,
        "status": status,
        "needs": list(needs),
        "when": when,
        "matrix": matrix or {},
        "job_id": f"{RUN}.{index}.{generation}" if has_job else None,
        "attempt": 1 if has_job else 0,
        "generation": generation,
        "reason": reason,
        "outputs": {},
        "cached_from": None,
        "artifact": None,
        "started_at": "2026-01-01T00:00:00.000Z" if has_job else None,
        "finished_at": None,
        "duration_s": duration_s,
    }


def view(*steps: dict[str, Any], state: str = "running", **fields: Any) -> dict[str, Any]:
    return {
        "id": RUN,
        "name": "demo",
        "state": state,
        "reason": "",
        "generation": 0,
        "version": 1,
        "awaiting_approval": [],
        "counts": {},
        "steps": list(steps),
        **fields,
    }


# --- the DAG drawing ----------------------------------------------------------------------


def test_draw_dag_in_index_order_with_needs_state_duration_job_and_reason() -> None:
    shown = view(
        step("test", 1, "failed", needs=("build",), duration_s=0.41, reason="exited with code 1"),
        step("build", 0, "succeeded", duration_s=1.234),
        step("deploy", 2, "skipped", needs=("test",), reason="needs test, which failed"),
        state="failed",
        reason="test failed: exited with code 1",
    )
    assert show_run(shown).splitlines() == [
        f"pipeline demo, run {RUN}: failed (test failed: exited with code 1)",
        f"├─ build           ✓ succeeded  1.2s  {RUN}.0.0",
        f"├─ test ◀─ build   ✗ failed     0.4s  {RUN}.1.0  exited with code 1",
        "└─ deploy ◀─ test  - skipped       -  -                       needs test, which failed",
    ]


def test_matrix_jobs_are_grouped_under_their_step() -> None:
    rows = [
        step("build", 0, "succeeded", duration_s=2),
        step("t[py=3.11]", 1, "succeeded", name="t", needs=("build",), matrix={"py": "3.11"}),
        step("t[py=3.12]", 2, "running", name="t", needs=("build",), matrix={"py": "3.12"}),
        step("pack", 3, needs=("t", "build")),
    ]
    lines = draw_dag(view(*rows), now=None)
    labels = [
        "├─ build",
        "├─ t ◀─ build",
        "│  ├─ [py=3.11]",
        "│  └─ [py=3.12]",
        "└─ pack ◀─ t, build",
    ]
    width = max(map(len, labels))
    assert [line[:width].rstrip() for line in lines] == labels
    assert "1 running, 1 succeeded" in lines[1]
    assert f"{RUN}.2.0" in lines[3] and "● running" in lines[3]


def test_a_running_step_shows_its_time_so_far() -> None:
    row = step("build", 0, "running")
    now = 1767225600.0 + 75  # 2026-01-01T00:01:15Z
    assert "1m15s" in draw_dag(view(row), now=now)[0]
    assert "  -  " in draw_dag(view(row), now=None)[0]


def test_awaiting_approval_is_named_with_the_command() -> None:
    rows = [step("build", 0, "succeeded"), step("deploy", 1, needs=("build",), when="manual")]
    text = show_run(view(*rows, state="waiting", awaiting_approval=["deploy"]))
    assert "└─ deploy ◀─ build (manual)  ? awaiting approval" in text
    assert text.splitlines()[-1] == (f"deploy awaits approval: hodei pipeline approve {RUN} deploy")


def test_ascii_drawing_and_untrusted_text_is_neutralised() -> None:
    rows = [
        step("a", 0, "failed", reason="bad \x1b[2J\u202eend"),
        step("b", 1, needs=("a",)),
    ]
    lines = draw_dag(view(*rows), glyphs=ASCII)
    assert lines[0].split()[:3] == ["|-", "a", "failed"]
    assert lines[1].split()[:5] == ["`-", "b", "<-", "a", "pending"]
    assert "\x1b" not in lines[0] and "\\x1b[2J\\u202eend" in lines[0]
    assert all(ch.isascii() for line in lines for ch in line)


def test_a_view_without_steps_draws_nothing() -> None:
    assert draw_dag({"id": RUN}) == []
    assert draw_dag({"steps": "nonsense"}) == []


# --- params, exit statuses, small formats --------------------------------------------------


def test_parse_params() -> None:
    assert parse_params(["a=1", "b=x=y", " c =", "d= spaced "]) == {
        "a": "1",
        "b": "x=y",
        "c": "",
        "d": " spaced ",
    }
    assert parse_params(None) == {}
    for bad in (["novalue"], ["=1"], [" =1"], ["a=1", "a=2"]):
        with pytest.raises(typer.BadParameter):
            parse_params(bad)


def test_run_exit_statuses() -> None:
    assert run_exit("succeeded") == 0
    assert run_exit("failed") == 1
    assert run_exit("cancelled") == 3
    assert run_exit("what") == 1


def test_durations() -> None:
    assert [duration(v) for v in (0, 1.25, 59.94, 75, 3725, None, -1, True)] == [
        "0.0s",
        "1.2s",
        "59.9s",
        "1m15s",
        "1h02m",
        "-",
        "-",
        "-",
    ]


def test_tail_lines() -> None:
    data = b"".join(b"line %d\n" % i for i in range(100)) + b"last"
    assert tail_lines(data, 3) == b"line 98\nline 99\nlast"
    assert tail_lines(b"", 40) == b""


def test_runs_table_counts_done_of_total() -> None:
    run = {
        "id": RUN,
        "name": "demo",
        "state": "running",
        "counts": {"succeeded": 2, "skipped": 1, "running": 1, "pending": 2},
        "created_at": None,
        "reason": "",
    }
    assert steps_done(run) == "3/6"
    assert steps_done({}) == "-"
    table = runs_table([run]).splitlines()
    assert table[0].split() == ["ID", "NAME", "STATE", "STEPS", "CREATED", "REASON"]
    assert table[1].split() == [RUN, "demo", "running", "3/6", "-", "-"]


# --- the live view's lines ------------------------------------------------------------------


def test_changes_one_line_per_change() -> None:
    first = view(step("build", 0, "running"), step("test", 1, needs=("build",)))
    assert changes(None, first) == [f"build: running (job {RUN}.0.0)"]
    assert changes(first, first) == []
    second = view(
        step("build", 0, "succeeded", duration_s=0.5),
        step("test", 1, "failed", needs=("build",), duration_s=0.1, reason="exited with code 1"),
    )
    assert changes(first, second) == [
        f"build: succeeded in 0.5s (job {RUN}.0.0)",
        f"test: failed in 0.1s (job {RUN}.1.0): exited with code 1",
    ]
    assert [row["id"] for row in newly_failed(first, second)] == ["test"]
    assert newly_failed(second, second) == []


def test_changes_name_the_approval_and_the_run_waiting() -> None:
    before = view(step("build", 0, "running"), step("deploy", 1, when="manual"))
    after = view(
        step("build", 0, "succeeded"),
        step("deploy", 1, when="manual"),
        state="waiting",
        awaiting_approval=["deploy"],
    )
    assert changes(before, after) == [
        f"run {RUN}: waiting",
        f"build: succeeded (job {RUN}.0.0)",
        f"deploy: awaiting approval: hodei pipeline approve {RUN} deploy",
    ]


def test_a_retried_step_is_a_change_even_with_the_same_status() -> None:
    before = view(step("a", 0, "failed", generation=0))
    after = view(step("a", 0, "failed", generation=1))
    assert changes(before, after) == [f"a: failed (job {RUN}.0.1)"]
    assert [row["job_id"] for row in newly_failed(before, after)] == [f"{RUN}.0.1"]


class _Tty(io.StringIO):
    encoding = "utf-8"

    def isatty(self) -> bool:
        return True


def test_live_frame_redraws_in_place_and_cuts_to_the_terminal() -> None:
    out = _Tty()
    frame = LiveFrame(out, size=lambda: (20, 6))
    frame.draw(["one", "x" * 50])
    assert out.getvalue() == "one\n" + "x" * 19 + "\n"
    frame.draw(["a", "b", "c", "d", "e", "f"], above="log\n")
    tail = out.getvalue().split("one\n" + "x" * 19 + "\n", 1)[1]
    assert tail == "\x1b[2F\x1b[Jlog\na\nb\nc\n... and 3 more lines\n"
    assert frame.height == 4


def test_run_view_off_a_terminal_prints_changes_and_the_failed_steps_log_tail() -> None:
    out = io.StringIO()
    tails: list[str] = []

    def tail(job_id: str) -> bytes:
        tails.append(job_id)
        return b"boom\nlast words"

    shown = RunView(mock.Mock(), out, tty=False, tail=tail)
    shown.on_view(view(step("a", 0, "running")))
    shown.on_view(view(step("a", 0, "failed", reason="exited with code 3"), state="failed"))
    shown.on_view(view(step("a", 0, "failed", reason="exited with code 3"), state="failed"))
    assert tails == [f"{RUN}.0.0"]
    assert out.getvalue().splitlines() == [
        f"a: running (job {RUN}.0.0)",
        f"a: failed (job {RUN}.0.0): exited with code 3",
        f"--- a: failed (job {RUN}.0.0): exited with code 3; the last 40 lines of its log:",
        "boom",
        "last words",
        "---",
    ]


# --- the commands against a fake server ---------------------------------------------------

Answer = Callable[[httpx.Request], httpx.Response]


@contextmanager
def fake_server(routes: dict[tuple[str, str], Answer]) -> Iterator[list[httpx.Request]]:
    sent: list[httpx.Request] = []

    def send(self: httpx.Client, request: httpx.Request, **_: Any) -> httpx.Response:
        sent.append(request)
        answer = routes.get((request.method, request.url.path))
        if answer is None:
            body = {"error": {"code": "not_found", "message": "not found"}}
            return httpx.Response(404, json=body, request=request)
        response = answer(request)
        response.request = request
        return response

    with mock.patch.object(httpx.Client, "send", send):
        yield sent


def invoke(*args: str, stdin: str | None = None) -> Result:
    return runner.invoke(app, [*args, "--server", SERVER], input=stdin)


def sse(*views: tuple[str, dict[str, Any]]) -> Answer:
    body = b"".join(
        f"event: {kind}\nid: {i}\ndata: {json.dumps(v)}\n\n".encode()
        for i, (kind, v) in enumerate(views)
    )
    headers = {"Content-Type": "text/event-stream"}
    return lambda _r: httpx.Response(200, content=b": hi\n\n" + body, headers=headers)


@pytest.fixture
def pipeline_file(tmp_path: Path) -> Path:
    path = tmp_path / "ci.yaml"
    path.write_text("name: demo\nsteps:\n  a:\n    run: echo hi\n")
    return path


def test_run_prints_the_run_id_alone(pipeline_file: Path) -> None:
    created = view(step("a", 0, "running"))
    routes = {("POST", "/api/v1/pipelines"): lambda _r: httpx.Response(201, json=created)}
    with fake_server(routes) as sent:
        result = invoke("pipeline", "run", str(pipeline_file), "-p", "who=me", "--no-cache")
    assert result.exit_code == 0, result.output
    assert result.stdout == RUN + "\n"
    body = json.loads(sent[0].content)
    assert body == {
        "source": pipeline_file.read_text(),
        "filename": "ci.yaml",
        "params": {"who": "me"},
        "no_cache": True,
    }


def test_a_refused_file_prints_file_line_column_and_exits_2(pipeline_file: Path) -> None:
    error = {
        "error": {
            "code": "invalid_request",
            "message": "ci.yaml: 2 errors ...",
            "issues": [
                {"line": 3, "column": 5, "message": "unknown field 'nedds'"},
                {"line": 7, "column": 13, "message": "cycle in needs: a -> b -> a"},
            ],
        }
    }
    routes = {("POST", "/api/v1/pipelines"): lambda _r: httpx.Response(400, json=error)}
    with fake_server(routes):
        result = invoke("pipeline", "run", str(pipeline_file))
    assert result.exit_code == 2
    assert result.stdout == ""
    assert result.stderr.splitlines() == [
        f"{pipeline_file}: 2 errors",
        f"{pipeline_file}:3:5: unknown field 'nedds'",
        f"{pipeline_file}:7:13: cycle in needs: a -> b -> a",
    ]


def test_a_missing_or_huge_file_is_refused_before_any_request(tmp_path: Path) -> None:
    huge = tmp_path / "huge.yaml"
    huge.write_bytes(b"#" * ((1 << 20) + 1))
    with fake_server({}) as sent:
        missing = invoke("pipeline", "run", str(tmp_path / "nope.yaml"))
        big = invoke("pipeline", "run", str(huge))
        bad_param = invoke("pipeline", "run", str(huge), "--param", "novalue")
        validate = invoke("pipeline", "validate", str(tmp_path))
    assert not sent
    assert missing.exit_code == 2 and "cannot read" in missing.stderr
    assert big.exit_code == 2 and "larger than 1 MiB" in big.stderr
    assert bad_param.exit_code == 2 and "--param" in bad_param.stderr
    assert validate.exit_code == 2 and "cannot read" in validate.stderr


@pytest.mark.parametrize(("state", "code"), [("succeeded", 0), ("failed", 1), ("cancelled", 3)])
def test_run_follow_exits_with_the_runs_result(pipeline_file: Path, state: str, code: int) -> None:
    start = view(step("a", 0, "running"))
    status = "succeeded" if state == "succeeded" else "failed"
    end = view(step("a", 0, status, reason="why"), state=state, reason="a: why")
    routes = {
        ("POST", "/api/v1/pipelines"): lambda _r: httpx.Response(201, json=start),
        ("GET", f"/api/v1/pipelines/{RUN}/events"): sse(("run", start), ("end", end)),
        ("GET", f"/api/v1/jobs/{RUN}.0.0/logs"): lambda _r: httpx.Response(200, content=b"oops\n"),
    }
    with fake_server(routes):
        result = invoke("pipeline", "run", "-f", str(pipeline_file))
    assert result.exit_code == code, result.output
    assert f"a: {status} (job {RUN}.0.0): why" in result.stdout
    assert ("oops" in result.stdout) is (status == "failed")
    assert result.stderr.splitlines()[-1] == f"run {RUN} {state}: a: why"


def test_show_draws_and_json_is_verbatim() -> None:
    shown = view(step("a", 0, "succeeded", duration_s=1))
    raw = json.dumps(shown).encode()
    routes = {("GET", f"/api/v1/pipelines/{RUN}"): lambda _r: httpx.Response(200, content=raw)}
    with fake_server(routes):
        text = invoke("pipeline", "show", RUN)
        as_json = invoke("pipeline", "show", RUN, "-o", "json")
    assert text.exit_code == 0 and "a  ✓ succeeded  1.0s" in text.stdout
    assert as_json.stdout.encode() == raw + b"\n"


def test_a_bad_run_id_is_refused_before_any_request() -> None:
    with fake_server({}) as sent:
        for args in (
            ("pipeline", "show", "job-1"),
            ("pipeline", "cancel", "r123"),
            ("pipeline", "approve", "rX123456789abcdef0", "deploy"),
            ("logs", "job-1", "build"),
        ):
            result = invoke(*args)
            assert result.exit_code == 2, (args, result.output)
            assert result.stderr.startswith("error: ")
    assert not sent


def test_logs_of_a_step_resolve_its_job() -> None:
    row = step("t[py=3.12]", 2, "succeeded", name="t")
    path = f"/api/v1/pipelines/{RUN}/steps/t[py=3.12]"
    routes = {
        ("GET", path): lambda _r: httpx.Response(200, json=row),
        ("GET", f"/api/v1/jobs/{RUN}.2.0/logs"): lambda _r: httpx.Response(200, content=b"ok\n"),
        ("GET", f"/api/v1/pipelines/{RUN}/steps/p"): lambda _r: httpx.Response(
            200, json=step("p", 3)
        ),
    }
    with fake_server(routes) as sent:
        result = invoke("logs", RUN, "t[py=3.12]")
        pending = invoke("logs", RUN, "p")
    assert result.exit_code == 0 and result.stdout == "ok\n"
    assert sent[0].url.raw_path.decode().endswith("/steps/t%5Bpy%3D3.12%5D")
    assert pending.exit_code == 1 and "has no job yet (pending)" in pending.stderr


def test_list_validate_cancel_retry_approve() -> None:
    listed = {"items": [{**view(), "counts": {"succeeded": 1, "pending": 1}}], "next": None}
    retried = view(step("a", 0, "running", generation=1), generation=1, counts={"running": 1})
    valid = {"valid": True, "issues": [], "name": "demo", "steps": 1}
    routes = {
        ("GET", "/api/v1/pipelines"): lambda _r: httpx.Response(200, json=listed),
        ("POST", "/api/v1/pipelines/validate"): lambda _r: httpx.Response(200, json=valid),
        ("POST", f"/api/v1/pipelines/{RUN}/cancel"): lambda _r: httpx.Response(
            200, json=view(state="cancelled")
        ),
        ("POST", f"/api/v1/pipelines/{RUN}/retry"): lambda _r: httpx.Response(200, json=retried),
        ("POST", f"/api/v1/pipelines/{RUN}/approve"): lambda _r: httpx.Response(200, json=view()),
    }
    with fake_server(routes) as sent:
        table = invoke("pipelines", "--state", "running")
        assert invoke("pipelines", "--state", "asleep").exit_code == 2
        checked = invoke("pipeline", "validate", "-", stdin="name: demo\n")
        cancelled = invoke("pipeline", "cancel", RUN)
        retry = invoke("pipeline", "retry", RUN)
        approved = invoke("pipeline", "approve", RUN, "deploy")
    assert "1/2" in table.stdout and sent[0].url.params["state"] == "running"
    assert checked.exit_code == 0 and checked.stdout == "-: valid (pipeline demo, 1 steps)\n"
    assert cancelled.stdout == f"run {RUN} cancelled\n"
    assert retry.stdout == f"run {RUN}: retry 1, 1 step job(s) again\n"
    assert approved.stdout == f"run {RUN}: step deploy approved\n"
    assert json.loads(sent[-1].content) == {"step": "deploy"}


def test_validate_lists_the_issues_and_exits_2(pipeline_file: Path) -> None:
    answer = {"valid": False, "issues": [{"line": 1, "column": 1, "message": "bad"}]}
    routes = {("POST", "/api/v1/pipelines/validate"): lambda _r: httpx.Response(200, json=answer)}
    with fake_server(routes):
        result = invoke("pipeline", "validate", str(pipeline_file))
    assert result.exit_code == 2
    assert result.stderr.splitlines() == [f"{pipeline_file}: 1 error", f"{pipeline_file}:1:1: bad"]


def test_help_lists_the_pipeline_commands() -> None:
    top = runner.invoke(app, ["--help"]).stdout
    for command in ("pipeline", "pipelines", "artifacts"):
        assert command in top
    sub = runner.invoke(app, ["pipeline", "--help"]).stdout
    for command in ("run", "show", "cancel", "retry", "approve", "validate"):
        assert command in sub


# --- hodei artifacts ------------------------------------------------------------------------

JOB = f"{RUN}.0.0"


def tar_of(*members: tuple[str, bytes]) -> bytes:
    import tarfile

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as archive:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def artifact_routes(data: bytes, checksum: str | None = None) -> dict[tuple[str, str], Answer]:
    import hashlib

    digest = hashlib.sha256(data).hexdigest()
    info = {
        "job_id": JOB,
        "attempt": 1,
        "sha256": digest,
        "size": len(data),
        "created_at": "2026-01-01T00:00:00.000Z",
    }
    headers = {"X-Checksum-Sha256": checksum or digest, "Content-Type": "application/x-tar"}
    return {
        ("GET", f"/api/v1/jobs/{JOB}/artifacts"): lambda _r: httpx.Response(200, json=info),
        ("GET", f"/api/v1/jobs/{JOB}/artifacts/archive"): lambda _r: httpx.Response(
            200, content=data, headers=headers
        ),
    }


def test_artifacts_lists_the_archive_and_extracts_it(tmp_path: Path) -> None:
    data = tar_of(("out.txt", b"building\n"), ("dist/app.whl", b"x" * 2048))
    with fake_server(artifact_routes(data)) as sent:
        listed = invoke("artifacts", JOB)
        extracted = invoke("artifacts", JOB, "--out", str(tmp_path / "got"), "--attempt", "1")
    assert listed.exit_code == 0, listed.output
    assert "sha256:   " in listed.stdout and "  out.txt  9B" in listed.stdout
    assert "  dist/app.whl  2.0KiB" in listed.stdout
    assert extracted.exit_code == 0, extracted.output
    assert (tmp_path / "got" / "out.txt").read_bytes() == b"building\n"
    assert (tmp_path / "got" / "dist" / "app.whl").stat().st_size == 2048
    assert f"{tmp_path}/got/out.txt  9B" in extracted.stdout
    assert sent[-1].url.params["attempt"] == "1"


def test_artifacts_refuses_a_wrong_checksum_and_a_member_out_of_the_dir(tmp_path: Path) -> None:
    good = tar_of(("out.txt", b"building\n"))
    with fake_server(artifact_routes(good, checksum="0" * 64)):
        wrong = invoke("artifacts", JOB, "--out", str(tmp_path / "a"))
    assert wrong.exit_code == 1 and "checksum" in wrong.stderr
    assert not (tmp_path / "a").exists()
    evil = tar_of(("fine.txt", b"ok"), ("../escaped.txt", b"gotcha"))
    with fake_server(artifact_routes(evil)):
        refused = invoke("artifacts", JOB, "--out", str(tmp_path / "b"))
    assert refused.exit_code == 1 and "cannot read or extract" in refused.stderr
    assert not (tmp_path / "escaped.txt").exists()
    assert not (tmp_path / "b" / "fine.txt").exists()  # checked before anything is written
