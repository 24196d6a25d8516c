"""Entry point of `hodei agent`: set up logging and the event loop, run one session."""

from __future__ import annotations

import asyncio
import logging
import os

from hodei.agent.lifeline import tie_to_parent
from hodei.agent.session import AgentSession
from hodei.agent.tls import AgentTls
from hodei.agent.tracing import run_tracing
from hodei.gc_tuning import long_lived_from_here


def _setup_logging() -> None:
    # The CLI may have configured logging already; otherwise concise lines on stderr.
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.INFO, format="hodei-agent: %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request is noise here


def run_agent(
    server_url: str,
    otp: str,
    labels: dict[str, str],
    slots: int,
    cancel_grace_s: float = 5.0,
    *,
    ca: str = "",
    enroll_url: str = "",
    ca_pem: str = "",
    image: str = "",
) -> int:
    """Run the agent until it stops; return the process exit code (0, 1 or 3). With `ca` (and
    `enroll_url`) it enrolls for a client certificate and connects with mTLS."""
    _setup_logging()
    # A provider that started this agent as its child asks, via HODEI_PARENT_PID, that the
    # agent dies with it (the SIGTERM then stops the agent and its jobs cleanly).
    tie_to_parent(os.environ.get("HODEI_PARENT_PID"))
    tls = None
    if ca:
        tls = AgentTls.from_file(ca, enroll_url)
    elif ca_pem:
        tls = AgentTls.from_pem(ca_pem.encode(), enroll_url)
    tracing = run_tracing(os.environ)
    session = AgentSession(
        server_url, otp, labels, slots, cancel_grace_s, tls=tls, image=image, tracing=tracing
    )
    long_lived_from_here()  # its modules: no pause of the job's log path to walk them again
    try:
        try:
            import uvloop
        except ImportError:  # optional: the default loop works, only slower
            return asyncio.run(session.run())
        return uvloop.run(session.run())
    finally:
        tracing.close()  # the spans not sent yet go out before the agent exits
