"""What every command group shares: the root `hodei` app, the common options, the error
plumbing (`guarded`, `fail`), the REST client for `--server`, and flag parsers."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, ParamSpec, TypeVar
from urllib.parse import urlsplit

import typer
from typer.core import TyperGroup

from hodei import __version__
from hodei.errors import HodeiError, ValidationError

try:  # typer vendors its own click from 0.20 on; before, it used click itself
    from typer._click.exceptions import NoArgsIsHelpError, UsageError
except ImportError:  # pragma: no cover
    from click.exceptions import NoArgsIsHelpError, UsageError  # type: ignore[assignment]

if TYPE_CHECKING:
    from hodei.cli_client import Client

P = ParamSpec("P")
R = TypeVar("R")

DEFAULT_URL = "http://127.0.0.1:8080"
DEFAULT_GRPC = "127.0.0.1:50051"


class Output(StrEnum):
    table = "table"
    json = "json"


class _UsageError(UsageError):
    """Bad usage shown as one line, `error: ...`, like every other CLI error (exit 2)."""

    def show(self, file: Any = None) -> None:
        from hodei.cli_render import clean

        message = self.format_message()
        if message[:1].isupper() and message[1:2].islower():
            message = message[0].lower() + message[1:]  # "Invalid value ..." -> "invalid ..."
        typer.echo(f"error: {clean(message)}", err=True)


def _one_line(exc: UsageError) -> NoReturn:
    if isinstance(exc, (_UsageError, NoArgsIsHelpError)):
        raise exc
    raise _UsageError(exc.format_message(), exc.ctx) from None


class _RootGroup(TyperGroup):
    """The root command: a usage error anywhere below it (an unknown option, a value its type
    refuses, a `typer.BadParameter` from a command) becomes one `error: ...` line, not
    click's usage block."""

    def make_context(
        self,
        info_name: str | None,
        args: list[str],
        parent: Any = None,
        **extra: Any,
    ) -> Any:
        try:
            return super().make_context(info_name, args, parent, **extra)
        except UsageError as exc:
            _one_line(exc)

    def invoke(self, ctx: Any) -> Any:
        try:
            return super().invoke(ctx)
        except UsageError as exc:
            _one_line(exc)


app = typer.Typer(
    cls=_RootGroup,
    name="hodei",
    help="Hodei Jobs: run shell jobs on on-demand workers, with live logs and masked secrets.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def group(name: str, help_text: str) -> typer.Typer:
    """A command group `hodei NAME ...` (secret, token, pki) on the root app."""
    sub_app = typer.Typer(help=help_text, no_args_is_help=True, rich_markup_mode=None)
    app.add_typer(sub_app, name=name)
    return sub_app


ServerOpt = Annotated[
    str,
    typer.Option("--server", envvar="HODEI_URL", help="Hodei server URL.", show_default=True),
]
OutputOpt = Annotated[
    Output, typer.Option("--output", "-o", help="Output format.", case_sensitive=False)
]
LabelOpt = Annotated[
    list[str] | None, typer.Option("--label", "-l", help="Label k=v (repeatable).")
]
HomeOpt = Annotated[
    str | None,
    typer.Option(envvar="HODEI_HOME", help="Data directory.  [default: ~/.hodei]"),
]


# --- plumbing -------------------------------------------------------------------------------


def fail(message: str, code: int = 1) -> NoReturn:
    from hodei.domain.terminal import neutralise

    shown = neutralise(message.encode("utf-8", "replace")).decode("utf-8", "replace")
    typer.echo(f"error: {shown}", err=True)
    raise typer.Exit(code)


def guarded(func: Callable[P, R]) -> Callable[P, R]:
    """Turn expected failures into `error: ...` and an exit status, never a traceback."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except ValidationError as exc:
            fail(exc.message, 2)
        except HodeiError as exc:
            fail(exc.message, int(getattr(exc, "exit_code", 1)))
        except KeyboardInterrupt:
            typer.echo("", err=True)
            raise typer.Exit(130) from None
        except BrokenPipeError:
            _silence_stdout()
            raise typer.Exit(141) from None
        except Exception as exc:
            if type(exc).__module__.split(".")[0] != "httpx":
                raise
            fail(f"{type(exc).__name__}: {exc}")

    return wrapper


def _silence_stdout() -> None:
    """After EPIPE (`hodei logs JOB | head`), stop Python complaining when it flushes."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def client(server: str) -> Client:
    import httpx

    from hodei.cli_client import Client, normalize_url

    url = normalize_url(server)
    try:
        parts = urlsplit(url)
        _ = parts.port  # a port that is not a number, or out of range, raises here
        ok = parts.scheme in ("http", "https") and bool(parts.hostname)
    except ValueError:  # e.g. an unclosed '[' of an IPv6 address
        ok = False
    if not ok or any(c.isspace() or not c.isprintable() for c in url):
        raise typer.BadParameter(f"{server!r} is not an http(s) URL", param_hint="'--server'")
    try:
        return Client(url, token=api_token())
    except httpx.InvalidURL as exc:
        raise typer.BadParameter(
            f"{server!r} is not an http(s) URL ({exc})", param_hint="'--server'"
        ) from None


def api_token() -> str | None:
    """HODEI_API_TOKEN, else the admin token a server on this machine keeps in HODEI_HOME."""
    from hodei.config import default_home

    token = os.environ.get("HODEI_API_TOKEN", "").strip()
    if token:
        return token
    try:
        return (default_home() / "admin.token").read_text().strip() or None
    except OSError:
        return None


def parse_pairs(values: list[str] | None, flag: str, what: str) -> dict[str, str]:
    result: dict[str, str] = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"{item!r} is not {what}=VALUE", param_hint=f"'{flag}'")
        result[key.strip()] = value
    return result


