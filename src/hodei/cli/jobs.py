"""Job commands: submit, logs, jobs (the list), show, cancel, retry."""

from __future__ import annotations

import sys
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
    guarded,
    list_params,
    parse_opt,
    parse_pairs,
)

if TYPE_CHECKING:
    from hodei.cli_client import Client


def job_end_exit(job_id: str, state: str, exit_code: int | None, status: int) -> NoReturn:
    if state != "succeeded":
        detail = f" (exit code {exit_code})" if exit_code is not None else ""
        typer.echo(f"job {job_id} {state}{detail}", err=True)
    raise typer.Exit(status)


def follow(api: Client, job_id: str, raw: bool = False) -> NoReturn:
    """Stream a job's log to stdout live, then exit with the job's exit status."""
    from hodei.cli_client import follow_logs
    from hodei.cli_render import write_text

    tail = {"newline": True}
    output = LogOutput(raw)

    def write(data: bytes) -> None:
        if data:
            output.write(data)
            tail["newline"] = data.endswith(b"\n")

    end = follow_logs(api, job_id, write)
    output.close()
    if not tail["newline"] and not raw and sys.stdout.isatty():
        write_text("\n")
    job_end_exit(job_id, end.state, end.exit_code, end.process_exit)


class LogOutput:
    """Log bytes to stdout: the exact stored bytes (`--raw`), or by default their terminal
    view (`domain.terminal`: colours kept, every other control shown inert), the same for
    `logs` and `logs -f` however the bytes arrive."""

    def __init__(self, raw: bool) -> None:
        from hodei.domain.terminal import TerminalFilter

        self.filter = None if raw else TerminalFilter()

    def write(self, data: bytes) -> None:
        from hodei.cli_render import write_bytes

        write_bytes(data if self.filter is None else self.filter.feed(data))

    def close(self) -> None:
        from hodei.cli_render import write_bytes

        if self.filter is not None:
            write_bytes(self.filter.flush())


RawOpt = Annotated[
    bool,
    typer.Option(
        "--raw", help="Write the log's exact bytes (escape sequences and all), not the safe view."
    ),
]


def _read_script(path: str) -> str:
    from pathlib import Path

    try:
        data = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    except OSError as exc:
        raise typer.BadParameter(
            f"cannot read {path}: {exc.strerror}", param_hint="'--script'"
        ) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise typer.BadParameter(f"{path} is not UTF-8 text", param_hint="'--script'") from None


def _job_body(command: list[str] | None, script: str | None, **fields: Any) -> dict[str, Any]:
    if script is not None and command:
        raise typer.BadParameter("give either --script or a command after --, not both")
    if script is not None:
        text, arguments = _read_script(script), []
    elif command:
        text, arguments = command[0], command[1:]
    else:
        raise typer.BadParameter("nothing to run: give a command after -- or --script FILE")
    if not text.strip():
        raise typer.BadParameter("the command is empty")
    return {"command": text, "arguments": arguments, **fields}


