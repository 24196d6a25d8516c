"""What the engine needs to know about one step's job: what it is given (the outputs and
artifacts of the steps it needs), its spec and cache key, and how its finished job becomes the
step's result. No store writes here: the engine decides and applies.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, replace

from hodei.domain.jobs import Job, JobSpec, JobState, input_key, parse_input_key
from hodei.domain.pipelines import (
    Dag,
    JobStatus,
    StepJob,
    job_spec,
    parse_outputs,
    render_step,
    status_of,
)
from hodei.domain.pipelines.runs import PipelineRun, RunStep
from hodei.errors import ValidationError
from hodei.ports import ArtifactStore


@dataclass(frozen=True, slots=True)
class Prepared:
    """A step's job, ready to queue (or to take from the cache)."""

    spec: JobSpec
    cache_key: str | None  # None: the step does not use the cache (or the run said no_cache)


class Ancestry:
    """For each step of a DAG, every step it needs directly or through others, in DAG order
    (worked out once per step: a 100-deep chain would otherwise walk its chain every time)."""

    def __init__(self, dag: Dag) -> None:
        self._dag = dag
        self._rank = {name: rank for rank, name in enumerate(dag.order)}
        self._memo: dict[str, tuple[str, ...]] = {}

    def of(self, name: str) -> tuple[str, ...]:
        found = self._memo.get(name)
        if found is None:
            wanted: set[str] = set()
            for need in self._dag.step(name).needs:  # needs come first in DAG order: memoised
                wanted.add(need)
                wanted.update(self.of(need))
            found = tuple(sorted(wanted, key=self._rank.__getitem__))
            self._memo[name] = found
        return found


def needs_outputs(
    dag: Dag, job: StepJob, rows: Mapping[str, RunStep], ancestry: Ancestry
) -> dict[str, dict[str, str]]:
    """step name -> outputs, for every step `job` needs, directly or through others (a step
    with outputs has no matrix, so it is one job; merged in order all the same)."""
    out: dict[str, dict[str, str]] = {}
    for need in ancestry.of(job.step_name):
        merged: dict[str, str] = {}
        for other in dag.jobs[need]:
            row = rows.get(other.id)
            if row is not None:
                merged.update(row.outputs)
        out[need] = merged
    return out


def needs_artifacts(
    dag: Dag, job: StepJob, rows: Mapping[str, RunStep], ancestry: Ancestry
) -> list[RunStep]:
    """The rows that produced an archive among the jobs `job` needs, directly or through
    others, in DAG order: unpacked in that order, a nearer step's file wins."""
    found: list[RunStep] = []
    for name in ancestry.of(job.step_name):
        for other in dag.jobs[name]:
            row = rows.get(other.id)
            if row is not None and row.artifact_sha256 and row.job_id:
                found.append(row)
    return found


def prepare(
    run: PipelineRun, dag: Dag, job: StepJob, rows: Mapping[str, RunStep], ancestry: Ancestry
) -> Prepared:
    """Render `job` with what the steps it needs produced. ValidationError when it cannot be
    run (an expression naming an output nobody wrote, a spec grown too big...)."""
    rendered = render_step(dag.pipeline, job, run.params, needs_outputs(dag, job, rows, ancestry))
    inputs = needs_artifacts(dag, job, rows, ancestry)
    spec = job_spec(job, rendered, queued_by=run.queued_by)
    spec = replace(
        spec,
        artifacts=rendered.artifacts,
        inputs=tuple(input_key(row.job_id or "", row.attempt) for row in inputs),
    )
    cache_key = None
    if rendered.cache_key is not None and not run.no_cache:
        # What the step receives is part of what it computes from.
        material = [rendered.cache_key, rendered.image, [row.artifact_sha256 for row in inputs]]
        cache_key = hashlib.sha256(json.dumps(material).encode()).hexdigest()
    return Prepared(spec, cache_key)


def settled(job: Job, declared: tuple[str, ...], artifacts: ArtifactStore) -> dict[str, object]:
    """The changes that record `job`'s end as its step's result (the job is terminal);
    `declared`: the output names the step declares (others it writes are ignored)."""
    status = status_of(job.state)
    changes: dict[str, object] = {
        "status": status,
        "attempt": job.attempts,
        "finished_at": job.finished_at,
        "reason": _reason(job),
    }
    if status is not JobStatus.SUCCEEDED:
        return changes
    info = artifacts.info(job.id, job.attempts)
    if info is not None:
        changes["artifact_sha256"] = info.sha256
        changes["artifact_bytes"] = info.size
    raw = artifacts.outputs(job.id, job.attempts)
    if raw:
        try:
            changes["outputs"] = parse_outputs(raw.decode("utf-8", "replace"), declared)
        except ValidationError as exc:
            # The job itself went well; what it wrote for its dependents did not.
            changes["status"] = JobStatus.FAILED
            changes["reason"] = f"its outputs file is not valid: {exc.message}"
    return changes


def _reason(job: Job) -> str:
    if job.state is JobState.SUCCEEDED:
        return ""
    if job.state is JobState.TIMED_OUT:
        return job.reason or "timed out"
    if job.exit_code is not None and not job.reason:
        return f"exit code {job.exit_code}"
    return job.reason


def missing_inputs(spec: JobSpec, artifacts: ArtifactStore) -> list[str]:
    """Inputs whose archive is gone (expired, deleted): the step cannot be given them."""
    missing = []
    for key in spec.inputs:
        if artifacts.info(*parse_input_key(key)) is None:
            missing.append(key)
    return missing
