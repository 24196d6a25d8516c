"""`hodei dashboard`: a one-time link that signs a browser in to the web dashboard."""

from __future__ import annotations

import typer

from hodei.cli.common import DEFAULT_URL, ServerOpt, app, client, fail, guarded


@app.command()
@guarded
def dashboard(server: ServerOpt = DEFAULT_URL) -> None:
    """Print a one-time sign-in link to the dashboard, for this CLI's token (admin)."""
    from hodei.cli_client import normalize_url

    with client(server) as api:
        body = api.call("POST", "/api/v1/session/links")
    path = body.get("path") if isinstance(body, dict) else None
    if not isinstance(path, str) or not path.startswith("/login?code="):
        fail("the server did not send a sign-in link")
    typer.echo(f"{normalize_url(server).rstrip('/')}{path}")
    typer.echo("open it once within 24 hours; it signs in as this CLI's token", err=True)