@app.command(context_settings={"allow_interspersed_args": False})
@guarded
def submit(
    command: Annotated[
        list[str] | None,
        typer.Argument(
            help="CMD ARGS... One string runs under bash -c; several are exec'd directly.",
            show_default=False,
        ),
    ] = None,
    name: Annotated[str, typer.Option(help="Job name.")] = "",
    label: Annotated[
        list[str] | None, typer.Option("--label", "-l", help="Required worker label k=v.")
    ] = None,
    cpu: Annotated[float, typer.Option(help="CPU cores requested.")] = 0.0,
    memory: Annotated[str | None, typer.Option(help="Memory requested (512M, 2G).")] = None,
    timeout: Annotated[str | None, typer.Option(help="Time limit (30s, 5m, 1h).")] = None,
    retries: Annotated[int, typer.Option(help="Retries after a failure.")] = 0,
    infra_retries: Annotated[
        int | None,
        typer.Option(
            help="Runs again after attempts lost to the platform (default: the server's).",
            show_default=False,
        ),
    ] = None,
    no_infra_retry: Annotated[
        bool,
        typer.Option(
            "--no-infra-retry", help="Never run again by itself: a platform fault fails it."
        ),
    ] = False,
    priority: Annotated[int, typer.Option(help="Higher runs first.")] = 0,
    image: Annotated[
        str | None,
        typer.Option(
            help="Container image to run in (default: the worker image).", show_default=False
        ),
    ] = None,
    env: Annotated[list[str] | None, typer.Option("--env", "-e", help="Env var K=V.")] = None,
    secret: Annotated[
        list[str] | None, typer.Option(help="Secret NAME, seen by the job as env var NAME.")
    ] = None,
    job_id: Annotated[str | None, typer.Option("--id", help="Job id (default: generated).")] = None,
    idempotency_key: Annotated[
        str | None,
        typer.Option(help="Submit at most once: a repeat with this key gets the same job."),
    ] = None,
    script: Annotated[
        str | None, typer.Option(help="Run this script file ('-' reads stdin).")
    ] = None,
    follow_log: Annotated[
        bool, typer.Option("--follow", "-f", help="Stream the log; exit with the job's code.")
    ] = False,
    raw: RawOpt = False,
    server: ServerOpt = DEFAULT_URL,
) -> None:
    """Submit a job: `hodei submit [opts] -- CMD ARGS...` or `hodei submit --script FILE`."""
    from hodei.cli_client import check_sendable
    from hodei.domain.jobs import (
        JobSpec,
        parse_duration,
        parse_size,
        validate_idempotency_key,
        validate_job_id,
        validate_spec,
    )

    body = _job_body(
        command,
        script,
        name=name,
        labels=parse_pairs(label, "--label", "KEY"),
        env=parse_pairs(env, "--env", "NAME"),
        secrets=list(dict.fromkeys(secret or [])),
        cpu=cpu,
        memory_bytes=parse_opt(parse_size, memory, "--memory") if memory is not None else 0,
        timeout_s=parse_opt(parse_duration, timeout, "--timeout") if timeout is not None else 0.0,
        max_retries=retries,
        priority=priority,
    )
    if infra_retries is not None:
        body["infra_retries"] = infra_retries
    if no_infra_retry:
        body["no_infra_retry"] = True
    if image is not None:
        body["image"] = image
    # The server's own rules, here at the edge: a bad flag is an error before any request.
    check_sendable("", body)  # first: the spec's size checks encode its text as UTF-8
    validate_spec(
        JobSpec(
            command=body["command"],
            arguments=tuple(body["arguments"]),
            name=name,
            env=body["env"],
            secrets=tuple(body["secrets"]),
            labels=body["labels"],
            cpu=cpu,
            memory_bytes=body["memory_bytes"],
            timeout_s=body["timeout_s"],
            max_retries=retries,
            infra_retries=infra_retries,
            no_infra_retry=no_infra_retry,
            priority=priority,
            image=image,
        )
    )
    if job_id is not None:
        body["id"] = parse_opt(validate_job_id, job_id, "--id")
    if idempotency_key is not None:
        body["idempotency_key"] = parse_opt(
            validate_idempotency_key, idempotency_key, "--idempotency-key"
        )
    with client(server) as api:
        job = api.call("POST", "/api/v1/jobs", json_body=body)
        new_id = str(job.get("id", "")) if isinstance(job, dict) else ""
        if not new_id:
            fail("the server accepted the job but sent no id")
        if not follow_log:
            typer.echo(new_id)
            return
        typer.echo(f"job {new_id} submitted", err=True)
        follow(api, new_id, raw)


@app.command()
@guarded
def logs(
    job: Annotated[str, typer.Argument(help="Job id, or a pipeline run id and a STEP.")],
    step: Annotated[
        str | None,
        typer.Argument(help="With a run id: the step (or a matrix job's id) whose log to show."),
    ] = None,
    follow_log: Annotated[
        bool, typer.Option("--follow", "-f", help="Stream live; exit with the job's code.")
    ] = False,
    raw: RawOpt = False,
    server: ServerOpt = DEFAULT_URL,
) -> None:
    """Print a job's log (colours kept, other escape sequences and controls shown inert;
    --raw: the exact bytes); -f follows it until the job ends. `hodei logs RUN STEP`: the
    log of a pipeline run's step."""
    from hodei.cli_client import job_path
    from hodei.domain.pipelines.runs import valid_run_id

    if step is not None and not valid_run_id(job):
        raise typer.BadParameter(
            f"{job[:40]!r} is not a pipeline run id (r and 17 hex digits); give a STEP only "
            "after a run id",
            param_hint="JOB",
        )
    if step is not None and not 1 <= len(step) <= 300:
        raise typer.BadParameter("must be 1-300 characters", param_hint="STEP")
    with client(server) as api:
        if step is not None:
            from hodei.cli.pipelines import step_job

            job = step_job(api, job, step)
        job = job_arg(job)
        if follow_log:
            follow(api, job, raw)
        output = LogOutput(raw)
        api.download(
            job_path(job, "/logs"),
            output.write,
            headers={"Accept": "application/octet-stream"},
            not_found=f"no job {job!r}",
        )
        output.close()


