"""The `hodei` command: run the server or an agent, and drive a server over its REST API.

Client commands find the server through `--server` / `HODEI_URL`. Errors end the process with a
one-line `error: ...` on stderr, never a traceback: 1 when the server refused the request, 2 for
bad usage or an unreachable server. Heavy modules (httpx, the server, the agent, grpc) are
imported inside the commands that need them, so `hodei --help` starts fast.
"""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any, NoReturn, ParamSpec, TypeVar
from urllib.parse import quote, urlsplit

import typer

from hodei import __version__
from hodei.errors import HodeiError, ValidationError

if TYPE_CHECKING:
    from hodei.cli_client import Client

P = ParamSpec("P")
R = TypeVar("R")

DEFAULT_URL = "http://127.0.0.1:8080"
DEFAULT_GRPC = "127.0.0.1:50051"


class Output(StrEnum):
    table = "table"
    json = "json"


app = typer.Typer(
    name="hodei",
    help="Hodei Jobs: run shell jobs on on-demand workers, with live logs and masked secrets.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)
secret_app = typer.Typer(
    help="Manage secrets (jobs see a secret as an env var; output masks its value).",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(secret_app, name="secret")
token_app = typer.Typer(
    help="API tokens (roles: viewer reads, submitter also submits/cancels/retries, admin all).",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(token_app, name="token")
pki_app = typer.Typer(
    help="The server's PKI: CA, TLS certificate, agent certificates (see docs/pki.md).",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(pki_app, name="pki")

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
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):
        pass


def client(server: str) -> Client:
    from hodei.cli_client import Client, normalize_url

    url = normalize_url(server)
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise typer.BadParameter(f"{server!r} is not an http(s) URL", param_hint="'--server'")
    return Client(url, token=api_token())


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


def job_end_exit(job_id: str, state: str, exit_code: int | None, status: int) -> NoReturn:
    if state != "succeeded":
        detail = f" (exit code {exit_code})" if exit_code is not None else ""
        typer.echo(f"job {job_id} {state}{detail}", err=True)
    raise typer.Exit(status)


def follow(api: Client, job_id: str) -> NoReturn:
    """Stream a job's log to stdout live, then exit with the job's exit status."""
    from hodei.cli_client import follow_logs
    from hodei.cli_render import encode_text, write_bytes, write_text
    from hodei.domain.terminal import TerminalFilter

    tail = {"newline": True}
    terminal = TerminalFilter()  # colours kept; cursor moves, titles, clear screen made inert

    def write(text: str) -> None:
        if text:
            write_bytes(terminal.feed(encode_text(text)))
            tail["newline"] = text.endswith("\n")

    end = follow_logs(api, job_id, write)
    write_bytes(terminal.flush())
    if not tail["newline"] and sys.stdout.isatty():
        write_text("\n")
    job_end_exit(job_id, end.state, end.exit_code, end.process_exit)


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


# --- server and agent -------------------------------------------------------------------------


@app.command()
@guarded
def server(
    http_addr: Annotated[
        str, typer.Option(envvar="HODEI_HTTP_ADDR", help="REST/SSE address.")
    ] = "127.0.0.1:8080",
    grpc_addr: Annotated[
        str, typer.Option(envvar="HODEI_GRPC_ADDR", help="gRPC address.")
    ] = DEFAULT_GRPC,
    database_url: Annotated[
        str,
        typer.Option(
            envvar="HODEI_DATABASE_URL",
            help="sqlite:///path (default: in --home) or postgresql://user:pass@host/db.",
        ),
    ] = "",
    provider: Annotated[
        str, typer.Option(envvar="HODEI_PROVIDER", help="Worker provider.")
    ] = "local",
    worker_image: Annotated[
        str, typer.Option(envvar="HODEI_WORKER_IMAGE", help="Worker image (container providers).")
    ] = "hodei-worker:latest",
    docker_network: Annotated[
        str,
        typer.Option(envvar="HODEI_DOCKER_NETWORK", help="Network mode of Docker workers."),
    ] = "host",
    docker_server_url: Annotated[
        str,
        typer.Option(
            envvar="HODEI_DOCKER_SERVER_URL",
            help="gRPC address Docker workers dial (default: the server's --grpc-addr).",
        ),
    ] = "",
    docker_privileged: Annotated[
        bool,
        typer.Option(
            "--docker-privileged",
            envvar="HODEI_DOCKER_PRIVILEGED",
            help="Run Docker workers privileged (off: never).",
        ),
    ] = False,
    docker_socket: Annotated[
        bool,
        typer.Option(
            "--docker-socket",
            envvar="HODEI_DOCKER_SOCKET",
            help="Give Docker workers the engine's socket (root on the host; off: never).",
        ),
    ] = False,
    docker_mount: Annotated[
        list[str] | None,
        typer.Option(
            envvar="HODEI_DOCKER_MOUNTS",
            help="Host path for Docker workers, HOST:CONTAINER[:ro|rw] (repeatable; read-only "
            "unless :rw; none by default).",
        ),
    ] = None,
    home: Annotated[
        str | None,
        typer.Option(envvar="HODEI_HOME", help="Data directory.  [default: ~/.hodei]"),
    ] = None,
    max_workers: Annotated[
        int, typer.Option(envvar="HODEI_MAX_WORKERS", min=0, help="Provisioned workers at most.")
    ] = 4,
    worker_slots: Annotated[
        int, typer.Option(envvar="HODEI_WORKER_SLOTS", min=1, help="Jobs per provisioned worker.")
    ] = 1,
    worker_idle: Annotated[
        str, typer.Option(envvar="HODEI_WORKER_IDLE", help="Stop idle provisioned workers after.")
    ] = "30s",
    heartbeat_interval: Annotated[
        str,
        typer.Option(envvar="HODEI_HEARTBEAT_INTERVAL", help="How often agents report usage."),
    ] = "5s",
    cancel_grace: Annotated[
        str,
        typer.Option(envvar="HODEI_CANCEL_GRACE", help="SIGTERM -> SIGKILL delay on cancel."),
    ] = "5s",
    scheduling_policy: Annotated[
        str,
        typer.Option(
            envvar="HODEI_SCHEDULING_POLICY", help="spread (least-loaded first) or binpack."
        ),
    ] = "spread",
    priority_aging: Annotated[
        str,
        typer.Option(
            envvar="HODEI_PRIORITY_AGING",
            help="Waiting this long is worth one priority point (0 turns aging off).",
        ),
    ] = "60s",
    retry_backoff: Annotated[
        str,
        typer.Option(
            envvar="HODEI_RETRY_BACKOFF",
            help="First retry waits this long; each next one twice as long (max 5m).",
        ),
    ] = "1s",
    worker_grace: Annotated[
        str,
        typer.Option(
            envvar="HODEI_WORKER_GRACE", help="How long a disconnected worker may come back."
        ),
    ] = "30s",
    max_output: Annotated[
        str,
        typer.Option(
            envvar="HODEI_MAX_OUTPUT",
            help="Output kept per job attempt; past it the log is truncated with a note.",
        ),
    ] = "100M",
    demo: Annotated[
        bool, typer.Option("--demo", help="Submit a demo job and print its log live.")
    ] = False,
    log_dir: Annotated[
        str,
        typer.Option(
            envvar="HODEI_LOG_DIR",
            help="Where job logs live (default HODEI_HOME/logs); servers sharing a PostgreSQL "
            "database share this directory.",
        ),
    ] = "",
    dev: Annotated[
        bool,
        typer.Option(
            "--dev",
            envvar="HODEI_DEV",
            help="No API tokens: every request acts as an admin (loopback addresses only).",
        ),
    ] = False,
    tls: Annotated[
        bool,
        typer.Option(
            "--tls",
            envvar="HODEI_TLS",
            help="HTTPS, and mTLS for agents with certificates from the home's CA (see "
            "`hodei pki`; created on first use).",
        ),
    ] = False,
    cert_lifetime: Annotated[
        str,
        typer.Option(
            envvar="HODEI_CERT_LIFETIME",
            help="Lifetime of agent certificates (agents renew at 2/3 of it).",
        ),
    ] = "24h",
) -> None:
    """Start the server (REST + SSE, gRPC, scheduler, on-demand workers)."""
    from pathlib import Path

    from hodei.config import ServerSettings
    from hodei.domain.jobs import parse_duration, parse_size

    idle = parse_opt(parse_duration, worker_idle, "--worker-idle")
    settings = ServerSettings(
        database_url=database_url,
        provider=provider,
        http_addr=http_addr,
        grpc_addr=grpc_addr,
        worker_image=worker_image,
        max_workers=max_workers,
        worker_slots=worker_slots,
        worker_idle_s=idle,
        heartbeat_interval_s=parse_opt(parse_duration, heartbeat_interval, "--heartbeat-interval"),
        cancel_grace_s=parse_opt(parse_duration, cancel_grace, "--cancel-grace"),
        worker_grace_s=parse_opt(parse_duration, worker_grace, "--worker-grace"),
        scheduling_policy=scheduling_policy,
        retry_backoff_s=parse_opt(parse_duration, retry_backoff, "--retry-backoff"),
        priority_aging_s=parse_opt(parse_duration, priority_aging, "--priority-aging"),
        max_output_bytes=parse_opt(parse_size, max_output, "--max-output"),
        demo=demo,
        dev=dev,
        log_dir_path=log_dir,
        tls=tls,
        cert_lifetime_s=parse_opt(parse_duration, cert_lifetime, "--cert-lifetime"),
        docker_network=docker_network,
        docker_server_url=docker_server_url,
        docker_privileged=docker_privileged,
        docker_socket=docker_socket,
        docker_mounts=tuple(docker_mount or ()),
    )
    if home:
        settings.home = Path(home).expanduser()
    settings.validate()
    from hodei.server.app import run_server

    try:
        status = run_server(settings)
    except OSError as exc:  # e.g. the address is in use
        fail(f"cannot start the server: {exc}")
    raise SystemExit(status)


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
    slots: Annotated[int, typer.Option(min=1, help="Jobs run at once.")] = 1,
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
    labels = parse_pairs(label, "--label", "KEY")
    grace = parse_opt(parse_duration, cancel_grace, "--cancel-grace")
    from hodei.agent.main import run_agent

    try:
        status = run_agent(
            server, token, labels, slots, grace, ca=ca, enroll_url=enroll_url, ca_pem=ca_pem
        )
    except OSError as exc:
        fail(f"cannot start the agent: {exc}")
    raise SystemExit(status)


# --- jobs -------------------------------------------------------------------------------------


def _read_script(path: str) -> str:
    from pathlib import Path

    try:
        data = sys.stdin.buffer.read() if path == "-" else Path(path).read_bytes()
    except OSError as exc:
        raise typer.BadParameter(
            f"cannot read {path}: {exc.strerror}", param_hint="'--script'"
        ) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise typer.BadParameter(f"{path} is not UTF-8 text", param_hint="'--script'") from None


def _job_body(command: list[str] | None, script: str | None, **fields: Any) -> dict[str, Any]:
    if script is not None and command:
        raise typer.BadParameter("give either --script or a command after --, not both")
    if script is not None:
        text, arguments = _read_script(script), []
    elif command:
        text, arguments = command[0], command[1:]
    else:
        raise typer.BadParameter("nothing to run: give a command after -- or --script FILE")
    if not text.strip():
        raise typer.BadParameter("the command is empty")
    return {"command": text, "arguments": arguments, **fields}


@app.command(context_settings={"allow_interspersed_args": False})
@guarded
def submit(
    command: Annotated[
        list[str] | None,
        typer.Argument(
            help="CMD ARGS... One string runs under bash -c; several are exec'd directly.",
            show_default=False,
        ),
    ] = None,
    name: Annotated[str, typer.Option(help="Job name.")] = "",
    label: Annotated[
        list[str] | None, typer.Option("--label", "-l", help="Required worker label k=v.")
    ] = None,
    cpu: Annotated[float, typer.Option(min=0, help="CPU cores requested.")] = 0.0,
    memory: Annotated[str | None, typer.Option(help="Memory requested (512M, 2G).")] = None,
    timeout: Annotated[str | None, typer.Option(help="Time limit (30s, 5m, 1h).")] = None,
    retries: Annotated[int, typer.Option(min=0, help="Retries after a failure.")] = 0,
    priority: Annotated[int, typer.Option(help="Higher runs first.")] = 0,
    env: Annotated[list[str] | None, typer.Option("--env", "-e", help="Env var K=V.")] = None,
    secret: Annotated[
        list[str] | None, typer.Option(help="Secret NAME, seen by the job as env var NAME.")
    ] = None,
    job_id: Annotated[str | None, typer.Option("--id", help="Job id (default: generated).")] = None,
    idempotency_key: Annotated[
        str | None,
        typer.Option(help="Submit at most once: a repeat with this key gets the same job."),
    ] = None,
    script: Annotated[
        str | None, typer.Option(help="Run this script file ('-' reads stdin).")
    ] = None,
    follow_log: Annotated[
        bool, typer.Option("--follow", "-f", help="Stream the log; exit with the job's code.")
    ] = False,
    server: ServerOpt = DEFAULT_URL,
) -> None:
    """Submit a job: `hodei submit [opts] -- CMD ARGS...` or `hodei submit --script FILE`."""
    from hodei.domain.jobs import (
        parse_duration,
        parse_size,
        validate_idempotency_key,
        validate_job_id,
    )

    body = _job_body(
        command,
        script,
        name=name,
        labels=parse_pairs(label, "--label", "KEY"),
        env=parse_pairs(env, "--env", "NAME"),
        secrets=list(dict.fromkeys(secret or [])),
        cpu=cpu,
        memory_bytes=parse_opt(parse_size, memory, "--memory") if memory else 0,
        timeout_s=parse_opt(parse_duration, timeout, "--timeout") if timeout else 0.0,
        max_retries=retries,
        priority=priority,
    )
    if job_id:
        body["id"] = parse_opt(validate_job_id, job_id, "--id")
    if idempotency_key is not None:
        body["idempotency_key"] = parse_opt(
            validate_idempotency_key, idempotency_key, "--idempotency-key"
        )
    with client(server) as api:
        job = api.call("POST", "/api/v1/jobs", json_body=body)
        new_id = str(job.get("id", "")) if isinstance(job, dict) else ""
        if not new_id:
            fail("the server accepted the job but sent no id")
        if not follow_log:
            typer.echo(new_id)
            return
        typer.echo(f"job {new_id} submitted", err=True)
        follow(api, new_id)


@app.command()
@guarded
def logs(
    job: Annotated[str, typer.Argument(help="Job id.")],
    follow_log: Annotated[
        bool, typer.Option("--follow", "-f", help="Stream live; exit with the job's code.")
    ] = False,
    server: ServerOpt = DEFAULT_URL,
) -> None:
    """Print a job's log (colours kept, other escape sequences shown inert); -f follows it
    until the job ends."""
    from hodei.cli_client import job_path
    from hodei.cli_render import write_bytes
    from hodei.domain.terminal import neutralise

    with client(server) as api:
        if follow_log:
            follow(api, job)
        response = api.request("GET", job_path(job, "/logs"), not_found=f"no job {job!r}")
        write_bytes(neutralise(response.content))


@app.command()
@guarded
def jobs(
    state: Annotated[str | None, typer.Option(help="Only jobs in this state.")] = None,
    limit: Annotated[int, typer.Option(min=1, max=10000, help="At most this many.")] = 50,
    output: OutputOpt = Output.table,
    server: ServerOpt = DEFAULT_URL,
) -> None:
    """List jobs, newest first."""
    from hodei.cli_render import jobs_table, write_json_verbatim
    from hodei.domain.jobs import JobState

    params: dict[str, Any] = {"limit": limit}
    if state:
        if state not in {s.value for s in JobState}:
            allowed = ", ".join(s.value for s in JobState)
            raise typer.BadParameter(f"unknown state {state!r} ({allowed})", param_hint="'--state'")
        params["state"] = state
    with client(server) as api:
        response = api.request("GET", "/api/v1/jobs", params=params)
        if output is Output.json:
            write_json_verbatim(response.content)
            return
        from hodei.cli_client import decode_json

        items = _items(decode_json(response))
    typer.echo(jobs_table(items) if items else "no jobs")


def _items(body: Any) -> list[dict[str, Any]]:
    items = body.get("items") if isinstance(body, dict) else None
    if not isinstance(items, list):
        fail("unexpected answer from the server (no 'items' list)")
    return [item for item in items if isinstance(item, dict)]


def _job_request(server: str, method: str, job: str, suffix: str = "") -> tuple[bytes, Any]:
    from hodei.cli_client import decode_json, job_path

    with client(server) as api:
        response = api.request(method, job_path(job, suffix), not_found=f"no job {job!r}")
        body = decode_json(response)
    if not isinstance(body, dict):
        fail("unexpected answer from the server (not a job object)")
    return response.content, body


@app.command()
@guarded
def show(
    job: Annotated[str, typer.Argument(help="Job id.")],
    output: OutputOpt = Output.table,
    server: ServerOpt = DEFAULT_URL,
) -> None:
    """Show every field of a job, including why it waits or failed."""
    from hodei.cli_render import job_detail, write_json_verbatim

    raw, body = _job_request(server, "GET", job)
    if output is Output.json:
        write_json_verbatim(raw)
    else:
        typer.echo(job_detail(body))


@app.command()
@guarded
def cancel(
    job: Annotated[str, typer.Argument(help="Job id.")],
    server: ServerOpt = DEFAULT_URL,
) -> None:
    """Cancel a job (a running one gets SIGTERM, then SIGKILL after the grace period)."""
    from hodei.cli_render import clean

    _, body = _job_request(server, "POST", job, "/cancel")
    state = clean(body.get("state"))
    if state == "cancelled":
        typer.echo(f"job {clean(job)} cancelled")
    else:
        typer.echo(f"job {clean(job)}: cancel requested (state: {state})")


@app.command()
@guarded
def retry(
    job: Annotated[str, typer.Argument(help="Job id.")],
    server: ServerOpt = DEFAULT_URL,
) -> None:
    """Queue a finished job again; prints its id."""
    from hodei.cli_render import clean

    _, body = _job_request(server, "POST", job, "/retry")
    new_id = clean(body.get("id") or job)
    typer.echo(new_id)
    typer.echo(f"job {new_id} {clean(body.get('state'))}", err=True)


# --- workers and secrets ----------------------------------------------------------------------


@app.command()
@guarded
def workers(output: OutputOpt = Output.table, server: ServerOpt = DEFAULT_URL) -> None:
    """List connected workers with capacity, usage and running jobs."""
    from hodei.cli_client import decode_json
    from hodei.cli_render import workers_table, write_json_verbatim

    with client(server) as api:
        response = api.request("GET", "/api/v1/workers")
        if output is Output.json:
            write_json_verbatim(response.content)
            return
        items = _items(decode_json(response))
    typer.echo(workers_table(items) if items else "no workers")


@app.command("worker-otp")
@guarded
def worker_otp(
    label: LabelOpt = None,
    ttl: Annotated[str, typer.Option(help="How long the OTP stays valid.")] = "10m",
    server: ServerOpt = DEFAULT_URL,
) -> None:
    """Create a single-use worker OTP and print it alone (for `hodei agent --token`)."""
    from hodei.domain.jobs import parse_duration

    body = {
        "labels": parse_pairs(label, "--label", "KEY"),
        "ttl_s": parse_opt(parse_duration, ttl, "--ttl"),
    }
    with client(server) as api:
        answer = api.call("POST", "/api/v1/workers/otp", json_body=body)
    otp = answer.get("otp") if isinstance(answer, dict) else None
    if not isinstance(otp, str) or not otp:
        fail("unexpected answer from the server (no 'otp')")
    typer.echo(otp)


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
    return f"/api/v1/secrets/{quote(name, safe='')}"


@secret_app.command("set")
@guarded
def secret_set(
    name: Annotated[str, typer.Argument(help="Secret name (the job's env var name).")],
    server: ServerOpt = DEFAULT_URL,
) -> None:
    """Store a secret; the value is read from stdin (or prompted for, without echo)."""
    from hodei.cli_render import clean

    value = _read_secret_value()
    with client(server) as api:
        api.request("PUT", _secret_path(name), json_body={"value": value})
    typer.echo(f"secret {clean(name)} saved")


@secret_app.command("list")
@guarded
def secret_list(server: ServerOpt = DEFAULT_URL) -> None:
    """List secret names (never values)."""
    from hodei.cli_render import secrets_table

    with client(server) as api:
        items = _items(api.call("GET", "/api/v1/secrets"))
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


# --- PKI --------------------------------------------------------------------------------------


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
    home: Annotated[
        str | None,
        typer.Option(envvar="HODEI_HOME", help="Data directory.  [default: ~/.hodei]"),
    ] = None,
) -> None:
    """Create the CA and the server's TLS certificate under HODEI_HOME/pki/."""
    from pathlib import Path

    from hodei.config import default_home
    from hodei.security.pki import DEFAULT_SANS
    from hodei.security.pki_files import PkiPaths, init_pki

    paths = PkiPaths.of_home(Path(home).expanduser() if home else default_home())
    names = san or list(DEFAULT_SANS)
    init_pki(paths, names, force=force)
    typer.echo(f"CA: {paths.ca_cert} (key {paths.ca_key}, mode 0600)")
    typer.echo(f"server certificate: {paths.server_cert} for {', '.join(names)}")


@pki_app.command("list")
@guarded
def pki_list(output: OutputOpt = Output.table, server: ServerOpt = DEFAULT_URL) -> None:
    """List the agent certificates the server issued, with their state."""
    from hodei.cli_render import clean, write_json_verbatim

    with client(server) as api:
        response = api.request("GET", "/api/v1/pki/certs")
        if output is Output.json:
            write_json_verbatim(response.content)
            return
        from hodei.cli_client import decode_json

        items = _items(decode_json(response))
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

    with client(server) as api:
        answer = api.call("POST", "/api/v1/pki/revoke", json_body={"target": target})
    items = answer.get("items") if isinstance(answer, dict) else None
    if not isinstance(items, list):
        fail("unexpected answer from the server (no 'items' list)")
    for item in items:
        if isinstance(item, dict):
            typer.echo(
                f"revoked {clean(item.get('serial'))} (worker {clean(item.get('worker_id'))})"
            )


def main() -> None:
    app()


if __name__ == "__main__":
    main()


# --- API tokens and the audit trail -------------------------------------------------------


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
    from hodei.cli_client import decode_json
    from hodei.cli_render import table, when, write_json_verbatim

    with client(server) as api:
        response = api.request("GET", "/api/v1/tokens")
    if output is Output.json:
        write_json_verbatim(response.content)
        return
    rows = [
        (
            t.get("id"),
            t.get("role"),
            t.get("name") or "-",
            when(t.get("created_at")),
            when(t.get("revoked_at")) if t.get("revoked_at") else "-",
        )
        for t in _items(decode_json(response))
    ]
    typer.echo(table(("ID", "ROLE", "NAME", "CREATED", "REVOKED"), rows) if rows else "no tokens")


@token_app.command("revoke")
@guarded
def token_revoke(
    token_id: Annotated[str, typer.Argument(help="Token id (see `hodei token list`).")],
    server: ServerOpt = DEFAULT_URL,
) -> None:
    """Revoke an API token: it stops working at once on this server."""
    from urllib.parse import quote

    from hodei.cli_render import clean

    path = f"/api/v1/tokens/{quote(token_id, safe='')}/revoke"
    with client(server) as api:
        api.request("POST", path, not_found=f"no token {token_id!r}")
    typer.echo(f"token {clean(token_id)} revoked")


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
    from hodei.cli_client import decode_json
    from hodei.cli_render import table, when, write_json_verbatim

    params: dict[str, Any] = {"limit": limit}
    if action:
        params["action"] = action
    if target:
        params["target"] = target
    with client(server) as api:
        response = api.request("GET", "/api/v1/audit", params=params)
    if output is Output.json:
        write_json_verbatim(response.content)
        return
    rows = [
        (
            when(e.get("at")),
            e.get("actor"),
            e.get("action"),
            e.get("target") or "-",
            e.get("detail") or "-",
        )
        for e in _items(decode_json(response))
    ]
    typer.echo(
        table(("WHEN", "ACTOR", "ACTION", "TARGET", "DETAIL"), rows) if rows else "no entries"
    )
