"""The DAG of a pipeline: its jobs, their order, and what a run may do next.

Every job of a step depends on every job of each step it needs. The run engine keeps one
`JobStatus` per job id (absent means pending) and asks:

- `ready(dag, states, approved)`: the jobs it may start now;
- `to_skip(dag, states)`: the pending jobs that can never run, with the reason;
- `awaiting_approval(dag, states, approved)`: manual steps whose needs are met;
- `retry_plan(dag, states)`: which jobs a retry of the run starts again, and which it keeps;
- `run_status(dag, states)`: how the run stands as a whole.

Each answer is one pass over the steps in topological order: linear in jobs + edges.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Collection, Mapping
from dataclasses import dataclass

from hodei.domain.pipelines.model import JobStatus, Pipeline, StepJob, StepSpec, When, job_id


@dataclass(frozen=True, slots=True)
class Dag:
    pipeline: Pipeline
    order: tuple[str, ...]  # step names, each after every step it needs (file order otherwise)
    jobs: dict[str, tuple[StepJob, ...]]  # step name -> its jobs, in expansion order
    dependents: dict[str, tuple[str, ...]]  # step name -> the steps that need it

    def step(self, name: str) -> StepSpec:
        return self.pipeline.steps[name]

    def all_jobs(self) -> tuple[StepJob, ...]:
        """Every job, in topological order."""
        return tuple(job for name in self.order for job in self.jobs[name])

    def job(self, job_id: str) -> StepJob:
        step = job_id.split("[", 1)[0]
        for job in self.jobs.get(step, ()):
            if job.id == job_id:
                return job
        raise KeyError(job_id)

    def job_needs(self, job_id: str) -> tuple[str, ...]:
        """The ids of the jobs `job_id` waits for."""
        step = self.step(self.job(job_id).step_name)
        return tuple(job.id for need in step.needs for job in self.jobs[need])


def build_dag(pipeline: Pipeline) -> Dag:
    """Expand every step and order them (Kahn). The pipeline was validated: no cycles."""
    steps = pipeline.steps
    dependents: dict[str, list[str]] = {name: [] for name in steps}
    waiting = {name: len(step.needs) for name, step in steps.items()}
    for name, step in steps.items():
        for need in step.needs:
            dependents[need].append(name)
    queue = deque(name for name, count in waiting.items() if count == 0)
    order: list[str] = []
    while queue:
        name = queue.popleft()
        order.append(name)
        for dependent in dependents[name]:
            waiting[dependent] -= 1
            if waiting[dependent] == 0:
                queue.append(dependent)
    if len(order) != len(steps):  # only for a Pipeline built by hand, not by parse
        raise ValueError("the steps' needs form a cycle")
    jobs = {name: expand(pipeline.name, steps[name]) for name in order}
    return Dag(pipeline, tuple(order), jobs, {k: tuple(v) for k, v in dependents.items()})


def expand(pipeline: str, step: StepSpec) -> tuple[StepJob, ...]:
    """The jobs of one step: one per matrix combination, or the step itself."""
    if step.matrix is None:
        return (StepJob(step.name, pipeline, step),)
    return tuple(
        StepJob(job_id(step.name, combo), pipeline, step, combo, index)
        for index, combo in enumerate(step.matrix.combinations)
    )


# -- what a run may do next ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Skip:
    job_id: str
    reason: str  # "needs build, which failed"


@dataclass(frozen=True, slots=True)
class _StepOutcome:
    done: bool  # every job is done
    passed: bool  # every job succeeded (failures of a continue_on_error step count as passed)
    broken: str  # "" or why it did not pass for good: "failed", "was cancelled", "was skipped"


@dataclass(frozen=True, slots=True)
class _Evaluation:
    statuses: dict[str, JobStatus]  # states with the skips this pass decided applied
    skips: tuple[Skip, ...]
    outcomes: dict[str, _StepOutcome]


def _outcome(
    step: StepSpec, jobs: tuple[StepJob, ...], statuses: Mapping[str, JobStatus]
) -> _StepOutcome:
    done = passed = True
    broken = ""
    for job in jobs:
        status = statuses.get(job.id, JobStatus.PENDING)
        if not status.done:
            done = passed = False
            continue
        if status is JobStatus.SUCCEEDED or (status is JobStatus.FAILED and step.continue_on_error):
            continue
        passed = False
        if not broken:
            broken = {
                JobStatus.FAILED: "failed",
                JobStatus.CANCELLED: "was cancelled",
                JobStatus.SKIPPED: "was skipped",
            }[status]
    return _StepOutcome(done, passed, broken)


def _skip_reason(step: StepSpec, outcomes: Mapping[str, _StepOutcome]) -> str | None:
    """Why the pending jobs of `step` can never run, given its needs' outcomes; None if they may."""
    needs = [(need, outcomes[need]) for need in step.needs]
    if step.when in (When.ON_SUCCESS, When.MANUAL):
        for need, outcome in needs:
            if outcome.broken:
                return f"needs {need}, which {outcome.broken}"
        return None
    done = all(o.done for _, o in needs)
    if step.when is When.ON_FAILURE and done and all(o.passed for _, o in needs):
        names = ", ".join(need for need, _ in needs) or "nothing"
        return f"runs on failure only, and {names} succeeded"
    return None


