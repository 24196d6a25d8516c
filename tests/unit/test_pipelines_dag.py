"""The pipeline DAG: matrix expansion, order, ready / skip / approval / retry plans, job specs."""

from __future__ import annotations

from pathlib import Path

import pytest

from hodei.domain.jobs import JobState, validate_spec
from hodei.domain.pipelines import (
    JobStatus,
    Skip,
    awaiting_approval,
    build_dag,
    check_pipeline,
    job_spec,
    parse_outputs,
    parse_pipeline,
    ready,
    render_step,
    resolve_params,
    retry_plan,
    run_status,
    status_of,
    to_skip,
)
from hodei.errors import ValidationError

EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "pipelines"
S, F, C, R, K = (
    JobStatus.SUCCEEDED,
    JobStatus.FAILED,
    JobStatus.CANCELLED,
    JobStatus.RUNNING,
    JobStatus.SKIPPED,
)


def ids(jobs: object) -> list[str]:
    return [job.id for job in jobs]  # type: ignore[attr-defined]


def test_matrix_expansion_include_exclude() -> None:
    text = """\
name: m
steps:
  test:
    run: echo
    matrix:
      python: ["3.11", "3.12"]
      os: [linux, mac]
      exclude: [{os: mac, python: "3.11"}]
      include: [{python: "3.13", os: linux}]
"""
    dag = build_dag(parse_pipeline(text))
    assert ids(dag.jobs["test"]) == [
        "test[python=3.11,os=linux]",
        "test[python=3.12,os=linux]",
        "test[python=3.12,os=mac]",
        "test[python=3.13,os=linux]",
    ]
    job = dag.job("test[python=3.12,os=mac]")
    assert job.matrix_values == {"python": "3.12", "os": "mac"} and job.index == 2


def test_matrix_of_includes_only_and_partial_excludes() -> None:
    text = """\
name: m
steps:
  a:
    run: echo
    matrix:
      include: [{target: x86, opt: "2"}, {opt: "3", target: arm}]
  b:
    run: echo
    matrix: {os: [linux, mac, win], arch: [x86, arm], exclude: [{os: win}]}
"""
    dag = build_dag(parse_pipeline(text))
    assert ids(dag.jobs["a"]) == ["a[target=x86,opt=2]", "a[target=arm,opt=3]"]
    assert len(dag.jobs["b"]) == 4


@pytest.mark.parametrize(
    ("matrix", "message"),
    [
        ("{os: []}", "matrix key 'os' of step 't' must be a non-empty list of values"),
        ("{os: [a, a]}", "'a' is listed twice in matrix key 'os' of step 't'"),
        (
            "{os: [a], exclude: [{oss: a}]}",
            "exclude: 'oss' is not a key of the matrix of step 't' (did you mean 'os'?)",
        ),
        ("{os: [a], exclude: [{os: b}]}", "exclude: 'b' is not a value of matrix key 'os'"),
        ("{os: [a, b], exclude: [{os: a}, {os: b}]}", "has no combinations left"),
        ("{os: [a], include: [{os: a}]}", "include entry {os: a} of step 't' is already in"),
        ("{os: [a], arch: [x], include: [{os: b}]}", "must set exactly os, arch"),
        ("{os: [a], max_parallel: 0}", "max_parallel of step 't' must be between 1 and 256"),
        ("{os: ['a,b']}", "must be 1-64 characters without control characters"),
        ("{max_parallel: 2}", "the matrix of step 't' has no keys"),
        ("[linux]", "the matrix of step 't' must be a mapping, not a list"),
    ],
)
def test_matrix_errors(matrix: str, message: str) -> None:
    pipeline, issues = check_pipeline(
        f"name: m\nsteps:\n  t:\n    run: echo\n    matrix: {matrix}\n"
    )
    assert pipeline is None and len(issues) == 1, issues
    assert message in issues[0].message and issues[0].line == 5


def test_order_and_job_edges() -> None:
    text = """\
name: d
steps:
  deploy: {run: echo, needs: [test, lint]}
  test: {run: echo, needs: [build], matrix: {n: ["1", "2"]}}
  lint: {run: echo}
  build: {run: echo}
"""
    dag = build_dag(parse_pipeline(text))
    assert dag.order == ("lint", "build", "test", "deploy")
    assert dag.dependents["build"] == ("test",)
    assert dag.job_needs("deploy") == ("test[n=1]", "test[n=2]", "lint")
    assert dag.job_needs("test[n=2]") == ("build",)
    with pytest.raises(KeyError):
        dag.job("nope")


