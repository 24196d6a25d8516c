"""`hodei audit`: the audit trail (who did what and when)."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from hodei.cli.common import (
    DEFAULT_URL,
    Output,
    OutputOpt,
    ServerOpt,
    app,
    get_items,
    guarded,
    not_empty,
)


@app.command()
@guarded
def audit(
    action: Annotated[
        str | None, typer.Option(help="Only this action, or a family ending in '.' (job.).")
    ] = None,
    target: Annotated[str | None, typer.Option(help="Only entries about this job/name.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="Entries, newest first.")] = 50,
    output: OutputOpt = Output.table,
    server: ServerOpt = DEFAULT_URL,
) -> None:
    """Show the audit trail: who did what and when (admin token)."""
    from hodei.cli_render import table, when

    params: dict[str, Any] = {"limit": limit}
    if action is not None:
        params["action"] = not_empty(action, "--action")
    if target is not None:
        params["target"] = not_empty(target, "--target")
    items = get_items(server, "/api/v1/audit", output, params)
    if items is None:
        return
    rows = [
        (
            when(e.get("at")),
            e.get("actor"),
            e.get("action"),
            e.get("target") or "-",
            e.get("detail") or "-",
        )
        for e in items
    ]
    typer.echo(
        table(("WHEN", "ACTOR", "ACTION", "TARGET", "DETAIL"), rows) if rows else "no entries"
    )
