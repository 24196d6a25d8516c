"""What every ScheduleStore and TemplateStore adapter shares: the row layout of schedules,
fires and template versions, how values are encoded in them, the checks on changes and the
conflict messages. Both SQL dialects store the same columns with the same encodings, and the
in-memory store keeps what a round trip through them gives back."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import fields
from typing import Any

import orjson

from hodei.adapters.store.common import decode_spec, encode_spec
from hodei.domain.schedules.model import (
    CatchUp,
    Fire,
    FireOutcome,
    Overlap,
    Schedule,
    TargetKind,
)
from hodei.domain.templates import TemplateRecord
from hodei.errors import ConflictError, NotFoundError

SCHEDULE_FIELDS = tuple(f.name for f in fields(Schedule))
SCHEDULE_MUTABLE = frozenset(SCHEDULE_FIELDS) - {"id", "version", "created_at"}
FIRE_FIELDS = tuple(f.name for f in fields(Fire))
FIRE_MUTABLE = frozenset({"outcome", "reason", "job_id", "run_id", "result"})
TEMPLATE_FIELDS = tuple(f.name for f in fields(TemplateRecord))
MAX_SCHEDULES = 10_000  # list_schedules gives at most this many
ACTIVE_OUTCOMES = (FireOutcome.STARTING.value, FireOutcome.STARTED.value)
ACTIVE_FIRE_SQL = f"outcome IN {ACTIVE_OUTCOMES!r} AND result = ''"

_Codec = dict[str, Callable[[Any], Any]]


def _json(value: object) -> str:
    return orjson.dumps(value).decode()


def _identity(value: Any) -> Any:
    return value


_SCHEDULE_ENCODE: _Codec = {
    "kind": lambda v: TargetKind(v).value,
    "spec": lambda v: encode_spec(v) if v is not None else None,
    "params": lambda v: _json(dict(v)),
    "overlap": lambda v: Overlap(v).value,
    "catch_up": lambda v: CatchUp(v).value,
    "paused": int,
}
_SCHEDULE_DECODE: _Codec = {
    "kind": TargetKind,
    "spec": lambda v: decode_spec(v) if v is not None else None,
    "params": orjson.loads,
    "overlap": Overlap,
    "catch_up": CatchUp,
    "paused": bool,
}
_FIRE_ENCODE: _Codec = {
    "outcome": lambda v: FireOutcome(v).value,
    "manual": int,
    "replace_previous": int,
}
_FIRE_DECODE: _Codec = {"outcome": FireOutcome, "manual": bool, "replace_previous": bool}


def _convert(values: Mapping[str, Any], codec: _Codec) -> dict[str, Any]:
    return {name: codec.get(name, _identity)(value) for name, value in values.items()}


def schedule_params(s: Schedule) -> tuple[Any, ...]:
    """Column values in SCHEDULE_FIELDS order."""
    values = {name: getattr(s, name) for name in SCHEDULE_FIELDS}
    return tuple(_convert(values, _SCHEDULE_ENCODE).values())


def row_to_schedule(row: Sequence[Any]) -> Schedule:
    return Schedule(**_convert(dict(zip(SCHEDULE_FIELDS, row, strict=True)), _SCHEDULE_DECODE))


def stored_schedule(s: Schedule) -> Schedule:
    return row_to_schedule(schedule_params(s))


def fire_params(f: Fire) -> tuple[Any, ...]:
    values = {name: getattr(f, name) for name in FIRE_FIELDS}
    return tuple(_convert(values, _FIRE_ENCODE).values())


def row_to_fire(row: Sequence[Any]) -> Fire:
    return Fire(**_convert(dict(zip(FIRE_FIELDS, row, strict=True)), _FIRE_DECODE))


def stored_fire(f: Fire) -> Fire:
    return row_to_fire(fire_params(f))


def template_params(t: TemplateRecord) -> tuple[Any, ...]:
    return tuple(getattr(t, name) for name in TEMPLATE_FIELDS)


def row_to_template(row: Sequence[Any]) -> TemplateRecord:
    return TemplateRecord(**dict(zip(TEMPLATE_FIELDS, row, strict=True)))


def schedule_changes(changes: Mapping[str, Any]) -> dict[str, Any]:
    """The encoded columns of a schedule's changes; ValueError for a field it may not set."""
    bad = sorted(set(changes) - SCHEDULE_MUTABLE)
    if bad:
        raise ValueError(f"schedule fields that cannot change: {', '.join(bad)}")
    return _convert(changes, _SCHEDULE_ENCODE)


def fire_changes(changes: Mapping[str, Any]) -> dict[str, Any]:
    bad = sorted(set(changes) - FIRE_MUTABLE)
    if bad:
        raise ValueError(f"fire fields that cannot change: {', '.join(bad)}")
    return _convert(changes, _FIRE_ENCODE)


def outcome_values(outcomes: Collection[FireOutcome]) -> list[str]:
    return sorted(FireOutcome(o).value for o in outcomes)


def schedule_not_found(what: str) -> NotFoundError:
    return NotFoundError(f"no schedule {what}")


def version_conflict(schedule_id: str, stored: int, expected: int) -> ConflictError:
    return ConflictError(
        f"schedule {schedule_id} is at version {stored}, not {expected} (changed meanwhile)"
    )


def fire_conflict(fire_id: str, stored: tuple[str, str] | None) -> NotFoundError | ConflictError:
    if stored is None:
        return NotFoundError(f"no fire {fire_id}")
    outcome, result = stored
    ended = f", ended {result}" if result else ""
    return ConflictError(f"fire {fire_id} is {outcome}{ended}")


def template_not_found(name: str, version: int | None) -> NotFoundError:
    if version is None:
        return NotFoundError(f"no template {name}")
    return NotFoundError(f"no version {version} of template {name}")
