"""What the routers share: the services they use, reached through a dependency, and who a
request comes from."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, Request

from hodei.domain.access import DEV_PRINCIPAL, Principal
from hodei.ports import ArtifactStore
from hodei.server.core.bus import EventBus
from hodei.server.core.metrics import Metrics
from hodei.server.core.pipelines import Pipelines
from hodei.server.core.provisioning import Provisioner
from hodei.server.core.schedules import Schedules, Templates
from hodei.server.core.service import JobsApi
from hodei.server.core.workers import WorkerRegistry
from hodei.server.security.api_auth import ApiAuth, AuthStore
from hodei.server.security.audit import Auditor
from hodei.server.security.otp import OtpRegistry
from hodei.server.security.sessions import SignInLinks
from hodei.server.security.vault import SecretVault

if TYPE_CHECKING:  # only with --tls is it loaded (cryptography's x509 costs memory)
    from hodei.server.security.agent_pki import AgentAuthority

MAX_INT = (1 << 63) - 1  # offsets and cursors: what a 64-bit store column holds


@dataclass(frozen=True, slots=True, kw_only=True)
class HttpServices:
    api: JobsApi
    vault: SecretVault
    registry: WorkerRegistry
    provisioner: Provisioner
    otps: OtpRegistry
    auditor: Auditor
    auth: ApiAuth
    access: AuthStore  # the token records and the audit trail the access routes list
    metrics: Metrics
    started_at: float  # time.time() when the server started (uptime in /healthz)
    pipelines: Pipelines
    schedules: Schedules
    templates: Templates
    bus: EventBus  # what the SSE stream of a run listens to
    artifacts: ArtifactStore
    links: SignInLinks  # one-time sign-in links of the dashboard
    tls: bool = False  # served over HTTPS: session cookies are Secure
    authority: AgentAuthority | None = None  # with --tls: the agents' CA


async def _services(request: Request) -> HttpServices:
    # async: FastAPI would run a plain function in a worker thread, on every request.
    services: HttpServices = request.app.state.services
    return services


Services = Annotated[HttpServices, Depends(_services)]


def principal_of(request: Request) -> Principal:
    """Who the auth middleware let in (dev mode has no middleware state)."""
    found = getattr(request.state, "principal", None)
    return found if isinstance(found, Principal) else DEV_PRINCIPAL


def actor_of(request: Request) -> str:
    return principal_of(request).actor
