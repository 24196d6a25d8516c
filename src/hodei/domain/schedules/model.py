"""Schedules and their fires as stored values, and the deterministic ids of what a fire starts.

A schedule runs a target on a cron expression: a job spec, a pipeline file or a template with
parameter values. Each time it is due it is *fired*: one `Fire` row per decision (started, or
skipped with the reason; one row may stand for several missed times, `covers`). The row of a
fire that starts something is written in the same transaction as the schedule's new
`next_fire` (a compare-and-swap on `version`), with the id of the job or run it will start
already in it: `fire_id(schedule, at)`. The store refuses a second job (or run) with that id,
so a fire starts at most one run, whichever server, or the same server after a crash, tries.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass, field, replace
from enum import StrEnum

from hodei.domain.jobs import FIRE_JOB_ID, JobSpec
from hodei.errors import ValidationError

__all__ = [
    "CatchUp",
    "Fire",
    "FireOutcome",
    "Overlap",
    "Schedule",
    "TargetKind",
    "fire_id",
    "fire_run_id",
    "new_schedule_id",
    "validate_name",
]

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
SCHEDULE_ID = re.compile(r"^s[0-9a-f]{12}$")
FIRE_ID = FIRE_JOB_ID  # the id of a fire is the id of the job it starts


class Overlap(StrEnum):
    """What a fire does while the run of an earlier fire is still active."""

    ALLOW = "allow"  # start anyway
    FORBID = "forbid"  # skip this fire (recorded, with the reason)
    REPLACE = "replace"  # cancel the earlier run, start the new one


class CatchUp(StrEnum):
    """What happens to the fires missed while the server was down or the schedule paused."""

    SKIP = "skip"  # none of them runs: the schedule waits for its next time
    ONCE = "once"  # one run for all of them
    ALL = "all"  # each of them runs, up to the schedule's catch_up_limit (the newest)


class TargetKind(StrEnum):
    JOB = "job"
    PIPELINE = "pipeline"
    TEMPLATE = "template"


class FireOutcome(StrEnum):
    STARTING = "starting"  # claimed; its job or run is being created
    STARTED = "started"  # its job or run exists
    SKIPPED = "skipped"  # nothing started (see reason)
    FAILED = "failed"  # could not start (e.g. the template is gone, a secret deleted)


@dataclass(frozen=True, slots=True)
class Schedule:
    id: str
    name: str
    cron: str  # as written: five fields or an alias
    timezone: str = "UTC"
    kind: TargetKind = TargetKind.JOB
    spec: JobSpec | None = None  # kind job
    source: str = ""  # kind pipeline: the file's text; kind template: the template's name
    params: dict[str, str] = field(default_factory=dict)  # the pipeline's or template's
    overlap: Overlap = Overlap.ALLOW
    catch_up: CatchUp = CatchUp.SKIP
    catch_up_limit: int = 10
    starting_deadline_s: float = 0.0  # 0: none
    pause_after: int = 0  # pause after this many failed runs in a row (0: never)
    paused: bool = False
    pause_reason: str = ""
    failures: int = 0  # failed runs in a row
    next_fire: float | None = None  # None: the expression matches no date
    created_at: float = 0.0
    created_by: str = ""
    updated_at: float = 0.0
    version: int = 0

    def with_changes(self, **changes: object) -> Schedule:
        return replace(self, **changes)  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class Fire:
    id: str  # fire_id(schedule, at); the job id of what it starts (a pipeline: fire_run_id)
    schedule_id: str
    scheduled_at: float  # the time it was due (run-now: when it was asked)
    outcome: FireOutcome
    reason: str = ""
    decided_at: float = 0.0
    job_id: str | None = None
    run_id: str | None = None
    covers: int = 1  # the due times this row stands for (missed fires skipped together)
    manual: bool = False  # run-now
    template_version: int = 0
    replace_previous: bool = False  # overlap replace: cancel the earlier active runs first
    result: str = ""  # how its job or run ended ("" while active, or when nothing started)

    def with_changes(self, **changes: object) -> Fire:
        return replace(self, **changes)  # type: ignore[arg-type]

    @property
    def active(self) -> bool:
        """Started (or starting) and not known to have ended."""
        return self.outcome in (FireOutcome.STARTING, FireOutcome.STARTED) and not self.result


def new_schedule_id() -> str:
    return "s" + secrets.token_hex(6)


def validate_name(name: str, what: str = "schedule") -> str:
    if not _NAME_RE.fullmatch(name):
        raise ValidationError(
            f"{what} name must be 1-63 characters of letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def fire_id(schedule_id: str, at: float, *, manual: bool = False) -> str:
    """The id of a fire (and of the job it starts): the schedule's id and the due time in
    whole seconds (cron fires are whole minutes); a run-now fire in milliseconds, marked n."""
    if manual:
        return f"{schedule_id}-n{round(at * 1000)}"
    return f"{schedule_id}-{int(at)}"


def schedule_of_fire(job_id: str) -> str | None:
    """The schedule id of a fire's job id, or None for any other id."""
    m = FIRE_ID.fullmatch(job_id)
    return m.group(1) if m else None


def fire_run_id(fire: str) -> str:
    """The pipeline run id of a fire (the form of domain.pipelines.runs.new_run_id), derived
    from the fire's id, so a second try makes the same run id and the store refuses it."""
    return "r" + hashlib.sha256(fire.encode()).hexdigest()[:17]
