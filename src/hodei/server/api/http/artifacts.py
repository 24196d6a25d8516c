"""REST routes of a job's artifacts: what its latest archive is, and its bytes (a tar file)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from hodei.errors import NotFoundError
from hodei.ports import ArtifactInfo, ArtifactStore
from hodei.server.api.http.deps import HttpServices, Services
from hodei.server.api.views import iso

CHUNK = 1 << 20
router = APIRouter()


async def _info(services: HttpServices, job_id: str, attempt: int | None) -> ArtifactInfo:
    job = await services.api.get(job_id)  # NotFoundError for an unknown job
    store = services.artifacts
    if attempt is not None:
        info = await asyncio.to_thread(store.info, job.id, attempt)
    else:
        info = await asyncio.to_thread(store.latest, job.id)
    if info is None:
        which = f"attempt {attempt} of job {job.id}" if attempt else f"job {job.id}"
        raise NotFoundError(f"{which} has no artifacts (none declared, not produced or expired)")
    return info


@router.get("/api/v1/jobs/{job_id}/artifacts")
async def describe(
    job_id: str, services: Services, attempt: Annotated[int | None, Query(ge=1)] = None
) -> dict[str, Any]:
    info = await _info(services, job_id, attempt)
    return {
        "job_id": info.job_id,
        "attempt": info.attempt,
        "sha256": info.sha256,
        "size": info.size,
        "created_at": iso(info.created_at),
        "download": f"/api/v1/jobs/{info.job_id}/artifacts/archive?attempt={info.attempt}",
    }


@router.get("/api/v1/jobs/{job_id}/artifacts/archive")
async def archive(
    job_id: str, services: Services, attempt: Annotated[int | None, Query(ge=1)] = None
) -> StreamingResponse:
    info = await _info(services, job_id, attempt)
    name = f"{info.job_id}-{info.attempt}.tar"
    headers = {
        "Content-Disposition": f'attachment; filename="{name}"',
        "Content-Length": str(info.size),
        "X-Checksum-Sha256": info.sha256,
    }
    body = _chunks(services.artifacts, info)
    return StreamingResponse(body, media_type="application/x-tar", headers=headers)


async def _chunks(store: ArtifactStore, info: ArtifactInfo) -> AsyncIterator[bytes]:
    offset = 0
    while offset < info.size:
        data = await asyncio.to_thread(store.read, info.job_id, info.attempt, offset, CHUNK)
        if not data:
            return
        offset += len(data)
        yield data
