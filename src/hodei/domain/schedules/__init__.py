"""Schedules: cron expressions in a time zone (`cron`), schedules and fires as stored values
(`model`), and what a due schedule does (`policy`: catch-up, starting deadline, overlap,
the pause after failed runs). Pure functions of the time they are given."""

from hodei.domain.schedules.cron import Cron, describe, fire_times, min_gap, next_fire, parse_cron
from hodei.domain.schedules.model import (
    CatchUp,
    Fire,
    FireOutcome,
    Overlap,
    Schedule,
    TargetKind,
    fire_id,
    fire_run_id,
    new_schedule_id,
    schedule_of_fire,
    validate_name,
)
from hodei.domain.schedules.policy import ON_TIME_S, Decision, Plan, after_result, plan

__all__ = [
    "ON_TIME_S",
    "CatchUp",
    "Cron",
    "Decision",
    "Fire",
    "FireOutcome",
    "Overlap",
    "Plan",
    "Schedule",
    "TargetKind",
    "after_result",
    "describe",
    "fire_id",
    "fire_run_id",
    "fire_times",
    "min_gap",
    "new_schedule_id",
    "next_fire",
    "parse_cron",
    "plan",
    "schedule_of_fire",
    "validate_name",
]
