"""The PostgreSQL store's schema (as ordered migration steps) and the statements it runs."""

from __future__ import annotations

from typing import Any

import asyncpg

from hodei.adapters.store.common import (
    ATTEMPT_CONFLICT,
    ATTEMPT_FIELDS,
    BACKFILL_RETRIES_USED,
    INSERT_FIELDS,
    JOB_FIELDS,
    MUTABLE_FIELD_ORDER,
    Migration,
    label_fragment,
    spec_fragment,
)
from hodei.adapters.store.pg_batch import Pending
from hodei.adapters.store.pg_common import Fn, unnest_columns
from hodei.domain.job_filter import JobFilter, fold

_V1 = (
    """CREATE TABLE jobs (
        seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        id TEXT NOT NULL UNIQUE,
        state TEXT NOT NULL,
        priority INTEGER NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        exit_code INTEGER,
        attempts INTEGER NOT NULL,
        worker_id TEXT,
        started_at DOUBLE PRECISION,
        finished_at DOUBLE PRECISION,
        reason TEXT NOT NULL,
        spec TEXT NOT NULL
    )""",
    # The dispatch order: servers sharing the database claim queued jobs with
    # `ORDER BY priority DESC, seq FOR UPDATE SKIP LOCKED`, which walks this index.
    "CREATE INDEX jobs_queue ON jobs (state, priority DESC, seq)",
    # list_jobs(state=...) pages newest first; jobs_in_states reads oldest first.
    "CREATE INDEX jobs_state_seq ON jobs (state, seq)",
    """CREATE TABLE secrets (
        name TEXT PRIMARY KEY,
        ciphertext BYTEA NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL
    )""",
)
_V2 = (
    # NULL for "no key": a UNIQUE index admits any number of NULLs.
    "ALTER TABLE jobs ADD COLUMN idempotency_key TEXT",
    "CREATE UNIQUE INDEX jobs_idempotency_key ON jobs (idempotency_key)",
    """CREATE TABLE attempts (
        job_id TEXT NOT NULL,
        number INTEGER NOT NULL,
        state TEXT NOT NULL,
        worker_id TEXT,
        exit_code INTEGER,
        assigned_at DOUBLE PRECISION,
        started_at DOUBLE PRECISION,
        finished_at DOUBLE PRECISION,
        reason TEXT NOT NULL,
        PRIMARY KEY (job_id, number)
    )""",
)
_V3 = (
    """CREATE TABLE tokens (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL,
        role TEXT NOT NULL,
        secret_hash TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        revoked_at DOUBLE PRECISION
    )""",
    """CREATE TABLE audit (
        seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        at DOUBLE PRECISION NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        target TEXT NOT NULL,
        detail TEXT NOT NULL
    )""",
    "CREATE INDEX audit_action ON audit (action, seq)",
)
_V4 = (
    # Several servers on one database (adapters.cluster.postgres): who is alive, and which
    # server each worker's stream is on.
    """CREATE TABLE cluster_servers (
        id TEXT PRIMARY KEY,
        heartbeat_at DOUBLE PRECISION NOT NULL
    )""",
    """CREATE TABLE cluster_workers (
        worker_id TEXT PRIMARY KEY,
        server_id TEXT NOT NULL
    )""",
    "CREATE INDEX cluster_workers_server ON cluster_workers (server_id)",
    "CREATE INDEX jobs_worker ON jobs (worker_id)",
)
_V5 = ("ALTER TABLE jobs ADD COLUMN not_before DOUBLE PRECISION",)
_V6 = (
    "ALTER TABLE jobs ADD COLUMN retries_used INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE jobs ADD COLUMN infra_retries_used INTEGER NOT NULL DEFAULT 0",
    BACKFILL_RETRIES_USED,
    "ALTER TABLE attempts ADD COLUMN failure TEXT",  # NULL: recorded before failure kinds
)
_V7 = (
    """CREATE TABLE pipeline_runs (
        id TEXT PRIMARY KEY,
        seq BIGINT GENERATED ALWAYS AS IDENTITY UNIQUE,
        name TEXT NOT NULL,
        source TEXT NOT NULL,
        filename TEXT NOT NULL,
        params TEXT NOT NULL,
        state TEXT NOT NULL,
        approved TEXT NOT NULL,
        no_cache BOOLEAN NOT NULL,
        queued_by TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        finished_at DOUBLE PRECISION,
        reason TEXT NOT NULL,
        cancelled_by TEXT,
        generation INTEGER NOT NULL,
        version BIGINT NOT NULL
    )""",
    # list_runs pages newest first by the seq key, list_runs(state=...) by this one, and
    # active_runs reads the few active runs by it.
    "CREATE INDEX pipeline_runs_state_seq ON pipeline_runs (state, seq)",
    """CREATE TABLE pipeline_steps (
        run_id TEXT NOT NULL,
        step_id TEXT NOT NULL,
        idx INTEGER NOT NULL,
        step TEXT NOT NULL,
        status TEXT NOT NULL,
        generation INTEGER NOT NULL,
        job_id TEXT,
        attempt INTEGER NOT NULL,
        reason TEXT NOT NULL,
        outputs TEXT NOT NULL,
        cache_key TEXT,
        cached_from TEXT,
        artifact_sha256 TEXT,
        artifact_bytes BIGINT NOT NULL,
        started_at DOUBLE PRECISION,
        finished_at DOUBLE PRECISION,
        PRIMARY KEY (run_id, step_id)
    )""",
    "CREATE INDEX pipeline_steps_order ON pipeline_steps (run_id, idx)",
    # cached_step: the newest finished step that may be reused, in one probe of this index. Ties
    # break by id in code point order ("C"), as in SQLite and in memory.
    "CREATE INDEX pipeline_steps_cache ON pipeline_steps (cache_key, "
    'finished_at DESC NULLS LAST, run_id COLLATE "C" DESC, step_id COLLATE "C" DESC) '
    "WHERE status = 'succeeded' AND cached_from IS NULL",
)
_V8 = (
    # list_jobs(pipeline=RUN): the run's jobs by id prefix (RUN.), in any database collation.
    "CREATE INDEX jobs_id_prefix ON jobs (id text_pattern_ops)",
)
_V9 = (
    """CREATE TABLE schedules (
        id TEXT PRIMARY KEY,
        name TEXT NOT NULL UNIQUE,
        cron TEXT NOT NULL,
        timezone TEXT NOT NULL,
        kind TEXT NOT NULL,
        spec TEXT,
        source TEXT NOT NULL,
        params TEXT NOT NULL,
        overlap TEXT NOT NULL,
        catch_up TEXT NOT NULL,
        catch_up_limit INTEGER NOT NULL,
        starting_deadline_s DOUBLE PRECISION NOT NULL,
        pause_after INTEGER NOT NULL,
        paused INTEGER NOT NULL,
        pause_reason TEXT NOT NULL,
        failures INTEGER NOT NULL,
        next_fire DOUBLE PRECISION,
        created_at DOUBLE PRECISION NOT NULL,
        created_by TEXT NOT NULL,
        updated_at DOUBLE PRECISION NOT NULL,
        version INTEGER NOT NULL
    )""",
    """CREATE TABLE schedule_fires (
        id TEXT PRIMARY KEY,
        schedule_id TEXT NOT NULL,
        scheduled_at DOUBLE PRECISION NOT NULL,
        outcome TEXT NOT NULL,
        reason TEXT NOT NULL,
        decided_at DOUBLE PRECISION NOT NULL,
        job_id TEXT,
        run_id TEXT,
        covers INTEGER NOT NULL,
        manual INTEGER NOT NULL,
        template_version INTEGER NOT NULL,
        replace_previous INTEGER NOT NULL,
        result TEXT NOT NULL
    )""",
    # list_fires pages a schedule's fires newest first; active_fires reads the few active ones.
    "CREATE INDEX schedule_fires_order ON schedule_fires (schedule_id, scheduled_at)",
    "CREATE INDEX schedule_fires_active ON schedule_fires (scheduled_at) "
    "WHERE outcome IN ('starting', 'started') AND result = ''",
    """CREATE TABLE templates (
        name TEXT NOT NULL,
        version INTEGER NOT NULL,
        source TEXT NOT NULL,
        kind TEXT NOT NULL,
        description TEXT NOT NULL,
        created_at DOUBLE PRECISION NOT NULL,
        created_by TEXT NOT NULL,
        PRIMARY KEY (name, version)
    )""",
)
# The schema, step by step: a database at version N gets steps N+1.. applied on open. Released
# steps are never edited; a change is a new step at the end.
# What an attempt used (NULL: not measured, or recorded before this step).
ATTEMPT_USAGE = (
    "ALTER TABLE attempts ADD COLUMN cpu_seconds DOUBLE PRECISION, "
    "ADD COLUMN peak_memory_bytes BIGINT, ADD COLUMN read_bytes BIGINT, "
    "ADD COLUMN written_bytes BIGINT",
)
MIGRATIONS: tuple[Migration, ...] = (
    Migration("jobs, secrets and queue indexes", _V1),
    Migration("idempotency keys and attempt records", _V2),
    Migration("API tokens and the audit trail", _V3),
    Migration("servers sharing the database", _V4),
    Migration("retry backoff kept with the job", _V5),
    Migration("retries spent by the job and by the platform, attempt failure kinds", _V6),
    Migration("pipeline runs and their steps", _V7),
    Migration("jobs found by pipeline run", _V8),
    Migration("schedules, their fires and job templates", _V9),
    Migration("resources each attempt used", ATTEMPT_USAGE),
)
SCHEMA_VERSION = len(MIGRATIONS)

