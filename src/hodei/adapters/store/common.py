"""What every JobStore adapter shares: the job row layout, paging, transition checks, error
messages and versioned schema migrations."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit, urlunsplit

import orjson

from hodei.domain.access import AuditEntry, Role, TokenRecord
from hodei.domain.attempts import Attempt, AttemptState, Failure
from hodei.domain.jobs import Job, JobSpec, JobState
from hodei.errors import ConflictError, StoreError

MAX_PAGE = 1000


class _Numbered(Protocol):
    @property
    def seq(self) -> int: ...


_Row = TypeVar("_Row")
_Item = TypeVar("_Item", bound=_Numbered)


def page_limit(limit: int) -> int:
    """The size of a page as asked for, within 1..MAX_PAGE."""
    return max(1, min(MAX_PAGE, int(limit)))


def newest_page(
    rows: Sequence[_Row], limit: int, convert: Callable[[_Row], _Item]
) -> tuple[list[_Item], int | None]:
    """(items, next) of a newest-first page read one row beyond `limit` (that row tells
    whether there is a next page): the first `limit` rows converted, and the cursor that
    continues after them, or None on the last page."""
    items = [convert(row) for row in rows[:limit]]
    return items, (items[-1].seq if len(rows) > limit else None)


# The Job fields transition() may set, in a fixed order (statements list them in it); id, spec,
# seq and created_at never change, state is its own.
MUTABLE_FIELD_ORDER = (
    "exit_code",
    "attempts",
    "worker_id",
    "started_at",
    "finished_at",
    "reason",
    "not_before",
    "retries_used",
    "infra_retries_used",
)
MUTABLE_FIELDS = frozenset(MUTABLE_FIELD_ORDER)

# Every Job field has a column of the same name (a new field without one fails loudly in the
# adapters); `priority` is spec.priority, copied out so the queue index can use it.
JOB_FIELDS = tuple(f.name for f in fields(Job))
INSERT_FIELDS = tuple(name for name in JOB_FIELDS if name != "seq")
_SPEC_FIELDS = frozenset(f.name for f in fields(JobSpec))
_TUPLE_FIELDS = ("arguments", "secrets", "artifacts", "inputs")


def encode_spec(spec: JobSpec) -> str:
    # Text, not a JSON column type: JSON escapes keep any character (even NUL) storable. The
    # job filters' quick tests (spec_fragment, label_fragment) rely on orjson's compact form.
    return orjson.dumps(spec).decode()


def spec_fragment(text: str) -> str:
    """`text` as encode_spec writes it inside a string (escaped, unquoted). Escapes are per
    character, with lower-case hex: a spec whose name holds `text` holds this, even with
    ASCII letters folded on both sides. A cheap test on the spec's text that rules out most
    rows before the JSON is read (which costs far more, above all on PostgreSQL)."""
    return orjson.dumps(text).decode()[1:-1]


def label_fragment(key: str, value: str) -> str:
    """`"key":"value"` as encode_spec writes the label: a spec with the label holds it."""
    return orjson.dumps({key: value}).decode()[1:-1]


def decode_spec(text: str) -> JobSpec:
    data = {k: v for k, v in orjson.loads(text).items() if k in _SPEC_FIELDS}
    for key in _TUPLE_FIELDS:  # JSON has no tuples; the dataclass promises them
        if key in data:
            data[key] = tuple(data[key])
    return JobSpec(**data)


def job_params(job: Job) -> tuple[Any, ...]:
    """Column values in INSERT_FIELDS order, then the priority."""
    values = {name: getattr(job, name) for name in INSERT_FIELDS}
    values["spec"] = encode_spec(job.spec)
    values["state"] = JobState(job.state).value
    return (*values.values(), job.spec.priority)


def row_to_job(row: Sequence[Any], spec: JobSpec | None = None) -> Job:
    """A row whose columns are JOB_FIELDS, in order. A job's spec never changes: with `spec`
    (the caller's copy) the row's spec column is not decoded again."""
    data = dict(zip(JOB_FIELDS, row, strict=True))
    data["spec"] = spec if spec is not None else decode_spec(data["spec"])
    data["state"] = JobState(data["state"])
    return Job(**data)


# -- attempts: one row per (job_id, number); both dialects upsert it the same way

ATTEMPT_FIELDS = tuple(f.name for f in fields(Attempt))
# Fields left None keep the stored value (a RUNNING record keeps the ASSIGNED one's assigned_at).
_KEEP = (
    "worker_id",
    "exit_code",
    "assigned_at",
    "started_at",
    "finished_at",
    "cpu_seconds",
    "peak_memory_bytes",
    "read_bytes",
    "written_bytes",
)
ATTEMPT_CONFLICT = (
    "ON CONFLICT (job_id, number) DO UPDATE SET state = excluded.state, "
    + ", ".join(
        [f"{f} = coalesce(excluded.{f}, attempts.{f})" for f in _KEEP]
        + ["reason = excluded.reason", "failure = excluded.failure"]
    )
)


def merge_attempt(stored: Attempt | None, attempt: Attempt) -> Attempt:
    """The record the upsert of `attempt` leaves (ATTEMPT_CONFLICT, for a store without SQL)."""
    if stored is None:
        return attempt
    kept = {f: getattr(stored, f) for f in _KEEP if getattr(attempt, f) is None}
    return replace(attempt, **kept)


def attempt_params(attempt: Attempt) -> tuple[Any, ...]:
    """Column values in ATTEMPT_FIELDS order."""
    values = {name: getattr(attempt, name) for name in ATTEMPT_FIELDS}
    values["state"] = AttemptState(attempt.state).value
    values["failure"] = Failure(attempt.failure).value if attempt.failure else None
    return tuple(values.values())


def row_to_attempt(row: Sequence[Any]) -> Attempt:
    data = dict(zip(ATTEMPT_FIELDS, row, strict=True))
    data["state"] = AttemptState(data["state"])
    data["failure"] = Failure(data["failure"]) if data["failure"] else None  # NULL: before v5
    return Attempt(**data)


# -- API tokens and the audit trail

TOKEN_FIELDS = tuple(f.name for f in fields(TokenRecord))
AUDIT_FIELDS = tuple(f.name for f in fields(AuditEntry))
AUDIT_INSERT_FIELDS = tuple(name for name in AUDIT_FIELDS if name != "seq")


def token_params(token: TokenRecord) -> tuple[Any, ...]:
    values = {name: getattr(token, name) for name in TOKEN_FIELDS}
    values["role"] = Role(token.role).value
    return tuple(values.values())


def row_to_token(row: Sequence[Any]) -> TokenRecord:
    data = dict(zip(TOKEN_FIELDS, row, strict=True))
    data["role"] = Role(data["role"])
    return TokenRecord(**data)


def audit_params(entry: AuditEntry) -> tuple[Any, ...]:
    return tuple(getattr(entry, name) for name in AUDIT_INSERT_FIELDS)


def row_to_audit(row: Sequence[Any]) -> AuditEntry:
    return AuditEntry(**dict(zip(AUDIT_FIELDS, row, strict=True)))


def audit_action_filter(action: str) -> tuple[str, bool]:
    """(value, is_prefix): 'job.' matches every job action, 'job.submit' only itself."""
    return (action, action.endswith("."))


def check_changes(changes: Mapping[str, Any] | None) -> dict[str, Any]:
    """The changes a transition may apply; ValueError names any other key."""
    result = dict(changes or {})
    unknown = sorted(set(result) - MUTABLE_FIELDS)
    if unknown:
        raise ValueError(
            f"transition cannot change {', '.join(unknown)} "
            f"(allowed: {', '.join(sorted(MUTABLE_FIELDS))})"
        )
    return result


_STATE_ORDER = {state: index for index, state in enumerate(JobState)}


def state_values(states: Collection[JobState]) -> list[str]:
    """The states' values in declaration order, so messages read the same every time."""
    # Runs for every transition: sorting the few given states beats walking the enum.
    return [s.value for s in sorted({JobState(s) for s in states}, key=_STATE_ORDER.__getitem__)]


def transition_conflict(job_id: str, actual: str, expected: Sequence[str]) -> ConflictError:
    return ConflictError(
        f"job {job_id} is {actual}, not {' or '.join(expected) or 'in any expected state'}"
    )


def redact_url(url: str) -> str:
    """The URL without password or query (which may carry one), for messages and logs."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable database URL>"
    netloc = parts.netloc
    if "@" in netloc:
        user, host = netloc.rsplit("@", 1)
        netloc = f"{user.split(':', 1)[0]}@{host}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


# -- versioned schema migrations

# Requeues already spent by jobs stored before the counters existed, as the old rule counted
# them (one per attempt that went back to the queue): a job mid-retries keeps its budget.
BACKFILL_RETRIES_USED = (
    "UPDATE jobs SET retries_used = CASE WHEN state = 'queued' THEN attempts "
    "WHEN attempts > 0 THEN attempts - 1 ELSE 0 END"
)


@dataclass(frozen=True, slots=True)
class Migration:
    """One schema step. Its version is its position in the adapter's list, counting from 1;
    released steps are never edited, a change is a new step at the end."""

    description: str
    statements: tuple[str, ...]


def pending_migrations(
    current: int, migrations: Sequence[Migration], where: str
) -> list[tuple[int, Migration]]:
    """The (version, step) pairs to apply to a database at version `current`. StoreError when
    the database is newer than this code: an older Hodei must not write a schema it does not
    know."""
    latest = len(migrations)
    if current > latest:
        raise StoreError(
            f"{where} has schema version {current}, newer than this Hodei supports "
            f"({latest}); upgrade Hodei or use another database"
        )
    return [(version, migrations[version - 1]) for version in range(current + 1, latest + 1)]