def parse_opt(parse: Callable[[str], R], value: str, flag: str) -> R:
    try:
        return parse(value)
    except ValidationError as exc:
        raise typer.BadParameter(exc.message, param_hint=f"'{flag}'") from None


def not_empty(value: str, flag: str) -> str:
    if not value.strip():
        raise typer.BadParameter("must not be empty", param_hint=f"'{flag}'")
    return value


def check_labels(labels: dict[str, str], flag: str = "--label") -> dict[str, str]:
    """Worker labels follow the rule of the labels a job requires (else no job could match)."""
    from hodei.domain.jobs import JobSpec, validate_spec

    try:
        validate_spec(JobSpec(command="true", labels=labels))
    except ValidationError as exc:
        raise typer.BadParameter(exc.message, param_hint=f"'{flag}'") from None
    return labels


def list_params(limit: int, state: str | None, states: type[StrEnum]) -> dict[str, Any]:
    """The query of a list command: its limit, and its --state when it names one of `states`
    (else a usage error listing them, before any request)."""
    params: dict[str, Any] = {"limit": limit}
    if state is not None:
        if state not in {s.value for s in states}:
            allowed = ", ".join(s.value for s in states)
            raise typer.BadParameter(
                f"unknown state {state[:40]!r} ({allowed})", param_hint="'--state'"
            )
        params["state"] = state
    return params


def home_dir(home: str | None) -> str | None:
    """--home / HODEI_HOME: a usable path when given."""
    if home is not None and (not home.strip() or "\x00" in home):
        raise typer.BadParameter(f"{home!r} is not a directory path", param_hint="'--home'")
    return home


def items_of(body: Any) -> list[dict[str, Any]]:
    """The objects in a list answer's `items`."""
    items = body.get("items") if isinstance(body, dict) else None
    if not isinstance(items, list):
        fail("unexpected answer from the server (no 'items' list)")
    return [item for item in items if isinstance(item, dict)]


def get_items(
    server: str, path: str, output: Output, params: dict[str, Any] | None = None
) -> list[dict[str, Any]] | None:
    """GET a list: with `-o json` write the server's answer as it is and return None, else
    return its items (for a table)."""
    from hodei.cli_client import decode_json
    from hodei.cli_render import write_json_verbatim

    with client(server) as api:
        response = api.request("GET", path, params=params)
    if output is Output.json:
        write_json_verbatim(response.content)
        return None
    return items_of(decode_json(response))


# --- the root command -------------------------------------------------------------------------


def _version(value: bool) -> None:
    if value:
        typer.echo(f"hodei {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="Show the version."),
    ] = False,
) -> None:
    """Hodei Jobs: run shell jobs on on-demand workers, with live logs and masked secrets."""
