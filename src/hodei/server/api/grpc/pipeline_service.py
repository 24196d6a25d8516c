"""gRPC PipelineService: pipeline runs as the REST API has them (start, read, list, cancel,
retry, approve), for the same roles. The `Pipelines` use cases audit what they do; a message
is built from the run's REST JSON (pipeline_views), so both APIs show a run the same way."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import grpc

from hodei._proto.hodei.v1 import pipelines_pb2 as pb
from hodei._proto.hodei.v1 import pipelines_pb2_grpc
from hodei.domain.access import Principal, Role
from hodei.domain.pipelines.runs import PipelineRun, RunState, valid_run_id
from hodei.server.api.grpc.calls import Context, allow, call
from hodei.server.api.pipeline_views import run_summary, run_to_dict, with_counts
from hodei.server.core.pipelines import Pipelines
from hodei.server.security.api_auth import ApiAuth

MAX_SOURCE = 1 << 20  # as REST: the largest file the domain reads
MAX_PARAMS = 256


def _text(value: object) -> str:
    return "" if value is None else str(value)


def step_to_proto(row: Mapping[str, Any]) -> pb.StepJob:
    artifact = row.get("artifact") or {}
    step = pb.StepJob(
        id=row["id"],
        step=row["step"],
        index=row["index"],
        status=row["status"],
        needs=list(row["needs"]),
        when=row["when"],
        matrix={str(k): str(v) for k, v in row["matrix"].items()},
        job_id=_text(row["job_id"]),
        attempt=row["attempt"],
        generation=row["generation"],
        reason=row["reason"],
        outputs=dict(row["outputs"]),
        cached_from=_text(row["cached_from"]),
        artifact_sha256=_text(artifact.get("sha256")),
        artifact_bytes=int(artifact.get("size") or 0),
        started_at=_text(row["started_at"]),
        finished_at=_text(row["finished_at"]),
    )
    if row["duration_s"] is not None:
        step.duration_s = float(row["duration_s"])
    return step


def run_to_proto(view: Mapping[str, Any]) -> pb.PipelineRun:
    """A run's REST JSON (run_to_dict, or a summary with counts) as its message."""
    return pb.PipelineRun(
        id=view["id"],
        name=view["name"],
        state=view["state"],
        reason=view["reason"],
        filename=view["filename"],
        params={str(k): str(v) for k, v in view["params"].items()},
        approved=list(view["approved"]),
        no_cache=view["no_cache"],
        queued_by=view["queued_by"],
        cancelled_by=_text(view["cancelled_by"]),
        generation=view["generation"],
        version=view["version"],
        created_at=_text(view["created_at"]),
        finished_at=_text(view["finished_at"]),
        counts=dict(view.get("counts") or {}),
        awaiting_approval=list(view.get("awaiting_approval") or ()),
        steps=[step_to_proto(row) for row in view.get("steps") or ()],
    )


class PipelineService(pipelines_pb2_grpc.PipelineServiceServicer):
    def __init__(self, pipelines: Pipelines, auth: ApiAuth) -> None:
        self.pipelines = pipelines
        self.auth = auth

    async def _allow(self, context: Context, needed: Role, what: str) -> Principal:
        return await allow(self.auth, context, needed, what)

    async def _run_id(self, context: Context, run_id: str) -> str:
        if not valid_run_id(run_id):
            await context.abort(grpc.StatusCode.NOT_FOUND, f"no pipeline run {run_id[:40]!r}")
        return run_id

    async def _view(self, context: Context, run_id: str) -> pb.PipelineRun:
        run, steps = await call(context, lambda: self.pipelines.get(run_id))
        return run_to_proto(run_to_dict(run, steps, self.pipelines.engine.dag_of(run)))

    async def RunPipeline(self, request: pb.RunPipelineRequest, context: Context) -> pb.PipelineRun:
        principal = await self._allow(context, Role.SUBMITTER, "grpc RunPipeline")
        if not request.source or len(request.source) > MAX_SOURCE:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT, "source must be 1 character to 1 MiB of text"
            )
        if len(request.filename) > 255 or len(request.params) > MAX_PARAMS:
            await context.abort(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"filename is at most 255 characters; at most {MAX_PARAMS} params",
            )
        run, steps = await call(
            context,
            lambda: self.pipelines.run(
                request.source,
                dict(request.params),
                filename=request.filename or "pipeline.yaml",
                queued_by=principal.actor,
                no_cache=request.no_cache,
            ),
        )
        return run_to_proto(run_to_dict(run, steps, self.pipelines.engine.dag_of(run)))

    async def GetPipelineRun(
        self, request: pb.PipelineRunRequest, context: Context
    ) -> pb.PipelineRun:
        await self._allow(context, Role.VIEWER, "grpc GetPipelineRun")
        return await self._view(context, await self._run_id(context, request.run_id))

    async def ListPipelineRuns(
        self, request: pb.ListPipelineRunsRequest, context: Context
    ) -> pb.ListPipelineRunsResponse:
        await self._allow(context, Role.VIEWER, "grpc ListPipelineRuns")
        state: RunState | None = None
        if request.state:
            try:
                state = RunState(request.state)
            except ValueError:
                known = ", ".join(s.value for s in RunState)
                await context.abort(
                    grpc.StatusCode.INVALID_ARGUMENT, f"unknown state (use {known})"
                )
        cursor: int | None = None
        if request.cursor:
            if not request.cursor.isdigit() or len(request.cursor) > 18:
                await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "cursor must be a number")
            cursor = int(request.cursor)
        limit = min(max(request.limit or 100, 1), 1000)
        runs, after = await call(context, lambda: self.pipelines.list(state, limit, cursor))
        items = [run_to_proto(await self._summary(context, run)) for run in runs]
        return pb.ListPipelineRunsResponse(items=items, next="" if after is None else str(after))

    async def _summary(self, context: Context, run: PipelineRun) -> dict[str, Any]:
        steps = await call(context, lambda: self.pipelines.store.run_steps(run.id))
        return with_counts(run_summary(run), steps)

    async def CancelPipelineRun(
        self, request: pb.PipelineRunRequest, context: Context
    ) -> pb.PipelineRun:
        principal = await self._allow(context, Role.SUBMITTER, "grpc CancelPipelineRun")
        run_id = await self._run_id(context, request.run_id)
        await call(context, lambda: self.pipelines.cancel(run_id, principal.actor))
        return await self._view(context, run_id)

    async def RetryPipelineRun(
        self, request: pb.PipelineRunRequest, context: Context
    ) -> pb.PipelineRun:
        principal = await self._allow(context, Role.SUBMITTER, "grpc RetryPipelineRun")
        run_id = await self._run_id(context, request.run_id)
        await call(context, lambda: self.pipelines.retry(run_id, principal.actor))
        return await self._view(context, run_id)

    async def ApprovePipelineStep(
        self, request: pb.ApprovePipelineStepRequest, context: Context
    ) -> pb.PipelineRun:
        principal = await self._allow(context, Role.SUBMITTER, "grpc ApprovePipelineStep")
        run_id = await self._run_id(context, request.run_id)
        if not 1 <= len(request.step) <= 64:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "step must be 1-64 characters")
        step = request.step
        await call(context, lambda: self.pipelines.approve(run_id, step, principal.actor))
        return await self._view(context, run_id)