CHAIN = """\
name: c
steps:
  build: {run: echo}
  test: {run: echo, needs: [build], matrix: {n: ["1", "2", "3"], max_parallel: 2}}
  package: {run: echo, needs: [test]}
  deploy: {run: echo, needs: [package], when: manual}
  cleanup: {run: echo, needs: [package], when: always}
  notify: {run: echo, needs: [package], when: on_failure}
"""


def test_ready_walks_the_chain() -> None:
    dag = build_dag(parse_pipeline(CHAIN))
    assert ids(ready(dag, {})) == ["build"]
    assert ready(dag, {"build": R}) == ()
    # max_parallel 2: two start, a third only when one is done.
    assert ids(ready(dag, {"build": S})) == ["test[n=1]", "test[n=2]"]
    states = {"build": S, "test[n=1]": R, "test[n=2]": S}
    assert ids(ready(dag, states)) == ["test[n=3]"]
    states = {"build": S, "test[n=1]": R, "test[n=2]": R}
    assert ready(dag, states) == ()
    states = {"build": S, "test[n=1]": S, "test[n=2]": S, "test[n=3]": S}
    assert ids(ready(dag, states)) == ["package"]
    states["package"] = S
    # deploy waits for an approval; cleanup runs; notify is skipped (nothing failed).
    assert ids(ready(dag, states)) == ["cleanup"]
    assert awaiting_approval(dag, states) == ("deploy",)
    assert to_skip(dag, states) == (Skip("notify", "runs on failure only, and package succeeded"),)
    assert ids(ready(dag, states, approved={"deploy"})) == ["deploy", "cleanup"]
    assert awaiting_approval(dag, states, approved={"deploy"}) == ()
    assert run_status(dag, states) is JobStatus.RUNNING  # cleanup may start
    states.update({"cleanup": S, "notify": K})
    assert run_status(dag, states) is JobStatus.PENDING  # waits on the gate only
    states["deploy"] = S
    assert run_status(dag, states, approved={"deploy"}) is JobStatus.SUCCEEDED


def test_a_failure_skips_what_needs_it_in_one_pass() -> None:
    dag = build_dag(parse_pipeline(CHAIN))
    states = {"build": S, "test[n=1]": S, "test[n=2]": F, "test[n=3]": R}
    skips = to_skip(dag, states)
    assert skips == (
        Skip("package", "needs test, which failed"),
        Skip("deploy", "needs package, which was skipped"),
    )
    # package ends skipped in the same pass, so what runs after it whatever happened may
    # start, while the rest of test still runs.
    assert ids(ready(dag, states)) == ["cleanup", "notify"]
    states["test[n=3]"] = S
    assert awaiting_approval(dag, states) == ()
    assert run_status(dag, states) is JobStatus.RUNNING
    states.update({"package": K, "deploy": K, "cleanup": S, "notify": S})
    assert run_status(dag, states) is JobStatus.FAILED


def test_cancelled_and_pending_never_skip_the_running() -> None:
    dag = build_dag(parse_pipeline(CHAIN))
    skips = to_skip(dag, {"build": C})
    assert skips[0] == Skip("test[n=1]", "needs build, which was cancelled")
    assert [s.job_id for s in skips] == ["test[n=1]", "test[n=2]", "test[n=3]", "package", "deploy"]
    # A job already running is never skipped.
    assert to_skip(dag, {"build": F, "test[n=1]": R})[0].job_id == "test[n=2]"


def test_continue_on_error_counts_as_passed() -> None:
    text = """\
name: c
steps:
  flaky: {run: exit 1, continue_on_error: true}
  after: {run: echo, needs: [flaky]}
  alarm: {run: echo, needs: [flaky], when: on_failure}
"""
    dag = build_dag(parse_pipeline(text))
    states = {"flaky": F}
    assert ids(ready(dag, states)) == ["after"]
    assert to_skip(dag, states) == (Skip("alarm", "runs on failure only, and flaky succeeded"),)
    states.update({"after": S, "alarm": K})
    assert run_status(dag, states) is JobStatus.SUCCEEDED


def test_retry_plan() -> None:
    dag = build_dag(parse_pipeline(CHAIN))
    states = {
        "build": S,
        "test[n=1]": S,
        "test[n=2]": F,
        "test[n=3]": C,
        "package": K,
        "deploy": K,
        "cleanup": S,
        "notify": S,
    }
    plan = retry_plan(dag, states)
    assert plan.keep == ("build", "test[n=1]")
    assert plan.rerun == ("test[n=2]", "test[n=3]", "package", "deploy", "cleanup", "notify")
    assert plan.steps == ("test", "package", "deploy", "cleanup", "notify")
    everything = {job.id: S for job in dag.all_jobs()}
    assert retry_plan(dag, everything).rerun == ()


