"""`hodei pki init|list|revoke`: the server's CA, TLS certificate and agent certificates."""

from __future__ import annotations

from typing import Annotated

import typer

from hodei.cli.common import (
    DEFAULT_URL,
    HomeOpt,
    Output,
    OutputOpt,
    ServerOpt,
    client,
    fail,
    get_items,
    group,
    guarded,
    home_dir,
    not_empty,
)

pki_app = group(
    "pki", "The server's PKI: CA, TLS certificate, agent certificates (see docs/pki.md)."
)


@pki_app.command("init")
@guarded
def pki_init(
    san: Annotated[
        list[str] | None,
        typer.Option(
            "--san",
            help="Host name or IP address the server is reached at (repeatable; default: "
            "localhost, 127.0.0.1, ::1).",
        ),
    ] = None,
    force: Annotated[
        bool,
        typer.Option(
            "--force", help="Replace an existing CA (its agent certificates stop working)."
        ),
    ] = False,
    home: HomeOpt = None,
) -> None:
    """Create the CA and the server's TLS certificate under HODEI_HOME/pki/."""
    from pathlib import Path

    from hodei.config import default_home
    from hodei.security.pki import DEFAULT_SANS, parse_sans
    from hodei.security.pki_files import PkiPaths, init_pki

    home = home_dir(home)
    names = san or list(DEFAULT_SANS)
    try:
        parse_sans(names)  # refuse a bad name before anything is written
    except (ValueError, UnicodeError) as exc:
        raise typer.BadParameter(str(exc), param_hint="'--san'") from None
    paths = PkiPaths.of_home(Path(home).expanduser() if home else default_home())
    init_pki(paths, names, force=force)
    typer.echo(f"CA: {paths.ca_cert} (key {paths.ca_key}, mode 0600)")
    typer.echo(f"server certificate: {paths.server_cert} for {', '.join(names)}")


@pki_app.command("list")
@guarded
def pki_list(output: OutputOpt = Output.table, server: ServerOpt = DEFAULT_URL) -> None:
    """List the agent certificates the server issued, with their state."""
    from hodei.cli_render import clean

    items = get_items(server, "/api/v1/pki/certs", output)
    if items is None:
        return
    if not items:
        typer.echo("no certificates")
        return
    columns = ("serial", "worker_id", "state", "issued_at", "not_after", "revoked_at")
    rows = [[clean(item.get(c)) for c in columns] for item in items]
    widths = [max(len(c), *(len(r[i]) for r in rows)) for i, c in enumerate(columns)]
    for row in [[c.upper() for c in columns], *rows]:
        typer.echo("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())


@pki_app.command("revoke")
@guarded
def pki_revoke(
    target: Annotated[str, typer.Argument(help="Worker id (all its certificates) or a serial.")],
    server: ServerOpt = DEFAULT_URL,
) -> None:
    """Revoke agent certificates: the worker is cut off at once and refused from then on."""
    from hodei.cli_render import clean

    body = {"target": not_empty(target, "TARGET")}
    with client(server) as api:
        answer = api.call("POST", "/api/v1/pki/revoke", json_body=body)
    items = answer.get("items") if isinstance(answer, dict) else None
    if not isinstance(items, list):
        fail("unexpected answer from the server (no 'items' list)")
    for item in items:
        if isinstance(item, dict):
            typer.echo(
                f"revoked {clean(item.get('serial'))} (worker {clean(item.get('worker_id'))})"
            )