# Serialises migrations of every Hodei server on the database (any constant would do).
MIGRATION_LOCK = 0x686F646569  # "hodei"
MIGRATIONS_TABLE = """CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY,
    description TEXT NOT NULL,
    applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
)"""

COLUMN_TYPES = {
    "id": "text",
    "spec": "text",
    "state": "text",
    "exit_code": "int4",
    "attempts": "int4",
    "worker_id": "text",
    "created_at": "float8",
    "started_at": "float8",
    "finished_at": "float8",
    "reason": "text",
    "priority": "int4",
    "idempotency_key": "text",
    "not_before": "float8",
    "retries_used": "int4",
    "infra_retries_used": "int4",
}
ATTEMPT_TYPES = {
    "job_id": "text",
    "number": "int4",
    "state": "text",
    "worker_id": "text",
    "exit_code": "int4",
    "assigned_at": "float8",
    "started_at": "float8",
    "finished_at": "float8",
    "reason": "text",
    "failure": "text",
    "cpu_seconds": "float8",
    "peak_memory_bytes": "int8",
    "read_bytes": "int8",
    "written_bytes": "int8",
}
COLUMNS = ", ".join(JOB_FIELDS)
SELECT = f"SELECT {COLUMNS} FROM jobs"

_INSERT_COLUMNS = (*INSERT_FIELDS, "priority")  # a Job field without a type fails loudly here
_UNNEST = ", ".join(f"${i}::{COLUMN_TYPES[c]}[]" for i, c in enumerate(_INSERT_COLUMNS, 1))
# ON CONFLICT DO NOTHING: an id or idempotency key that exists (or comes twice in the batch)
# gets no row back and only its caller gets a ConflictError, like SQLite's per-operation
# savepoints.
INSERT_MANY = (
    f"INSERT INTO jobs ({', '.join(_INSERT_COLUMNS)}) SELECT * FROM unnest({_UNNEST}) "
    "ON CONFLICT DO NOTHING RETURNING id, seq"
)
KEY_OWNERS = "SELECT idempotency_key, id FROM jobs WHERE idempotency_key = ANY($1::text[])"

