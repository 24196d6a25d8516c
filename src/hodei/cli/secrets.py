"""`hodei secret set|list|rm`: secrets, which jobs see as env vars and output masks."""

from __future__ import annotations

import sys
from typing import Annotated
from urllib.parse import quote

import typer

from hodei.cli.common import DEFAULT_URL, ServerOpt, client, fail, group, guarded, items_of
from hodei.errors import ValidationError

secret_app = group(
    "secret", "Manage secrets (jobs see a secret as an env var; output masks its value)."
)


def _read_secret_value() -> str:
    if sys.stdin.isatty():
        import getpass

        value = getpass.getpass("secret value: ")
    else:
        data = sys.stdin.buffer.read()
        try:
            value = data.decode("utf-8")
        except UnicodeDecodeError:
            fail("the secret value must be UTF-8 text", 2)
        if value.endswith("\r\n"):
            value = value[:-2]
        elif value.endswith("\n"):
            value = value[:-1]
    if not value:
        fail("refusing to store an empty secret value", 2)
    from hodei.domain.masking import SHORT_SECRET_MESSAGE, secret_too_short

    if secret_too_short(value):
        fail(f"refusing to store this secret: {SHORT_SECRET_MESSAGE}", 2)
    return value


def _secret_path(name: str) -> str:
    """The secret's URL, once its name is known good: a name with '/' would reach another
    route (or none) and come back as a confusing "Not Found"."""
    from hodei.domain.jobs import JobSpec, validate_spec

    try:  # the rule for the secret names a job spec refers to
        validate_spec(JobSpec(command="true", secrets=(name,)))
    except ValidationError as exc:
        raise ValidationError(
            f"{exc.message}: use letters, digits and '_' (an env var name)"
        ) from None
    return f"/api/v1/secrets/{quote(name, safe='')}"


@secret_app.command("set")
@guarded
def secret_set(
    name: Annotated[str, typer.Argument(help="Secret name (the job's env var name).")],
    server: ServerOpt = DEFAULT_URL,
) -> None:
    """Store a secret; the value is read from stdin (or prompted for, without echo)."""
    from hodei.cli_render import clean

    path = _secret_path(name)
    value = _read_secret_value()
    with client(server) as api:
        api.request("PUT", path, json_body={"value": value})
    typer.echo(f"secret {clean(name)} saved")


@secret_app.command("list")
@guarded
def secret_list(server: ServerOpt = DEFAULT_URL) -> None:
    """List secret names (never values)."""
    from hodei.cli_render import secrets_table

    with client(server) as api:
        items = items_of(api.call("GET", "/api/v1/secrets"))
    typer.echo(secrets_table(items) if items else "no secrets")


@secret_app.command("rm")
@guarded
def secret_rm(
    name: Annotated[str, typer.Argument(help="Secret name.")],
    server: ServerOpt = DEFAULT_URL,
) -> None:
    """Delete a secret."""
    from hodei.cli_render import clean

    with client(server) as api:
        api.request("DELETE", _secret_path(name), not_found=f"no secret {name!r}")
    typer.echo(f"secret {clean(name)} removed")