def test_status_of_job_states() -> None:
    assert status_of(JobState.QUEUED) is JobStatus.RUNNING
    assert status_of(JobState.TIMED_OUT) is JobStatus.FAILED
    assert status_of(JobState.CANCELLED) is JobStatus.CANCELLED
    assert status_of(JobState.SUCCEEDED) is JobStatus.SUCCEEDED


def test_job_spec_passes_validation() -> None:
    text = """\
name: demo
steps:
  build:
    run: |
      echo one
      echo two
    cpu: 2
    memory: 1G
    timeout: 10m
    retries: 3
    priority: 7
    secrets: [TOKEN]
    labels: {os: linux}
    env: {A: b}
"""
    pipeline = parse_pipeline(text)
    job = build_dag(pipeline).jobs["build"][0]
    spec = job_spec(job, render_step(pipeline, job, {}), queued_by="alice")
    assert validate_spec(spec) is spec and spec.is_script
    assert spec.name == "demo/build" and spec.queued_by == "alice"
    assert (spec.cpu, spec.memory_bytes, spec.timeout_s) == (2.0, 1 << 30, 600.0)
    assert (spec.max_retries, spec.priority, spec.secrets) == (3, 7, ("TOKEN",))
    assert spec.labels == {"os": "linux"} and spec.env == {"A": "b"}


def test_a_steps_image_is_its_jobs_image_rendered_and_checked() -> None:
    text = (
        "name: x\nparams: {v: {default: '20'}}\nsteps:\n"
        "  a: {run: npm test, image: 'node:${{ params.v }}'}\n  b: {run: make}\n"
        "  c: {run: x, image: '${{ params.v }} bad'}\n"
    )
    pipeline = parse_pipeline(text)
    dag = build_dag(pipeline)
    params = {"v": "20"}
    assert job_spec(dag.jobs["a"][0], render_step(pipeline, dag.jobs["a"][0], params)).image == (
        "node:20"
    )
    assert job_spec(dag.jobs["b"][0], render_step(pipeline, dag.jobs["b"][0], params)).image is None
    with pytest.raises(ValidationError, match="step 'c': invalid image '20 bad'"):
        job_spec(dag.jobs["c"][0], render_step(pipeline, dag.jobs["c"][0], params))


def test_job_spec_refuses_what_rendering_made_too_big() -> None:
    text = (
        "name: x\nsteps:\n  a: {run: echo, outputs: [v]}\n"
        "  b: {run: '${{ steps.a.outputs.v }}', needs: [a]}\n"
    )
    pipeline = parse_pipeline(text)
    job = build_dag(pipeline).jobs["b"][0]
    rendered = render_step(pipeline, job, {}, {"a": {"v": "x" * (300 * 1024)}})
    with pytest.raises(ValidationError, match="command too large"):
        job_spec(job, rendered)


def test_parse_outputs() -> None:
    text = "# comment\nversion=1.2\n\nsha = abc=def\nother=x\nversion=1.3\n"
    assert parse_outputs(text, ("version", "sha")) == {"version": "1.3", "sha": " abc=def"}
    with pytest.raises(ValidationError, match="outputs line 1"):
        parse_outputs("no equals sign", ("x",))


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.name)
def test_examples_validate(path: Path) -> None:
    pipeline = parse_pipeline(path.read_bytes(), filename=path.name)
    dag = build_dag(pipeline)
    params = resolve_params(pipeline, {})
    outputs = {name: {out: "1" for out in step.outputs} for name, step in pipeline.steps.items()}
    jobs = dag.all_jobs()
    assert jobs
    for job in jobs:
        spec = validate_spec(job_spec(job, render_step(pipeline, job, params, outputs)))
        assert "${{" not in spec.command  # every expression rendered


def test_the_ci_example() -> None:
    pipeline = parse_pipeline((EXAMPLES / "ci.yaml").read_text())
    dag = build_dag(pipeline)
    assert len(dag.jobs["test"]) == 4
    assert pipeline.steps["deploy"].when.value == "manual"
    assert pipeline.steps["package"].artifacts == ("dist/*.tar.gz",)
    done = {job.id: S for job in dag.all_jobs() if job.step_name in ("build", "test", "package")}
    assert awaiting_approval(dag, done) == ("deploy",)


def test_the_example_makes_job_specs_a_worker_can_take() -> None:
    """Sizes read from YAML become whole bytes (a float here once broke dispatch)."""
    from hodei.domain.pipelines import job_spec, render_step, resolve_params

    pipeline = parse_pipeline((EXAMPLES / "ci.yaml").read_text())
    dag = build_dag(pipeline)
    params = resolve_params(pipeline, {})
    build = dag.jobs["build"][0]
    spec = job_spec(build, render_step(pipeline, build, params, {}))
    assert spec.memory_bytes == 512 << 20 and type(spec.memory_bytes) is int
