"""`hodei agent`: run a worker agent that dials out to the server."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from hodei.cli.common import (
    DEFAULT_GRPC,
    LabelOpt,
    app,
    check_labels,
    fail,
    guarded,
    not_empty,
    parse_opt,
    parse_pairs,
)


@app.command()
@guarded
def agent(
    server: Annotated[
        str, typer.Option(envvar="HODEI_SERVER_URL", help="The server's gRPC address.")
    ] = DEFAULT_GRPC,
    token: Annotated[
        str | None, typer.Option(envvar="HODEI_TOKEN", help="Single-use worker OTP.")
    ] = None,
    label: LabelOpt = None,
    slots: Annotated[int, typer.Option(min=1, max=1024, help="Jobs run at once.")] = 1,
    cancel_grace: Annotated[str, typer.Option(help="SIGTERM -> SIGKILL grace.")] = "5s",
    ca: Annotated[
        str,
        typer.Option(
            envvar="HODEI_CA",
            help="CA certificate of a --tls server: enroll with the OTP, then connect with mTLS.",
        ),
    ] = "",
    enroll_url: Annotated[
        str,
        typer.Option(
            envvar="HODEI_ENROLL_URL", help="The --tls server's https:// URL (with --ca)."
        ),
    ] = "",
) -> None:
    """Run a worker agent that dials out to the server (normally started by a provider)."""
    from hodei.domain.jobs import parse_duration

    # A container gets the CA certificate itself in HODEI_CA_PEM (no host path there).
    ca_pem = "" if ca else os.environ.get("HODEI_CA_PEM", "")
    if bool(ca or ca_pem) != bool(enroll_url):
        raise typer.BadParameter(
            "--ca and --enroll-url go together (mTLS needs both)", param_hint="'--ca'"
        )

    if not token:
        raise typer.BadParameter(
            "a worker OTP is required (--token or HODEI_TOKEN; get one with `hodei worker-otp`)",
            param_hint="'--token'",
        )
    if any(c.isspace() or not c.isprintable() for c in not_empty(server, "--server")):
        raise typer.BadParameter(f"{server!r} is not a host:port address", param_hint="'--server'")
    labels = check_labels(parse_pairs(label, "--label", "KEY"))
    grace = parse_opt(parse_duration, cancel_grace, "--cancel-grace")
    if grace > 3600:  # the server's bound for the same setting
        raise typer.BadParameter("must be at most 1h", param_hint="'--cancel-grace'")
    from hodei.agent.main import run_agent

    try:
        status = run_agent(
            server, token, labels, slots, grace, ca=ca, enroll_url=enroll_url, ca_pem=ca_pem
        )
    except OSError as exc:
        fail(f"cannot start the agent: {exc}")
    raise SystemExit(status)
