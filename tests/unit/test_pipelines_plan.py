"""`plan` answers what `to_skip`, `ready`, `awaiting_approval` and `run_status` answer, in one
pass: checked on every reachable mix of job states of a few DAGs."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from hodei.domain.pipelines import (
    JobStatus,
    awaiting_approval,
    build_dag,
    parse_pipeline,
    plan,
    ready,
    run_status,
    to_skip,
)

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "pipelines" / "ci.yaml"
SMALL = """
name: small
steps:
  a: {run: 'true'}
  b: {run: 'true', needs: [a], continue_on_error: true}
  c: {run: 'true', needs: [a], when: manual}
  d: {run: 'true', needs: [b, c], when: always}
  e:
    run: 'true'
    needs: [a]
    when: on_failure
  m:
    run: 'true'
    needs: [a]
    matrix: {x: ['1', '2', '3'], max_parallel: 2}
"""


@pytest.mark.parametrize("source", [EXAMPLE.read_text(), SMALL], ids=["ci", "small"])
def test_plan_agrees_with_the_four_questions(source: str) -> None:
    dag = build_dag(parse_pipeline(source))
    jobs = [job.id for job in dag.all_jobs()]
    choices = list(JobStatus)
    rng = random.Random(7)
    for _ in range(3000):
        states = {job: rng.choice(choices) for job in jobs if rng.random() < 0.7}
        approved = {name for name in dag.order if rng.random() < 0.5}
        got = plan(dag, states, approved)
        assert got.skips == to_skip(dag, states)
        applied = {**states, **{skip.job_id: JobStatus.SKIPPED for skip in got.skips}}
        assert got.ready == ready(dag, states, approved)
        assert got.awaiting == awaiting_approval(dag, states, approved)
        assert got.status is run_status(dag, states, approved)
        assert got.status is run_status(dag, applied, approved)


@pytest.mark.parametrize("source", [EXAMPLE.read_text(), SMALL], ids=["ci", "small"])
def test_a_tracker_answers_as_plan_after_every_change(source: str) -> None:
    from hodei.domain.pipelines.tracker import Tracker

    dag = build_dag(parse_pipeline(source))
    jobs = [job.id for job in dag.all_jobs()]
    choices = list(JobStatus)
    rng = random.Random(11)
    for _ in range(300):
        states = {job: rng.choice(choices) for job in jobs if rng.random() < 0.3}
        tracker = Tracker(dag, states)
        for _ in range(20):
            approved = {name for name in dag.order if rng.random() < 0.5}
            assert tracker.plan(approved) == plan(dag, states, approved)
            changes = [(rng.choice(jobs), rng.choice(choices)) for _ in range(rng.randint(1, 3))]
            states.update(changes)
            tracker.update(changes)
