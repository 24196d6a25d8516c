"""REST API (JSON) and the SSE log stream, served by uvicorn in the server's event loop."""

from __future__ import annotations

from fastapi import FastAPI

import hodei
from hodei.server.api.http import (
    artifacts,
    audit,
    dashboard,
    health,
    jobs,
    logs,
    pipelines,
    pki,
    schedules,
    secrets,
    session,
    templates,
    tokens,
    workers,
)
from hodei.server.api.http.body_limit import BodyLimit
from hodei.server.api.http.deps import HttpServices
from hodei.server.api.http.errors import install_error_handlers

MAX_BODY = 1 << 20
# In the order routes have always been matched (and listed in /openapi.json).
ROUTERS = (
    health,
    jobs,
    logs,
    workers,
    secrets,
    pki,
    tokens,
    audit,
    pipelines,
    artifacts,
    schedules,
    templates,
    session,
    dashboard,
)


def create_http_app(services: HttpServices) -> FastAPI:
    app = FastAPI(title="Hodei Jobs", version=hodei.__version__)
    app.state.services = services  # what the routers' Services dependency reads
    install_error_handlers(app)
    app.add_middleware(BodyLimit, limit=MAX_BODY)
    for module in ROUTERS:
        app.include_router(module.router)
    dashboard.mount_static(app)
    return app
