"""Pipeline commands: `hodei pipeline run|show|cancel|retry|approve|validate` and
`hodei pipelines` (the list).

`pipeline run FILE` prints the new run's id alone (for scripts); with -f it follows the run
live and exits with its result: 0 succeeded, 1 failed, 3 cancelled (see pipeline_render).
A file the server refuses prints one `FILE:LINE:COL: message` line per problem on stderr and
exits 2, with nothing stored.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from hodei.cli.common import (
    DEFAULT_URL,
    Output,
    OutputOpt,
    ServerOpt,
    app,
    client,
    fail,
    get_items,
    group,
    guarded,
    list_params,
)

if TYPE_CHECKING:
    from hodei.cli_client import Client

MAX_FILE = 1 << 20  # the server reads files of at most 1 MiB
MAX_FILENAME = 255

pipeline_app = group("pipeline", "Run pipeline files and look after their runs.")

RunArg = Annotated[str, typer.Argument(help="Pipeline run id (r + 17 hex digits).")]
FileArg = Annotated[str, typer.Argument(help="Pipeline file ('-' reads stdin).")]
FollowOpt = Annotated[
    bool,
    typer.Option(
        "--follow", "-f", help="Follow the run live; exit 0 succeeded, 1 failed, 3 cancelled."
    ),
]


def read_file(path: str) -> str:
    """The pipeline file's text, or an error (exit 2) before any request."""
    try:
        if path == "-":
            data = sys.stdin.buffer.read(MAX_FILE + 1)
        else:
            with open(path, "rb") as handle:
                data = handle.read(MAX_FILE + 1)
    except OSError as exc:
        fail(f"cannot read {path}: {exc.strerror or exc}", 2)
    if len(data) > MAX_FILE:
        fail(f"{path} is larger than 1 MiB, the most a pipeline file may be", 2)
    if not data.strip():
        fail(f"{path} is empty", 2)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        fail(f"{path} is not UTF-8 text (byte {exc.start})", 2)


def filename_of(path: str) -> str:
    """What the run records as its file: the name without the local directories."""
    name = "stdin.yaml" if path == "-" else Path(path).name
    return name[:MAX_FILENAME] or "pipeline.yaml"


def run_arg(run_id: str) -> str:
    from hodei.domain.pipelines.runs import valid_run_id

    if not valid_run_id(run_id):
        raise typer.BadParameter(
            f"{run_id[:40]!r} is not a pipeline run id (r and 17 hex digits)", param_hint="RUN"
        )
    return run_id


def print_issues(path: str, issues: list[Any]) -> None:
    from hodei.cli_render import clean

    for issue in issues:
        if isinstance(issue, dict):
            line, column = issue.get("line", 0), issue.get("column", 0)
            typer.echo(f"{clean(path)}:{line}:{column}: {clean(issue.get('message'))}", err=True)


def _refused(path: str, exc: Exception) -> NoReturn:
    """A 400 to a file: its problems, one per line (exit 2); anything else goes on up."""
    from hodei.cli_client import ApiError

    if isinstance(exc, ApiError) and exc.status == 400:
        if exc.issues:
            count = len(exc.issues)
            typer.echo(f"{path}: {count} error{'s' if count != 1 else ''}", err=True)
            print_issues(path, exc.issues)
            raise typer.Exit(2)
        fail(exc.message, 2)  # its params, or a secret it names: bad input all the same
    raise exc


def view_of(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict) or not isinstance(body.get("id"), str):
        fail("unexpected answer from the server (not a pipeline run)")
    return body


def follow(api: Client, run_id: str) -> NoReturn:
    """Follow the run live on stdout, then exit with its result."""
    from hodei.cli.pipeline_follow import RunView, follow_run
    from hodei.cli.pipeline_render import run_exit
    from hodei.cli_render import clean

    shown = RunView(api)
    try:
        final = follow_run(api, run_id, shown.on_view, shown.on_idle)
    except KeyboardInterrupt:
        typer.echo(
            f"\nstopped following run {run_id}; it goes on (`hodei pipeline cancel {run_id}` "
            "stops it)",
            err=True,
        )
        raise typer.Exit(130) from None
    state = final.get("state")
    reason = f": {clean(final.get('reason'))}" if final.get("reason") else ""
    typer.echo(f"run {run_id} {clean(state)}{reason}", err=True)
    raise typer.Exit(run_exit(state))


@pipeline_app.command("run")
@guarded
def run(
    file: FileArg,
    follow_run: FollowOpt = False,
    param: Annotated[
        list[str] | None, typer.Option("--param", "-p", help="A param KEY=VALUE (repeatable).")
    ] = None,
    no_cache: Annotated[
        bool, typer.Option("--no-cache", help="Run every step, whatever the cache holds.")
    ] = False,
    server: ServerOpt = DEFAULT_URL,
) -> None:
    """Start a run of a pipeline file; prints its id (-f: follow it live)."""
    from hodei.cli.pipeline_render import parse_params
    from hodei.cli_client import ApiError

    params = parse_params(param)
    source = read_file(file)
    body: dict[str, Any] = {"source": source, "filename": filename_of(file), "params": params}
    if no_cache:
        body["no_cache"] = True
    with client(server) as api:
        try:
            view = view_of(api.call("POST", "/api/v1/pipelines", json_body=body))
        except ApiError as exc:
            _refused(file, exc)
        if not follow_run:
            typer.echo(view["id"])
            return
        typer.echo(f"run {view['id']} of pipeline {view.get('name')} started", err=True)
        follow(api, view["id"])


