"""Schedules, their fires and templates as JSON (REST and the dashboard)."""

from __future__ import annotations

from typing import Any

from hodei.domain.schedules import Fire, Schedule, describe
from hodei.domain.templates import TemplateRecord
from hodei.server.api.views import iso
from hodei.server.core.schedules import ScheduleView


def fire_to_dict(fire: Fire) -> dict[str, Any]:
    return {
        "id": fire.id,
        "scheduled_at": iso(fire.scheduled_at),
        "outcome": fire.outcome.value,
        "reason": fire.reason,
        "decided_at": iso(fire.decided_at),
        "job_id": fire.job_id,
        "run_id": fire.run_id,
        "covers": fire.covers,
        "manual": fire.manual,
        "template_version": fire.template_version or None,
        "result": fire.result or None,
    }


def schedule_to_dict(s: Schedule) -> dict[str, Any]:
    target: dict[str, Any] = {"kind": s.kind.value}
    if s.spec is not None:
        target["command"] = s.spec.command
        target["arguments"] = list(s.spec.arguments)
        target["name"] = s.spec.name
    elif s.kind.value == "template":
        target["template"] = s.source
    else:
        target["pipeline"] = s.source
    if s.params:
        target["params"] = dict(s.params)
    return {
        "id": s.id,
        "name": s.name,
        "cron": s.cron,
        "timezone": s.timezone,
        "target": target,
        "overlap": s.overlap.value,
        "catch_up": s.catch_up.value,
        "catch_up_limit": s.catch_up_limit,
        "starting_deadline_s": s.starting_deadline_s or None,
        "pause_after": s.pause_after or None,
        "paused": s.paused,
        "pause_reason": s.pause_reason,
        "failures": s.failures,
        "next_fire": iso(s.next_fire) if not s.paused else None,
        "created_at": iso(s.created_at),
        "created_by": s.created_by,
        "version": s.version,
    }


def view_to_dict(view: ScheduleView) -> dict[str, Any]:
    out = schedule_to_dict(view.schedule)
    out["upcoming"] = [iso(t) for t in view.upcoming]
    out["upcoming_local"] = [describe(t, view.schedule.timezone) for t in view.upcoming]
    out["fires"] = [fire_to_dict(f) for f in view.fires]
    return out


def template_to_dict(t: TemplateRecord, source: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": t.name,
        "version": t.version,
        "kind": t.kind,
        "description": t.description,
        "created_at": iso(t.created_at),
        "created_by": t.created_by,
    }
    if source:
        out["source"] = t.source
    return out
