"""gRPC ScheduleService: schedules and templates as the REST API has them, for the same
roles. The use cases audit what they do; messages are built from the REST JSON views
(schedule_views), so both APIs show a schedule the same way."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import grpc

from hodei._proto.hodei.v1 import schedules_pb2 as pb
from hodei._proto.hodei.v1 import schedules_pb2_grpc
from hodei.domain.access import Principal, Role
from hodei.domain.jobs import JobSpec
from hodei.domain.templates import MAX_TEMPLATE_BYTES
from hodei.server.api.grpc.calls import Context, allow, call
from hodei.server.api.schedule_views import fire_to_dict, template_to_dict, view_to_dict
from hodei.server.core.schedules import ScheduleRequest, Schedules, Templates
from hodei.server.security.api_auth import ApiAuth

MAX_SOURCE = 1 << 20
MAX_PARAMS = 64


def _text(value: object) -> str:
    return "" if value is None else str(value)


def fire_to_proto(f: Mapping[str, Any]) -> pb.Fire:
    return pb.Fire(
        id=f["id"],
        scheduled_at=_text(f["scheduled_at"]),
        outcome=f["outcome"],
        reason=f["reason"],
        job_id=_text(f["job_id"]),
        run_id=_text(f["run_id"]),
        covers=int(f["covers"]),
        manual=bool(f["manual"]),
        template_version=int(f["template_version"] or 0),
        result=_text(f["result"]),
    )


def schedule_to_proto(view: Mapping[str, Any]) -> pb.Schedule:
    target = view["target"]
    kind = target["kind"]
    if kind == "job":
        shown = " ".join([target["command"], *target["arguments"]])
    else:
        shown = target.get("template") or target.get("pipeline") or ""
    return pb.Schedule(
        id=view["id"],
        name=view["name"],
        cron=view["cron"],
        timezone=view["timezone"],
        kind=kind,
        target=shown,
        params={str(k): str(v) for k, v in (target.get("params") or {}).items()},
        overlap=view["overlap"],
        catch_up=view["catch_up"],
        catch_up_limit=view["catch_up_limit"],
        starting_deadline_s=float(view["starting_deadline_s"] or 0),
        pause_after=int(view["pause_after"] or 0),
        paused=view["paused"],
        pause_reason=view["pause_reason"],
        failures=view["failures"],
        upcoming=[_text(t) for t in view.get("upcoming") or ()],
        fires=[fire_to_proto(f) for f in view.get("fires") or ()],
    )


def template_to_proto(t: Mapping[str, Any]) -> pb.Template:
    return pb.Template(
        name=t["name"],
        version=t["version"],
        kind=t["kind"],
        description=t["description"],
        created_at=_text(t["created_at"]),
    )


class ScheduleService(schedules_pb2_grpc.ScheduleServiceServicer):
    def __init__(self, schedules: Schedules, templates: Templates, auth: ApiAuth) -> None:
        self.schedules = schedules
        self.templates = templates
        self.auth = auth

    async def _allow(self, context: Context, needed: Role, what: str) -> Principal:
        return await allow(self.auth, context, needed, what)

    async def _invalid(self, context: Context, message: str) -> None:
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, message)

    async def _view(self, context: Context, name: str) -> pb.Schedule:
        view = await call(context, lambda: self.schedules.get(name))
        return schedule_to_proto(view_to_dict(view))

    async def CreateSchedule(
        self, request: pb.CreateScheduleRequest, context: Context
    ) -> pb.Schedule:
        principal = await self._allow(context, Role.ADMIN, "grpc CreateSchedule")
        if len(request.params) > MAX_PARAMS or len(request.pipeline) > MAX_SOURCE:
            await self._invalid(context, f"at most {MAX_PARAMS} params and a 1 MiB file")
        target = request.WhichOneof("target")
        spec = None
        if target == "job":
            job = request.job
            spec = JobSpec(
                command=job.command,
                arguments=tuple(job.arguments),
                name=job.name,
                env=dict(job.env),
                labels=dict(job.labels),
                timeout_s=job.timeout_s,
                queued_by=principal.actor,
                image=job.image or None,
            )
        wanted = ScheduleRequest(
            name=request.name,
            cron=request.cron,
            timezone=request.timezone or "UTC",
            spec=spec,
            pipeline=request.pipeline if target == "pipeline" else None,
            template=request.template if target == "template" else None,
            params=dict(request.params),
            overlap=request.overlap or "allow",
            catch_up=request.catch_up or "skip",
            catch_up_limit=request.catch_up_limit or 10,
            starting_deadline_s=request.starting_deadline_s,
            pause_after=request.pause_after,
        )
        created = await call(context, lambda: self.schedules.create(wanted, principal.actor))
        return await self._view(context, created.name)

    async def GetSchedule(self, request: pb.ScheduleRequest, context: Context) -> pb.Schedule:
        await self._allow(context, Role.VIEWER, "grpc GetSchedule")
        return await self._view(context, request.name)

    async def ListSchedules(
        self, request: pb.ListSchedulesRequest, context: Context
    ) -> pb.ListSchedulesResponse:
        await self._allow(context, Role.VIEWER, "grpc ListSchedules")
        fires = min(request.fires or 3, 20)
        views = await call(context, lambda: self.schedules.listing(fires))
        return pb.ListSchedulesResponse(items=[schedule_to_proto(view_to_dict(v)) for v in views])

    async def PauseSchedule(
        self, request: pb.PauseScheduleRequest, context: Context
    ) -> pb.Schedule:
        principal = await self._allow(context, Role.ADMIN, "grpc PauseSchedule")
        reason = request.reason[:500]
        await call(context, lambda: self.schedules.pause(request.name, principal.actor, reason))
        return await self._view(context, request.name)

    async def ResumeSchedule(self, request: pb.ScheduleRequest, context: Context) -> pb.Schedule:
        principal = await self._allow(context, Role.ADMIN, "grpc ResumeSchedule")
        await call(context, lambda: self.schedules.resume(request.name, principal.actor))
        return await self._view(context, request.name)

    async def DeleteSchedule(
        self, request: pb.ScheduleRequest, context: Context
    ) -> pb.DeleteScheduleResponse:
        principal = await self._allow(context, Role.ADMIN, "grpc DeleteSchedule")
        await call(context, lambda: self.schedules.delete(request.name, principal.actor))
        return pb.DeleteScheduleResponse()

    async def RunScheduleNow(self, request: pb.ScheduleRequest, context: Context) -> pb.Fire:
        principal = await self._allow(context, Role.ADMIN, "grpc RunScheduleNow")
        fire = await call(context, lambda: self.schedules.run_now(request.name, principal.actor))
        return fire_to_proto(fire_to_dict(fire))

    async def CreateTemplate(
        self, request: pb.CreateTemplateRequest, context: Context
    ) -> pb.Template:
        principal = await self._allow(context, Role.ADMIN, "grpc CreateTemplate")
        if not request.source or len(request.source.encode()) > MAX_TEMPLATE_BYTES:
            await self._invalid(context, f"source must be 1 to {MAX_TEMPLATE_BYTES} bytes")
        record = await call(
            context, lambda: self.templates.create(request.name, request.source, principal.actor)
        )
        return template_to_proto(template_to_dict(record))

    async def ListTemplates(
        self, request: pb.ListTemplatesRequest, context: Context
    ) -> pb.ListTemplatesResponse:
        await self._allow(context, Role.VIEWER, "grpc ListTemplates")
        records = await call(context, self.templates.listing)
        return pb.ListTemplatesResponse(
            items=[template_to_proto(template_to_dict(r)) for r in records]
        )

    async def RunTemplate(
        self, request: pb.RunTemplateRequest, context: Context
    ) -> pb.RunTemplateResponse:
        principal = await self._allow(context, Role.SUBMITTER, "grpc RunTemplate")
        if len(request.params) > MAX_PARAMS:
            await self._invalid(context, f"at most {MAX_PARAMS} params")
        launched = await call(
            context,
            lambda: self.templates.run(
                request.name, dict(request.params), principal.actor, request.version or None
            ),
        )
        return pb.RunTemplateResponse(
            version=launched.template_version,
            job_id=launched.job.id if launched.job else "",
            run_id=launched.run.id if launched.run else "",
        )