# Compare-and-swap of many jobs in one statement. Per row: the id, the expected states joined
# by commas, the target, then for every mutable field its value and whether to set it (a
# transition may set a field to NULL, so "not given" needs its own flag).
MOVE_FIELDS = MUTABLE_FIELD_ORDER
_MOVE_ARRAYS = [("id", "text"), ("expected", "text"), ("target", "text")]
for _field in MOVE_FIELDS:
    _MOVE_ARRAYS += [(_field, COLUMN_TYPES[_field]), (f"set_{_field}", "bool")]
# Then, per row, its attempt record's columns (all NULL when the move records none), upserted
# in the same statement for the rows that moved.
_ATTEMPT_ARRAYS = [(f"a_{name}", ATTEMPT_TYPES[name]) for name in ATTEMPT_FIELDS]
_ARRAYS = _MOVE_ARRAYS + _ATTEMPT_ARRAYS
MOVE_MANY = (
    "WITH u AS (SELECT * FROM unnest("
    + ", ".join(f"${i}::{kind}[]" for i, (_, kind) in enumerate(_ARRAYS, 1))
    + f") AS u({', '.join(name for name, _ in _ARRAYS)})), "
    "moved AS (UPDATE jobs AS j SET state = u.target, "
    + ", ".join(f"{f} = CASE WHEN u.set_{f} THEN u.{f} ELSE j.{f} END" for f in MOVE_FIELDS)
    + " FROM u WHERE j.id = u.id AND j.state = ANY(string_to_array(u.expected, ',')) "
    f"RETURNING {', '.join(f'j.{c}' for c in JOB_FIELDS)}), "
    f"recorded AS (INSERT INTO attempts ({', '.join(ATTEMPT_FIELDS)}) "
    f"SELECT {', '.join(name for name, _ in _ATTEMPT_ARRAYS)} FROM u JOIN moved ON moved.id = u.id "
    f"WHERE u.a_number IS NOT NULL {ATTEMPT_CONFLICT}) "
    f"SELECT {', '.join(JOB_FIELDS)} FROM moved"
)
SELECT_ATTEMPTS = (
    f"SELECT {', '.join(ATTEMPT_FIELDS)} FROM attempts WHERE job_id = $1 ORDER BY number"
)
STATES_OF = "SELECT id, state FROM jobs WHERE id = ANY($1::text[])"


