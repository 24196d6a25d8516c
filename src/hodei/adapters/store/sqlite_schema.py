"""The SQLite store's schema, as ordered migration steps, and the migration run on open."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from hodei.adapters.store.common import BACKFILL_RETRIES_USED, Migration, pending_migrations
from hodei.errors import StoreError

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "migrate"]

# Version 1 predates the migration list and used IF NOT EXISTS; it stays as released.
_V1 = (
    """CREATE TABLE IF NOT EXISTS jobs (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        state TEXT NOT NULL,
        priority INTEGER NOT NULL,
        created_at REAL NOT NULL,
        exit_code INTEGER,
        attempts INTEGER NOT NULL,
        worker_id TEXT,
        started_at REAL,
        finished_at REAL,
        reason TEXT NOT NULL,
        spec TEXT NOT NULL
    )""",
    # Queue rebuilds scan by (state, priority, seq); list_jobs(state=...) pages by (state, seq).
    "CREATE INDEX IF NOT EXISTS jobs_state_priority_seq ON jobs (state, priority, seq)",
    "CREATE INDEX IF NOT EXISTS jobs_state_seq ON jobs (state, seq)",
    """CREATE TABLE IF NOT EXISTS secrets (
        name TEXT PRIMARY KEY,
        ciphertext BLOB NOT NULL,
        updated_at REAL NOT NULL
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
        assigned_at REAL,
        started_at REAL,
        finished_at REAL,
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
        created_at REAL NOT NULL,
        revoked_at REAL
    )""",
    """CREATE TABLE audit (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        at REAL NOT NULL,
        actor TEXT NOT NULL,
        action TEXT NOT NULL,
        target TEXT NOT NULL,
        detail TEXT NOT NULL
    )""",
    "CREATE INDEX audit_action ON audit (action, seq)",
)
_V5 = (
    "ALTER TABLE jobs ADD COLUMN retries_used INTEGER NOT NULL DEFAULT 0",
    "ALTER TABLE jobs ADD COLUMN infra_retries_used INTEGER NOT NULL DEFAULT 0",
    BACKFILL_RETRIES_USED,
    "ALTER TABLE attempts ADD COLUMN failure TEXT",  # NULL: recorded before failure kinds
)
_V6 = (
    # seq is the rowid (AUTOINCREMENT needs it to be the primary key), so id is the UNIQUE key.
    """CREATE TABLE pipeline_runs (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        name TEXT NOT NULL,
        source TEXT NOT NULL,
        filename TEXT NOT NULL,
        params TEXT NOT NULL,
        state TEXT NOT NULL,
        approved TEXT NOT NULL,
        no_cache INTEGER NOT NULL,
        queued_by TEXT NOT NULL,
        created_at REAL NOT NULL,
        finished_at REAL,
        reason TEXT NOT NULL,
        cancelled_by TEXT,
        generation INTEGER NOT NULL,
        version INTEGER NOT NULL
    )""",
    # list_runs(state=...) pages newest first; active_runs reads the few active runs by it.
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
        artifact_bytes INTEGER NOT NULL,
        started_at REAL,
        finished_at REAL,
        PRIMARY KEY (run_id, step_id)
    )""",
    "CREATE INDEX pipeline_steps_order ON pipeline_steps (run_id, idx)",
    # cached_step: the newest finished step that may be reused, in one probe of this index.
    "CREATE INDEX pipeline_steps_cache ON pipeline_steps "
    "(cache_key, finished_at DESC, run_id DESC, step_id DESC) "
    "WHERE status = 'succeeded' AND cached_from IS NULL",
)
_V7 = (
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
        starting_deadline_s REAL NOT NULL,
        pause_after INTEGER NOT NULL,
        paused INTEGER NOT NULL,
        pause_reason TEXT NOT NULL,
        failures INTEGER NOT NULL,
        next_fire REAL,
        created_at REAL NOT NULL,
        created_by TEXT NOT NULL,
        updated_at REAL NOT NULL,
        version INTEGER NOT NULL
    )""",
    """CREATE TABLE schedule_fires (
        id TEXT PRIMARY KEY,
        schedule_id TEXT NOT NULL,
        scheduled_at REAL NOT NULL,
        outcome TEXT NOT NULL,
        reason TEXT NOT NULL,
        decided_at REAL NOT NULL,
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
        created_at REAL NOT NULL,
        created_by TEXT NOT NULL,
        PRIMARY KEY (name, version)
    )""",
)
# What an attempt used (NULL: not measured, or recorded before this step).
ATTEMPT_USAGE = (
    "ALTER TABLE attempts ADD COLUMN cpu_seconds REAL",
    "ALTER TABLE attempts ADD COLUMN peak_memory_bytes INTEGER",
    "ALTER TABLE attempts ADD COLUMN read_bytes INTEGER",
    "ALTER TABLE attempts ADD COLUMN written_bytes INTEGER",
)
# The schema, step by step: a database at version N gets steps N+1.. applied on open.
MIGRATIONS: tuple[Migration, ...] = (
    Migration("jobs, secrets and queue indexes", _V1),
    Migration("idempotency keys and attempt records", _V2),
    Migration("API tokens and the audit trail", _V3),
    Migration("retry backoff kept with the job", ("ALTER TABLE jobs ADD COLUMN not_before REAL",)),
    Migration("retries spent by the job and by the platform, attempt failure kinds", _V5),
    Migration("pipeline runs and their steps", _V6),
    Migration("schedules, their fires and job templates", _V7),
    Migration("resources each attempt used", ATTEMPT_USAGE),
)
SCHEMA_VERSION = len(MIGRATIONS)


def migrate(conn: sqlite3.Connection, migrations: Sequence[Migration], what: str) -> None:
    """Bring the database up to `migrations`; `what` names it in errors. StoreError when its
    schema version is unreadable or newer than `migrations`."""
    conn.execute("BEGIN IMMEDIATE")
    conn.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value NOT NULL)")
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    try:
        version = int(row[0]) if row is not None else 0
    except (TypeError, ValueError):
        raise StoreError(f"{what}: bad schema_version {row[0]!r}") from None
    # One transaction under the write lock: two servers opening one file do not race, and a
    # failing step leaves the database at its old version.
    for number, step in pending_migrations(version, migrations, what):
        for statement in step.statements:
            conn.execute(statement)
        conn.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('schema_version', ?)", (number,)
        )
    conn.execute("COMMIT")
