"""The `hodei` command: run the server or an agent, and drive a server over its REST API.

Client commands find the server through `--server` / `HODEI_URL`. Errors end the process with a
one-line `error: ...` on stderr, never a traceback: 1 when the server refused the request, 2 for
bad usage or an unreachable server. Heavy modules (httpx, the server, the agent, grpc) are
imported inside the commands that need them, so `hodei --help` starts fast.

One module per command group; `common` holds the root app and what they share. Importing a
command module registers its commands on `app`, and `hodei --help` lists the commands in that
order, so the imports below keep the order of the help.
"""

from __future__ import annotations

from hodei.cli.common import app

# isort: off
from hodei.cli import server, agent, jobs, pipelines, artifacts, workers  # noqa: F401
from hodei.cli import secrets, tokens, pki, audit, dashboard  # noqa: F401
from hodei.cli import schedules, templates  # noqa: F401
# isort: on

__all__ = ["app", "main"]


def main() -> None:
    app()