@pipeline_app.command("validate")
@guarded
def validate(file: FileArg, server: ServerOpt = DEFAULT_URL) -> None:
    """Check a pipeline file on the server without running it: exit 0 valid, 2 not."""
    from hodei.cli_client import ApiError
    from hodei.cli_render import clean

    body = {"source": read_file(file), "filename": filename_of(file)}
    with client(server) as api:
        try:
            answer = api.call("POST", "/api/v1/pipelines/validate", json_body=body)
        except ApiError as exc:
            _refused(file, exc)
    if not isinstance(answer, dict):
        fail("unexpected answer from the server (not a validation)")
    if answer.get("valid") is True:
        steps = answer.get("steps")
        typer.echo(f"{clean(file)}: valid (pipeline {clean(answer.get('name'))}, {steps} steps)")
        return
    issues = answer.get("issues")
    issues = issues if isinstance(issues, list) else []
    count = len(issues)
    typer.echo(f"{clean(file)}: {count} error{'s' if count != 1 else ''}", err=True)
    print_issues(file, issues)
    raise typer.Exit(2)


@pipeline_app.command("show")
@guarded
def show(run_id: RunArg, output: OutputOpt = Output.table, server: ServerOpt = DEFAULT_URL) -> None:
    """Draw a run's DAG: each step with its needs, state, duration, job and reason."""
    import time

    from hodei.cli.pipeline_follow import glyphs_for, run_path
    from hodei.cli.pipeline_render import show_run
    from hodei.cli_client import decode_json
    from hodei.cli_render import write_json_verbatim

    run_id = run_arg(run_id)
    with client(server) as api:
        response = api.request("GET", run_path(run_id), not_found=f"no pipeline run {run_id!r}")
    if output is Output.json:
        write_json_verbatim(response.content)
        return
    view = view_of(decode_json(response))
    typer.echo(show_run(view, time.time(), glyphs_for(sys.stdout)))


def _act(server: str, run_id: str, action: str, body: Any = None) -> tuple[Client, dict[str, Any]]:
    from hodei.cli.pipeline_follow import run_path

    run_id = run_arg(run_id)
    api = client(server)
    try:
        answer = api.call(
            "POST",
            run_path(run_id, f"/{action}"),
            json_body=body,
            not_found=f"no pipeline run {run_id!r}",
        )
    except BaseException:
        api.close()
        raise
    return api, view_of(answer)


@pipeline_app.command("cancel")
@guarded
def cancel(run_id: RunArg, server: ServerOpt = DEFAULT_URL) -> None:
    """Cancel a run: nothing more starts, running steps are cancelled."""
    from hodei.cli_render import clean

    api, view = _act(server, run_id, "cancel")
    api.close()
    state = clean(view.get("state"))
    if state == "cancelled":
        typer.echo(f"run {clean(run_id)} cancelled")
    else:
        typer.echo(f"run {clean(run_id)}: cancel requested (state: {state})")


@pipeline_app.command("retry")
@guarded
def retry(run_id: RunArg, follow_run: FollowOpt = False, server: ServerOpt = DEFAULT_URL) -> None:
    """Run again the failed, cancelled and skipped steps of a finished run (and those after
    them); succeeded steps keep their results."""
    from hodei.cli_render import clean

    api, view = _act(server, run_id, "retry")
    with api:
        counts = view.get("counts")
        counts = counts if isinstance(counts, dict) else {}
        again = sum(v for k, v in counts.items() if k in ("pending", "running") and type(v) is int)
        typer.echo(
            f"run {clean(run_id)}: retry {clean(view.get('generation'))}, "
            f"{again} step job(s) again",
            err=follow_run,
        )
        if follow_run:
            follow(api, run_id)


@pipeline_app.command("approve")
@guarded
def approve(
    run_id: RunArg,
    step: Annotated[str, typer.Argument(help="The manual step to let start.")],
    follow_run: FollowOpt = False,
    server: ServerOpt = DEFAULT_URL,
) -> None:
    """Approve a manual step of a run, so that it may start."""
    from hodei.cli_render import clean

    if not 1 <= len(step) <= 64:
        raise typer.BadParameter("must be 1-64 characters", param_hint="STEP")
    api, _ = _act(server, run_id, "approve", {"step": step})
    with api:
        typer.echo(f"run {clean(run_id)}: step {clean(step)} approved", err=follow_run)
        if follow_run:
            follow(api, run_id)


@app.command("pipelines")
@guarded
def pipelines(
    state: Annotated[str | None, typer.Option(help="Only runs in this state.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="At most this many.")] = 50,
    output: OutputOpt = Output.table,
    server: ServerOpt = DEFAULT_URL,
) -> None:
    """List pipeline runs, newest first."""
    from hodei.cli.pipeline_render import runs_table
    from hodei.domain.pipelines.runs import RunState

    params = list_params(limit, state, RunState)
    items = get_items(server, "/api/v1/pipelines", output, params)
    if items is not None:
        typer.echo(runs_table(items) if items else "no pipeline runs")


def step_job(api: Client, run_id: str, step: str) -> str:
    """The job of a run's step (a step name, or a matrix job's id), for `hodei logs`."""
    from hodei.cli.pipeline_follow import run_path
    from hodei.cli_render import clean

    row = api.call(
        "GET",
        run_path(run_id, "/steps/" + _quoted(step)),
        not_found=f"no pipeline run {run_id!r}",
    )
    job_id = row.get("job_id") if isinstance(row, dict) else None
    if not isinstance(job_id, str) or not job_id:
        status = clean(row.get("status")) if isinstance(row, dict) else "unknown"
        fail(f"step {clean(step)} of run {run_id} has no job yet ({status})")
    return job_id


def _quoted(text: str) -> str:
    from urllib.parse import quote

    return quote(text, safe="")
