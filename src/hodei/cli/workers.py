"""Worker commands: workers (the list) and worker-otp."""

from __future__ import annotations

from typing import Annotated

import typer

from hodei.cli.common import (
    DEFAULT_URL,
    LabelOpt,
    Output,
    OutputOpt,
    ServerOpt,
    app,
    check_labels,
    client,
    fail,
    guarded,
    items_of,
    parse_opt,
    parse_pairs,
)


@app.command()
@guarded
def workers(output: OutputOpt = Output.table, server: ServerOpt = DEFAULT_URL) -> None:
    """List connected workers with capacity, usage and running jobs, and the provider's last
    error starting one (an image that cannot be pulled, a pod no node can take...)."""
    from hodei.cli_client import decode_json
    from hodei.cli_render import clean, workers_table, write_json_verbatim

    with client(server) as api:
        response = api.request("GET", "/api/v1/workers")
    if output is Output.json:
        write_json_verbatim(response.content)
        return
    body = decode_json(response)
    items = items_of(body)
    typer.echo(workers_table(items) if items else "no workers")
    error = body.get("provisioning_error") if isinstance(body, dict) else None
    if isinstance(error, str) and error:
        typer.echo(f"provisioning: {clean(error)}")


@app.command("worker-otp")
@guarded
def worker_otp(
    label: LabelOpt = None,
    ttl: Annotated[str, typer.Option(help="How long the OTP stays valid.")] = "10m",
    server: ServerOpt = DEFAULT_URL,
) -> None:
    """Create a single-use worker OTP and print it alone (for `hodei agent --token`)."""
    from hodei.domain.jobs import parse_duration

    ttl_s = parse_opt(parse_duration, ttl, "--ttl")
    if not 0 < ttl_s <= 7 * 86400:  # the server's bounds
        raise typer.BadParameter("must be more than 0s and at most 7 days", param_hint="'--ttl'")
    body = {"labels": check_labels(parse_pairs(label, "--label", "KEY")), "ttl_s": ttl_s}
    with client(server) as api:
        answer = api.call("POST", "/api/v1/workers/otp", json_body=body)
    otp = answer.get("otp") if isinstance(answer, dict) else None
    if not isinstance(otp, str) or not otp:
        fail("unexpected answer from the server (no 'otp')")
    typer.echo(otp)
