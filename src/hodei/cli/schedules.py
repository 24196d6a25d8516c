"""Schedule commands: `hodei schedule create|show|pause|resume|rm|run-now` and `hodei
schedules` (the list, with the next fire times).

    hodei schedule create nightly --cron '0 3 * * 1-5' --tz Europe/Madrid -- ./backup.sh
    hodei schedule create sync --cron @hourly --template sync --param target=prod
    hodei schedule create ci --cron '0 2 * * *' --pipeline ci.yaml --overlap forbid
"""

from __future__ import annotations

from typing import Annotated, Any

import typer

from hodei.cli.common import (
    DEFAULT_URL,
    Output,
    OutputOpt,
    ServerOpt,
    app,
    client,
    fail,
    group,
    guarded,
    items_of,
)

schedule_app = group("schedule", "Run jobs, pipelines and templates on a cron schedule.")

NameArg = Annotated[str, typer.Argument(help="Schedule name.")]


def _path(name: str, suffix: str = "") -> str:
    from urllib.parse import quote

    return f"/api/v1/schedules/{quote(name, safe='')}{suffix}"


def _target(s: dict[str, Any]) -> str:
    from hodei.cli_render import clean

    target = s.get("target") or {}
    kind = target.get("kind")
    if kind == "template":
        params = " ".join(f"{k}={v}" for k, v in (target.get("params") or {}).items())
        return clean(f"template {target.get('template')} {params}".strip())
    if kind == "pipeline":
        first = str(target.get("pipeline") or "").splitlines()[:1]
        return clean(f"pipeline {first[0] if first else ''}")
    words = [str(target.get("command") or ""), *map(str, target.get("arguments") or [])]
    return clean(" ".join(words))


def _state(s: dict[str, Any]) -> str:
    from hodei.cli_render import clean

    if s.get("paused"):
        return clean(f"paused: {s.get('pause_reason') or ''}".rstrip(": "))
    return "active"


def _fire_line(f: dict[str, Any]) -> list[object]:
    from hodei.cli_render import clean, dash

    started = f.get("job_id") or f.get("run_id")
    what = clean(f.get("outcome"))
    if f.get("covers", 1) > 1:
        what += f" x{f['covers']}"
    return [
        clean(f.get("scheduled_at")),
        what + (" (run now)" if f.get("manual") else ""),
        dash(clean(started) if started else None),
        dash(clean(f.get("result"))),
        clean(f.get("reason")),
    ]


def schedules_table(items: list[dict[str, Any]]) -> str:
    from hodei.cli_render import clean, dash, table, truncate

    rows = []
    for s in items:
        fires = s.get("fires") or []
        last = fires[0] if fires else None
        last_text = f"{last.get('outcome')} {last.get('result') or ''}".strip() if last else None
        rows.append(
            [
                clean(s.get("name")),
                clean(f"{s.get('cron')} {s.get('timezone')}"),
                dash(clean(s.get("next_fire"))),
                truncate(_state(s), 40),
                dash(clean(last_text)),
                truncate(_target(s), 40),
            ]
        )
    return table(["NAME", "CRON", "NEXT FIRE (UTC)", "STATE", "LAST FIRE", "RUNS"], rows)


def schedule_detail(s: dict[str, Any]) -> str:
    from hodei.cli_render import clean, table

    lines = [
        f"name:       {clean(s.get('name'))}",
        f"cron:       {clean(s.get('cron'))} ({clean(s.get('timezone'))})",
        f"runs:       {_target(s)}",
        f"state:      {_state(s)}",
        f"overlap:    {clean(s.get('overlap'))}",
        f"catch-up:   {clean(s.get('catch_up'))} (limit {s.get('catch_up_limit')})",
    ]
    if s.get("starting_deadline_s"):
        lines.append(f"deadline:   {s['starting_deadline_s']}s")
    if s.get("pause_after"):
        lines.append(f"pause after {s['pause_after']} failed runs ({s.get('failures')} so far)")
    for at in s.get("upcoming_local") or []:
        lines.append(f"next:       {clean(at)}")
    fires = s.get("fires") or []
    if fires:
        lines.append("")
        lines.append(
            table(["DUE", "OUTCOME", "STARTED", "RESULT", "REASON"], map(_fire_line, fires))
        )
    return "\n".join(lines)


def _print(body: Any, output: Output) -> None:
    import orjson

    if output is Output.json:
        typer.echo(orjson.dumps(body, option=orjson.OPT_INDENT_2).decode())
    elif isinstance(body, dict):
        typer.echo(schedule_detail(body))
    else:
        fail("unexpected answer from the server (not a schedule)")