def insert_statement(batch: list[Pending]) -> Fn[list[asyncpg.Record]]:
    """The INSERT_MANY of a batch of create_job calls."""
    columns = unnest_columns([p.request for p in batch])
    return lambda conn: conn.fetch(INSERT_MANY, *columns)


def move_statement(batch: list[Pending]) -> Fn[list[asyncpg.Record]]:
    """The MOVE_MANY of a batch of transition calls."""
    rows = []
    # Sorted by id: two servers' batches lock the rows they share in the same order.
    for pending in sorted(batch, key=lambda p: p.key):
        states, target, changes, recorded, _ = pending.request
        row: list[Any] = [pending.key, ",".join(states), target]
        for name in MOVE_FIELDS:
            row += [changes.get(name), name in changes]
        rows.append((*row, *recorded))
    columns = unnest_columns(rows)
    return lambda conn: conn.fetch(MOVE_MANY, *columns)


def _fold(expression: str) -> str:
    # lower() under the "C" collation folds ASCII letters only (job_filter.fold), whatever the
    # database's locale, and fast (translate() is far slower on a whole spec).
    return f'lower(({expression}) COLLATE "C")'


# The spec's text as `json`, for its name and labels. PostgreSQL refuses to read any field of a
# document holding a \u0000 escape (NUL, which no text value can hold; a spec the API checked
# has none, but the store keeps any): those become U+FFFD. Each escaped backslash is spelled
# \u005c first, so that what is left of "\u0000" can only be the escape of a NUL.
_SPEC_JSON = r"replace(replace(spec, '\\', '\u005c'), '\u0000', '\ufffd')::json"


def job_conditions(wanted: JobFilter) -> list[tuple[str, tuple[Any, ...]]]:
    """list_jobs' filters as page_query conditions (name and labels from _SPEC_JSON)."""
    out: list[tuple[str, tuple[Any, ...]]] = []
    if wanted.state is not None:
        out.append(("state = {}", (wanted.state.value,)))
    tests: list[str] = []
    values: list[Any] = []
    if wanted.name:
        # The quick test of the whole text first (common.spec_fragment), then the name.
        name = fold(wanted.name)
        whole, field = _fold("spec"), _fold(f"{_SPEC_JSON} ->> 'name'")
        tests.append(f"strpos({whole}, {{}}) > 0 AND strpos({field}, {{}}) > 0")
        values += [spec_fragment(name), name]
    for key, value in wanted.labels:
        tests.append(f"strpos(spec, {{}}) > 0 AND ({_SPEC_JSON} -> 'labels' ->> {{}}) = {{}}")
        values += [label_fragment(key, value), key, value]
    if tests:
        # One CASE, not several clauses: the planner cannot estimate these tests, and its
        # guesses multiply (two labels: "one row in 100,000"), until it prefers reading the
        # whole table and sorting to walking the seq key and stopping at a full page. A CASE
        # gets its neutral guess (half the rows) however many tests it holds; its WHEN still
        # runs them in order, each quick test before its JSON read.
        out.append((f"CASE WHEN {' AND '.join(tests)} THEN true ELSE false END", tuple(values)))
    if wanted.pipeline is not None:
        # The pattern operators, which jobs_id_prefix serves even in a generic plan (a LIKE
        # with a parameter for its pattern could not use it).
        out.append(("id ~>=~ {} AND id ~<~ {}", (f"{wanted.pipeline}.", f"{wanted.pipeline}/")))
    return out
