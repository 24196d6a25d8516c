"""Liveness (public) and the Prometheus metrics (a viewer token: see domain.access)."""

from __future__ import annotations

import time
from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response

import hodei
from hodei.server.api.http.deps import Services

router = APIRouter()


@router.get("/healthz")
async def healthz(services: Services) -> dict[str, Any]:
    uptime = time.time() - services.started_at
    return {"status": "ok", "version": hodei.__version__, "uptime_s": uptime}


@router.get("/metrics")
async def prometheus(services: Services) -> Response:
    return Response(services.metrics.render(), media_type="text/plain; version=0.0.4")