def _evaluate(dag: Dag, states: Mapping[str, JobStatus]) -> _Evaluation:
    statuses = dict(states)
    skips: list[Skip] = []
    outcomes: dict[str, _StepOutcome] = {}
    for name in dag.order:
        step = dag.step(name)
        jobs = dag.jobs[name]
        reason = _skip_reason(step, outcomes)
        if reason is not None:
            for job in jobs:
                if statuses.get(job.id, JobStatus.PENDING) is JobStatus.PENDING:
                    statuses[job.id] = JobStatus.SKIPPED
                    skips.append(Skip(job.id, reason))
        outcomes[name] = _outcome(step, jobs, statuses)
    return _Evaluation(statuses, tuple(skips), outcomes)


def _needs_met(step: StepSpec, outcomes: Mapping[str, _StepOutcome]) -> bool:
    needs = [outcomes[need] for need in step.needs]
    if step.when in (When.ON_SUCCESS, When.MANUAL):
        return all(o.passed for o in needs)
    if step.when is When.ON_FAILURE:
        return all(o.done for o in needs) and not all(o.passed for o in needs)
    return all(o.done for o in needs)  # always


def to_skip(dag: Dag, states: Mapping[str, JobStatus]) -> tuple[Skip, ...]:
    """Pending jobs that must end skipped, because of how the steps they need ended.

    A job skipped here counts as skipped for the steps after it in the same pass, so one
    call settles the whole chain: build failed -> test skipped -> package skipped.
    """
    return _evaluate(dag, states).skips


def ready(
    dag: Dag, states: Mapping[str, JobStatus], approved: Collection[str] = ()
) -> tuple[StepJob, ...]:
    """The pending jobs that may start now, in topological order.

    A manual step's jobs need its name in `approved`; a step's `max_parallel` caps how many
    of its jobs run at once (running ones count).
    """
    evaluation = _evaluate(dag, states)
    out: list[StepJob] = []
    for name in dag.order:
        step = dag.step(name)
        if step.when is When.MANUAL and name not in approved:
            continue
        if not _needs_met(step, evaluation.outcomes):
            continue
        jobs = dag.jobs[name]
        room = len(jobs)
        if step.matrix is not None and step.matrix.max_parallel is not None:
            running = sum(1 for job in jobs if evaluation.statuses.get(job.id) is JobStatus.RUNNING)
            room = step.matrix.max_parallel - running
        for job in jobs:
            if room <= 0:
                break
            if evaluation.statuses.get(job.id, JobStatus.PENDING) is JobStatus.PENDING:
                out.append(job)
                room -= 1
    return tuple(out)


def awaiting_approval(
    dag: Dag, states: Mapping[str, JobStatus], approved: Collection[str] = ()
) -> tuple[str, ...]:
    """Manual steps, not yet approved, whose needs all passed: someone has to say go."""
    evaluation = _evaluate(dag, states)
    return tuple(
        name
        for name in dag.order
        if dag.step(name).when is When.MANUAL
        and name not in approved
        and _needs_met(dag.step(name), evaluation.outcomes)
        and any(
            evaluation.statuses.get(j.id, JobStatus.PENDING) is JobStatus.PENDING
            for j in dag.jobs[name]
        )
    )


@dataclass(frozen=True, slots=True)
class RetryPlan:
    rerun: tuple[str, ...]  # job ids that start again (pending), in topological order
    keep: tuple[str, ...]  # job ids whose result stands

    @property
    def steps(self) -> tuple[str, ...]:
        """The steps with at least one job that starts again."""
        return tuple(dict.fromkeys(job.split("[", 1)[0] for job in self.rerun))


