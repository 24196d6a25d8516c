"""`hodei token create|list|revoke`: API tokens."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import quote

import typer

from hodei.cli.common import (
    DEFAULT_URL,
    Output,
    OutputOpt,
    ServerOpt,
    client,
    fail,
    get_items,
    group,
    guarded,
    not_empty,
    parse_opt,
)

token_app = group(
    "token",
    "API tokens (roles: viewer reads, submitter also submits/cancels/retries, admin all).",
)


@token_app.command("create")
@guarded
def token_create(
    role: Annotated[str, typer.Option(help="viewer, submitter or admin.")],
    name: Annotated[str, typer.Option(help="What the token is for (shown in the audit).")] = "",
    server: ServerOpt = DEFAULT_URL,
) -> None:
    """Create an API token and print it (the only time it is shown)."""
    from hodei.domain.access import parse_role

    chosen = parse_opt(parse_role, role, "--role")
    if len(name) > 200:  # the server's limit
        raise typer.BadParameter("must be at most 200 characters", param_hint="'--name'")
    with client(server) as api:
        body = api.call("POST", "/api/v1/tokens", json_body={"role": chosen, "name": name})
    token = body.get("token") if isinstance(body, dict) else None
    if not isinstance(token, str):
        fail("the server created a token but did not send it")
    typer.echo(f"token {body.get('id')} ({chosen}) created; use it as HODEI_API_TOKEN", err=True)
    typer.echo(token)


@token_app.command("list")
@guarded
def token_list(output: OutputOpt = Output.table, server: ServerOpt = DEFAULT_URL) -> None:
    """List API tokens (never their secrets)."""
    from hodei.cli_render import table, when

    items = get_items(server, "/api/v1/tokens", output)
    if items is None:
        return
    rows = [
        (
            t.get("id"),
            t.get("role"),
            t.get("name") or "-",
            when(t.get("created_at")),
            when(t.get("revoked_at")) if t.get("revoked_at") else "-",
        )
        for t in items
    ]
    typer.echo(table(("ID", "ROLE", "NAME", "CREATED", "REVOKED"), rows) if rows else "no tokens")


@token_app.command("revoke")
@guarded
def token_revoke(
    token_id: Annotated[str, typer.Argument(help="Token id (see `hodei token list`).")],
    server: ServerOpt = DEFAULT_URL,
) -> None:
    """Revoke an API token: it stops working at once on this server."""
    from hodei.cli_client import check_sendable
    from hodei.cli_render import clean

    check_sendable(not_empty(token_id, "TOKEN_ID"))
    path = f"/api/v1/tokens/{quote(token_id, safe='')}/revoke"
    with client(server) as api:
        api.request("POST", path, not_found=f"no token {token_id!r}")
    typer.echo(f"token {clean(token_id)} revoked")
