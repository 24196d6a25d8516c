"""How pipeline runs and their steps look from outside (the REST JSON; the gRPC messages carry
the same JSON), and how a file's problems are listed."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from hodei.domain.pipelines import Dag, Issue, JobStatus, awaiting_approval
from hodei.domain.pipelines.runs import PipelineRun, RunStep
from hodei.server.api.views import iso


def run_summary(run: PipelineRun) -> dict[str, Any]:
    return {
        "id": run.id,
        "name": run.name,
        "state": run.state.value,
        "reason": run.reason,
        "filename": run.filename,
        "params": run.params,
        "approved": list(run.approved),
        "no_cache": run.no_cache,
        "queued_by": run.queued_by,
        "cancelled_by": run.cancelled_by,
        "generation": run.generation,
        "version": run.version,
        "created_at": iso(run.created_at),
        "finished_at": iso(run.finished_at),
    }


def with_counts(summary: dict[str, Any], steps: Sequence[RunStep]) -> dict[str, Any]:
    """A run's summary and how many of its step jobs are in each status (for lists)."""
    return {**summary, "counts": dict(Counter(row.status.value for row in steps))}


def run_to_dict(run: PipelineRun, steps: Sequence[RunStep], dag: Dag) -> dict[str, Any]:
    """A run with every step job, and the manual steps waiting for someone to approve them."""
    statuses = {row.step_id: row.status for row in steps}
    return {
        **with_counts(run_summary(run), steps),
        "awaiting_approval": list(awaiting_approval(dag, statuses, run.approved)),
        "steps": [step_to_dict(row, dag) for row in steps],
    }


def step_to_dict(row: RunStep, dag: Dag) -> dict[str, Any]:
    job = dag.job(row.step_id)
    spec = job.step
    return {
        "id": row.step_id,
        "step": row.step,
        "index": row.index,
        "status": row.status.value,
        "needs": list(spec.needs),
        "when": spec.when.value,
        "matrix": job.matrix_values,
        "job_id": row.job_id,
        "attempt": row.attempt,
        "generation": row.generation,
        "reason": row.reason,
        "outputs": row.outputs,
        "cached_from": row.cached_from,
        "artifact": (
            {"sha256": row.artifact_sha256, "size": row.artifact_bytes}
            if row.artifact_sha256
            else None
        ),
        "started_at": iso(row.started_at),
        "finished_at": iso(row.finished_at),
        "duration_s": _duration(row),
    }


def _duration(row: RunStep) -> float | None:
    if row.started_at is None or row.status is JobStatus.PENDING:
        return None
    if row.finished_at is None:
        return None
    return round(max(0.0, row.finished_at - row.started_at), 3)


def issues_to_list(issues: Sequence[Issue]) -> list[dict[str, Any]]:
    return [{"line": i.line, "column": i.column, "message": i.message} for i in issues]