def retry_plan(dag: Dag, states: Mapping[str, JobStatus]) -> RetryPlan:
    """What a retry of a run does: failed, cancelled, skipped (and never run) jobs start again,
    and so does every job after one of them, since its inputs may change; the rest is kept."""
    rerun: list[str] = []
    keep: list[str] = []
    again: set[str] = set()  # steps with a job that starts again
    for name in dag.order:
        after_rerun = any(need in again for need in dag.step(name).needs)
        for job in dag.jobs[name]:
            status = states.get(job.id, JobStatus.PENDING)
            if after_rerun or status is not JobStatus.SUCCEEDED:
                rerun.append(job.id)
                again.add(name)
            else:
                keep.append(job.id)
    return RetryPlan(tuple(rerun), tuple(keep))


def run_status(
    dag: Dag, states: Mapping[str, JobStatus], approved: Collection[str] = ()
) -> JobStatus:
    """The run as a whole: RUNNING while anything may still happen without a decision, else
    SUCCEEDED (every job passed or was skipped by `when`), FAILED or CANCELLED. A run waiting
    only on an approval is PENDING."""
    evaluation = _evaluate(dag, states)
    statuses = evaluation.statuses
    if any(statuses.get(j.id, JobStatus.PENDING) is JobStatus.RUNNING for j in dag.all_jobs()):
        return JobStatus.RUNNING
    if ready(dag, statuses, approved):
        return JobStatus.RUNNING
    if awaiting_approval(dag, statuses, approved):
        return JobStatus.PENDING
    failed = cancelled = False
    for name in dag.order:
        step = dag.step(name)
        for job in dag.jobs[name]:
            status = statuses.get(job.id, JobStatus.PENDING)
            failed |= status is JobStatus.FAILED and not step.continue_on_error
            cancelled |= status is JobStatus.CANCELLED
    if cancelled:
        return JobStatus.CANCELLED
    return JobStatus.FAILED if failed else JobStatus.SUCCEEDED


@dataclass(frozen=True, slots=True)
class Plan:
    """Everything a run engine asks after a change, from one pass over the DAG."""

    skips: tuple[Skip, ...]  # pending jobs that must end skipped
    ready: tuple[StepJob, ...]  # pending jobs that may start now
    awaiting: tuple[str, ...]  # manual steps whose needs passed, not yet approved
    status: JobStatus  # the run as run_status says, once `skips` are applied and `ready` start


def plan(dag: Dag, states: Mapping[str, JobStatus], approved: Collection[str] = ()) -> Plan:
    """`to_skip`, `ready`, `awaiting_approval` and `run_status` at once (one evaluation
    instead of six: a run engine asks all four after every change)."""
    evaluation = _evaluate(dag, states)
    statuses = evaluation.statuses
    outcomes = evaluation.outcomes
    starting: list[StepJob] = []
    awaiting: list[str] = []
    running = failed = cancelled = False
    for name in dag.order:
        step = dag.step(name)
        jobs = dag.jobs[name]
        pending = [
            job for job in jobs if statuses.get(job.id, JobStatus.PENDING) is JobStatus.PENDING
        ]
        for job in jobs:
            status = statuses.get(job.id, JobStatus.PENDING)
            running |= status is JobStatus.RUNNING
            failed |= status is JobStatus.FAILED and not step.continue_on_error
            cancelled |= status is JobStatus.CANCELLED
        if not pending or not _needs_met(step, outcomes):
            continue
        if step.when is When.MANUAL and name not in approved:
            awaiting.append(name)
            continue
        room = len(jobs)
        if step.matrix is not None and step.matrix.max_parallel is not None:
            busy = sum(1 for job in jobs if statuses.get(job.id) is JobStatus.RUNNING)
            room = step.matrix.max_parallel - busy
        starting.extend(pending[: max(room, 0)])
    if running or starting:
        status = JobStatus.RUNNING
    elif awaiting:
        status = JobStatus.PENDING
    elif cancelled:
        status = JobStatus.CANCELLED
    else:
        status = JobStatus.FAILED if failed else JobStatus.SUCCEEDED
    return Plan(evaluation.skips, tuple(starting), tuple(awaiting), status)