@schedule_app.command("create")
@guarded
def create(
    name: NameArg,
    command: Annotated[
        list[str] | None,
        typer.Argument(help="-- CMD ARGS... (one string runs under bash -c).", show_default=False),
    ] = None,
    cron: Annotated[str, typer.Option(help="Cron expression: 5 fields or @hourly, @daily...")] = "",
    tz: Annotated[str, typer.Option("--tz", help="IANA time zone of the expression.")] = "UTC",
    template: Annotated[
        str | None, typer.Option(help="Run this template.", show_default=False)
    ] = None,
    pipeline: Annotated[
        str | None, typer.Option(help="Run this pipeline file.", show_default=False)
    ] = None,
    param: Annotated[
        list[str] | None,
        typer.Option("--param", "-p", help="A template or pipeline param KEY=VALUE."),
    ] = None,
    overlap: Annotated[
        str, typer.Option(help="While the previous run is active: allow, forbid or replace.")
    ] = "allow",
    catch_up: Annotated[
        str, typer.Option(help="Fires missed while down or paused: skip, once or all.")
    ] = "skip",
    catch_up_limit: Annotated[
        int, typer.Option(min=1, max=100, help="With --catch-up all: at most this many.")
    ] = 10,
    deadline: Annotated[
        str | None,
        typer.Option(
            help="Skip a fire that would start later than this (30s, 5m).", show_default=False
        ),
    ] = None,
    pause_after: Annotated[
        int, typer.Option(min=0, help="Pause after this many failed runs in a row (0: never).")
    ] = 0,
    env: Annotated[list[str] | None, typer.Option("--env", "-e", help="Env var K=V.")] = None,
    label: Annotated[
        list[str] | None, typer.Option("--label", "-l", help="Required worker label k=v.")
    ] = None,
    timeout: Annotated[str | None, typer.Option(help="The job's time limit.")] = None,
    image: Annotated[
        str | None, typer.Option(help="Container image of the job.", show_default=False)
    ] = None,
    output: OutputOpt = Output.table,
    server: ServerOpt = DEFAULT_URL,
) -> None:
    """Create a schedule for a command (after --), a --template or a --pipeline file."""
    from hodei.cli.common import check_labels, parse_opt, parse_pairs
    from hodei.cli.pipeline_render import parse_params
    from hodei.domain.jobs import parse_duration

    if not cron:
        raise typer.BadParameter("give the schedule's --cron expression", param_hint="'--cron'")
    targets = [t for t in (command, template, pipeline) if t]
    if len(targets) != 1:
        fail("give exactly one of: a command after --, --template NAME or --pipeline FILE", 2)
    body: dict[str, Any] = {
        "name": name,
        "cron": cron,
        "timezone": tz,
        "overlap": overlap,
        "catch_up": catch_up,
        "catch_up_limit": catch_up_limit,
        "pause_after": pause_after,
        "params": parse_params(param),
    }
    if deadline is not None:
        body["starting_deadline_s"] = parse_opt(parse_duration, deadline, "--deadline")
    if command:
        job: dict[str, Any] = {"command": command[0], "arguments": command[1:]}
        job["env"] = parse_pairs(env, "--env", "KEY")
        job["labels"] = check_labels(parse_pairs(label, "--label", "KEY"))
        if timeout is not None:
            job["timeout_s"] = parse_opt(parse_duration, timeout, "--timeout")
        if image is not None:
            job["image"] = image
        body["job"] = job
    elif template:
        body["template"] = template
    else:
        from hodei.cli.pipelines import read_file

        assert pipeline is not None
        body["pipeline"] = read_file(pipeline)
    with client(server) as api:
        _print(api.call("POST", "/api/v1/schedules", json_body=body), output)


@app.command("schedules")
@guarded
def schedules(output: OutputOpt = Output.table, server: ServerOpt = DEFAULT_URL) -> None:
    """List schedules with their next fire times, state and last fire."""
    import orjson

    with client(server) as api:
        body = api.call("GET", "/api/v1/schedules")
    if output is Output.json:
        typer.echo(orjson.dumps(body, option=orjson.OPT_INDENT_2).decode())
        return
    items = items_of(body)
    typer.echo(schedules_table(items) if items else "no schedules")


@schedule_app.command("show")
@guarded
def show(name: NameArg, output: OutputOpt = Output.table, server: ServerOpt = DEFAULT_URL) -> None:
    """A schedule: its settings, next fire times and last fires (started, skipped and why)."""
    with client(server) as api:
        _print(api.call("GET", _path(name)), output)


@schedule_app.command("pause")
@guarded
def pause(
    name: NameArg,
    reason: Annotated[str, typer.Option(help="Why (shown with the schedule).")] = "",
    server: ServerOpt = DEFAULT_URL,
) -> None:
    """Stop firing until resumed (missed fires then follow the catch-up policy)."""
    with client(server) as api:
        api.call("POST", _path(name, "/pause"), json_body={"reason": reason})
    typer.echo(f"schedule {name} paused")


@schedule_app.command("resume")
@guarded
def resume(name: NameArg, server: ServerOpt = DEFAULT_URL) -> None:
    """Fire again; clears the pause's reason and the failed runs counted."""
    with client(server) as api:
        api.call("POST", _path(name, "/resume"))
    typer.echo(f"schedule {name} resumed")


@schedule_app.command("rm")
@guarded
def rm(name: NameArg, server: ServerOpt = DEFAULT_URL) -> None:
    """Delete a schedule and its fire history (runs it started are kept)."""
    with client(server) as api:
        api.request("DELETE", _path(name))
    typer.echo(f"schedule {name} deleted")


@schedule_app.command("run-now")
@guarded
def run_now(name: NameArg, server: ServerOpt = DEFAULT_URL) -> None:
    """Fire once now; prints the job (or pipeline run) id it started."""
    from hodei.cli_render import clean

    with client(server) as api:
        fire = api.call("POST", _path(name, "/run"))
    if not isinstance(fire, dict):
        fail("unexpected answer from the server (not a fire)")
    started = fire.get("job_id") or fire.get("run_id")
    if fire.get("outcome") == "failed" or not started:
        fail(f"schedule {name}: {clean(fire.get('reason'))}")
    typer.echo(clean(started))
