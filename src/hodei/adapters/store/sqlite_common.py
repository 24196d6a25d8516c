"""SQL helpers the SQLite store's modules share (jobs in sqlite, pipelines in
sqlite_pipelines)."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any

RETURNING = sqlite3.sqlite_version_info >= (3, 35, 0)  # UPDATE ... RETURNING


def marks(n: int) -> str:
    return ", ".join("?" * n)


def page_query(
    select: str, filters: Sequence[tuple[str, Sequence[Any]]], cursor: int | None, limit: int
) -> tuple[str, list[Any]]:
    """The SQL and parameters of a newest-first page of `select` (list_jobs, list_audit,
    list_runs): rows meeting every filter (a condition with ? marks, and its values), below
    `cursor` if given, one row beyond `limit` (see newest_page)."""
    conditions = [condition for condition, _ in filters]
    params = [value for _, values in filters for value in values]
    if cursor is not None:
        conditions.append("seq < ?")
        params.append(int(cursor))
    clause = f" WHERE {' AND '.join(conditions)}" if conditions else ""
    return f"{select}{clause} ORDER BY seq DESC LIMIT ?", [*params, limit + 1]