@app.command()
@guarded
def jobs(
    state: Annotated[str | None, typer.Option(help="Only jobs in this state.")] = None,
    name: Annotated[
        str | None, typer.Option(help="Only jobs whose name contains this (any case).")
    ] = None,
    label: Annotated[
        list[str] | None,
        typer.Option("--label", "-l", help="Only jobs with label k=v (repeat: all of them)."),
    ] = None,
    pipeline: Annotated[
        str | None, typer.Option(help="Only the step jobs of this pipeline run.")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, max=10000, help="At most this many.")] = 50,
    output: OutputOpt = Output.table,
    server: ServerOpt = DEFAULT_URL,
) -> None:
    """List jobs, newest first; only those meeting every filter given."""
    from hodei.cli_render import jobs_table
    from hodei.domain.job_filter import check_labels, check_name, check_pipeline, parse_labels
    from hodei.domain.jobs import JobState

    params = list_params(limit, state, JobState)
    # The server's own checks, here at the edge: a bad filter is an error before any request.
    if name:
        params["name"] = parse_opt(check_name, name, "--name")
    if label:
        parse_pairs(label, "--label", "KEY")
        parse_opt(lambda _: check_labels(parse_labels(label)), "", "--label")
        params["label"] = label
    if pipeline:
        params["pipeline"] = parse_opt(check_pipeline, pipeline, "--pipeline")
    items = get_items(server, "/api/v1/jobs", output, params)
    if items is not None:
        typer.echo(jobs_table(items) if items else "no jobs")


def job_arg(job: str) -> str:
    """A JOB argument: a well-formed job id, or an error before any request."""
    from functools import partial

    from hodei.domain.jobs import validate_job_id

    return parse_opt(partial(validate_job_id, step=None), job, "JOB")


def _job_request(server: str, method: str, job: str, suffix: str = "") -> tuple[bytes, Any]:
    from hodei.cli_client import decode_json, job_path

    job = job_arg(job)
    with client(server) as api:
        response = api.request(method, job_path(job, suffix), not_found=f"no job {job!r}")
        body = decode_json(response)
    if not isinstance(body, dict):
        fail("unexpected answer from the server (not a job object)")
    return response.content, body


@app.command()
@guarded
def show(
    job: Annotated[str, typer.Argument(help="Job id.")],
    output: OutputOpt = Output.table,
    server: ServerOpt = DEFAULT_URL,
) -> None:
    """Show every field of a job, including why it waits or failed."""
    from hodei.cli_render import job_detail, write_json_verbatim

    raw, body = _job_request(server, "GET", job)
    if output is Output.json:
        write_json_verbatim(raw)
    else:
        typer.echo(job_detail(body))


@app.command()
@guarded
def cancel(
    job: Annotated[str, typer.Argument(help="Job id.")],
    server: ServerOpt = DEFAULT_URL,
) -> None:
    """Cancel a job (a running one gets SIGTERM, then SIGKILL after the grace period)."""
    from hodei.cli_render import clean

    _, body = _job_request(server, "POST", job, "/cancel")
    state = clean(body.get("state"))
    if state == "cancelled":
        typer.echo(f"job {clean(job)} cancelled")
    else:
        typer.echo(f"job {clean(job)}: cancel requested (state: {state})")


@app.command()
@guarded
def retry(
    job: Annotated[str, typer.Argument(help="Job id.")],
    server: ServerOpt = DEFAULT_URL,
) -> None:
    """Queue a finished job again; prints its id."""
    from hodei.cli_render import clean

    _, body = _job_request(server, "POST", job, "/retry")
    new_id = clean(body.get("id") or job)
    typer.echo(new_id)
    typer.echo(f"job {new_id} {clean(body.get('state'))}", err=True)
