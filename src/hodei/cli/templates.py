"""Template commands: `hodei template create|run|show|rm` and `hodei templates`.

hodei template create backup -f backup.yaml     # a new version each time
hodei template run backup --param db=sales -f   # prints the job id; -f follows its log
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

template_app = group("template", "Job and pipeline templates with typed parameters.")

NameArg = Annotated[str, typer.Argument(help="Template name.")]


def _path(name: str, suffix: str = "") -> str:
    from urllib.parse import quote

    return f"/api/v1/templates/{quote(name, safe='')}{suffix}"


def templates_table(items: list[dict[str, Any]]) -> str:
    from hodei.cli_render import clean, table, truncate

    rows = [
        [
            clean(t.get("name")),
            clean(t.get("version")),
            clean(t.get("kind")),
            clean(t.get("created_at")),
            truncate(clean(t.get("description")), 50),
        ]
        for t in items
    ]
    return table(["NAME", "VERSION", "KIND", "CREATED", "DESCRIPTION"], rows)


@template_app.command("create")
@guarded
def create(
    name: NameArg,
    file: Annotated[str, typer.Option("--file", "-f", help="The template file ('-': stdin).")],
    server: ServerOpt = DEFAULT_URL,
) -> None:
    """Add a template, or a new version of one (versions are kept)."""
    from hodei.cli.pipelines import read_file

    with client(server) as api:
        body = {"name": name, "source": read_file(file)}
        made = api.call("POST", "/api/v1/templates", json_body=body)
    if not isinstance(made, dict):
        fail("unexpected answer from the server (not a template)")
    typer.echo(f"template {name} version {made.get('version')}")


@template_app.command("run")
@guarded
def run(
    name: NameArg,
    param: Annotated[
        list[str] | None, typer.Option("--param", "-p", help="A parameter KEY=VALUE.")
    ] = None,
    version: Annotated[
        int | None, typer.Option(min=1, help="This version (default: the newest).")
    ] = None,
    follow_log: Annotated[
        bool, typer.Option("--follow", "-f", help="Stream the job's log; exit with its code.")
    ] = False,
    server: ServerOpt = DEFAULT_URL,
) -> None:
    """Run a template with parameter values; prints the job (or pipeline run) id."""
    from hodei.cli.pipeline_render import parse_params
    from hodei.cli_render import clean

    body: dict[str, Any] = {"params": parse_params(param)}
    if version is not None:
        body["version"] = version
    with client(server) as api:
        answer = api.call("POST", _path(name, "/run"), json_body=body)
        if not isinstance(answer, dict):
            fail("unexpected answer from the server (not a template run)")
        job = answer.get("job")
        if isinstance(job, dict) and isinstance(job.get("id"), str):
            if not follow_log:
                typer.echo(clean(job["id"]))
                return
            from hodei.cli.jobs import follow

            typer.echo(f"job {job['id']} of template {name} v{answer.get('version')}", err=True)
            follow(api, job["id"], False)
        run_id = answer.get("run_id")
        if not isinstance(run_id, str):
            fail("unexpected answer from the server (no job or run)")
        if not follow_log:
            typer.echo(clean(run_id))
            return
        from hodei.cli.pipelines import follow as follow_run

        follow_run(api, run_id)


@app.command("templates")
@guarded
def templates(output: OutputOpt = Output.table, server: ServerOpt = DEFAULT_URL) -> None:
    """List templates (their newest versions)."""
    import orjson

    with client(server) as api:
        body = api.call("GET", "/api/v1/templates")
    if output is Output.json:
        typer.echo(orjson.dumps(body, option=orjson.OPT_INDENT_2).decode())
        return
    items = items_of(body)
    typer.echo(templates_table(items) if items else "no templates")


@template_app.command("show")
@guarded
def show(
    name: NameArg,
    version: Annotated[int | None, typer.Option(min=1, help="This version.")] = None,
    server: ServerOpt = DEFAULT_URL,
) -> None:
    """A template's file and its versions."""
    from hodei.cli_render import clean, clean_block

    with client(server) as api:
        params = {"version": version} if version else None
        t = api.call("GET", _path(name), params=params)
    if not isinstance(t, dict):
        fail("unexpected answer from the server (not a template)")
    typer.echo(
        f"template {clean(t.get('name'))} version {t.get('version')} ({clean(t.get('kind'))})"
    )
    typer.echo(clean_block(str(t.get("source") or "")))
    versions = t.get("versions") or []
    typer.echo(templates_table(versions))


@template_app.command("rm")
@guarded
def rm(name: NameArg, server: ServerOpt = DEFAULT_URL) -> None:
    """Delete a template and all its versions."""
    with client(server) as api:
        api.request("DELETE", _path(name))
    typer.echo(f"template {name} deleted")
