"""What every PipelineStore adapter shares: the row layout of runs and steps, how values are
encoded in them, the checks on changes and the conflict messages.

Both SQL dialects store the same columns with the same encodings (dicts and tuples as JSON
text), and the in-memory store keeps what a round trip through them gives back, so the three
return equal values for the same calls.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import fields
from typing import Any

import orjson

from hodei.domain.pipelines.model import JobStatus
from hodei.domain.pipelines.runs import (
    ACTIVE_RUN_STATES,
    PipelineRun,
    RunState,
    RunStep,
    StepUpdate,
)
from hodei.errors import ConflictError, NotFoundError

# Every PipelineRun field has a column of the same name; every RunStep field too, but `index`
# (an SQL keyword) is the column `idx`.
RUN_FIELDS = tuple(f.name for f in fields(PipelineRun))
RUN_INSERT_FIELDS = tuple(name for name in RUN_FIELDS if name != "seq")
RUN_MUTABLE = frozenset(RUN_FIELDS) - {"id", "seq", "version", "source"}
STEP_FIELDS = tuple(f.name for f in fields(RunStep))
STEP_COLUMNS = tuple("idx" if name == "index" else name for name in STEP_FIELDS)
STEP_MUTABLE = frozenset(STEP_FIELDS) - {"run_id", "step_id", "index"}

# active_runs' condition (state values are plain words, so repr() quotes them as SQL does).
ACTIVE_SQL = f"state IN ({', '.join(repr(s.value) for s in sorted(ACTIVE_RUN_STATES))})"
# The condition of cached_step(), as a literal: it is that of the schemas' partial index, which
# a planner only uses for a query that repeats it (it cannot match a bound parameter to it).
CACHE_SOURCE_SQL = "status = 'succeeded' AND cached_from IS NULL"


def _json(value: object) -> str:
    # Text, not a JSON column type: JSON escapes keep any character (even NUL) storable.
    return orjson.dumps(value).decode()


def _identity(value: Any) -> Any:
    return value


_Codec = dict[str, Callable[[Any], Any]]
_RUN_ENCODE: _Codec = {
    "params": lambda v: _json(dict(v)),
    "state": lambda v: RunState(v).value,
    "approved": lambda v: _json(list(v)),
    "no_cache": bool,
}
_RUN_DECODE: _Codec = {
    "params": orjson.loads,
    "state": RunState,
    "approved": lambda text: tuple(orjson.loads(text)),  # JSON has no tuples
    "no_cache": bool,  # SQLite gives 0 or 1
}
_STEP_ENCODE: _Codec = {"status": lambda v: JobStatus(v).value, "outputs": lambda v: _json(dict(v))}
_STEP_DECODE: _Codec = {"status": JobStatus, "outputs": orjson.loads}


def _convert(values: Mapping[str, Any], codec: _Codec) -> dict[str, Any]:
    return {name: codec.get(name, _identity)(value) for name, value in values.items()}


def run_params(run: PipelineRun) -> tuple[Any, ...]:
    """Column values in RUN_INSERT_FIELDS order."""
    encoded = _convert({name: getattr(run, name) for name in RUN_INSERT_FIELDS}, _RUN_ENCODE)
    return tuple(encoded.values())


def row_to_run(row: Sequence[Any]) -> PipelineRun:
    """A row whose columns are RUN_FIELDS, in order."""
    return PipelineRun(**_convert(dict(zip(RUN_FIELDS, row, strict=True)), _RUN_DECODE))


def step_params(step: RunStep) -> tuple[Any, ...]:
    """Column values in STEP_COLUMNS order."""
    encoded = _convert({name: getattr(step, name) for name in STEP_FIELDS}, _STEP_ENCODE)
    return tuple(encoded.values())


def row_to_step(row: Sequence[Any]) -> RunStep:
    """A row whose columns are STEP_COLUMNS, in order."""
    return RunStep(**_convert(dict(zip(STEP_FIELDS, row, strict=True)), _STEP_DECODE))


def stored_run(run: PipelineRun) -> PipelineRun:
    """The run as a database gives it back (a store without SQL keeps this)."""
    values = {name: getattr(run, name) for name in RUN_FIELDS}
    return PipelineRun(**_convert(_convert(values, _RUN_ENCODE), _RUN_DECODE))


def stored_step(step: RunStep) -> RunStep:
    return row_to_step(step_params(step))


def check_steps(run: PipelineRun, steps: Sequence[RunStep]) -> None:
    """ValueError for steps that are not the run's, or that share an id: a caller's mistake,
    which no store should get as far as its database."""
    others = sorted({step.run_id for step in steps} - {run.id})
    if others:
        raise ValueError(f"steps of run {', '.join(others)} given for run {run.id}")
    twice = sorted(step_id for step_id, n in Counter(s.step_id for s in steps).items() if n > 1)
    if twice:
        raise ValueError(f"run {run.id}: step ids given twice: {', '.join(twice)}")


def _checked(changes: Mapping[str, Any], allowed: frozenset[str], what: str) -> None:
    unknown = sorted(set(changes) - allowed)
    if unknown:
        raise ValueError(
            f"{what} cannot change {', '.join(unknown)} (allowed: {', '.join(sorted(allowed))})"
        )


def run_changes(changes: Mapping[str, Any]) -> dict[str, Any]:
    """The column values of update_run's `changes`; ValueError names a field it may not set."""
    _checked(changes, RUN_MUTABLE, "update_run")
    return _convert(changes, _RUN_ENCODE)


def step_changes(changes: Mapping[str, Any]) -> dict[str, Any]:
    """The column values of a StepUpdate's `changes` (no renamed column among them); ValueError
    names a field it may not set."""
    _checked(changes, STEP_MUTABLE, "a step update")
    return _convert(changes, _STEP_ENCODE)


def changed_run(run: PipelineRun, columns: Mapping[str, Any]) -> PipelineRun:
    """`run` with run_changes' column values applied and its version bumped (the store without
    SQL does what the UPDATE does)."""
    return run.with_changes(**_convert(columns, _RUN_DECODE), version=run.version + 1)


def changed_step(step: RunStep, columns: Mapping[str, Any]) -> RunStep:
    return step.with_changes(**_convert(columns, _STEP_DECODE))


_STATUS_ORDER = {status: index for index, status in enumerate(JobStatus)}


def status_values(statuses: Collection[JobStatus]) -> list[str]:
    """The statuses' values in declaration order, so messages read the same every time."""
    unique = {JobStatus(s) for s in statuses}
    return [s.value for s in sorted(unique, key=_STATUS_ORDER.__getitem__)]


def run_not_found(run_id: str) -> NotFoundError:
    return NotFoundError(f"no run {run_id}")


def version_conflict(run_id: str, stored: int, expected: int) -> ConflictError:
    return ConflictError(f"run {run_id} is at version {stored}, not {expected}")


def step_conflict(run_id: str, update: StepUpdate, found: tuple[str, int] | None) -> ConflictError:
    """Why `update` did not apply: `found` is the step's (status, generation), None when the
    run has no such step."""
    if found is None:
        return ConflictError(f"run {run_id} has no step {update.step_id}")
    status, generation = found
    wanted = " or ".join(status_values(update.expected)) or "in any expected status"
    return ConflictError(
        f"step {update.step_id} of run {run_id} is {status} in generation {generation}, "
        f"not {wanted} in generation {update.generation}"
    )
