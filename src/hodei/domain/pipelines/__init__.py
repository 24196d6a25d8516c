"""Hodei Pipelines: DAG workflows as code (the file format, its validation and the DAG model).

Pure like the rest of `domain/`: text in, values out. See docs/pipelines.md for the format.

    pipeline = parse_pipeline(text)            # or check_pipeline(text) -> (pipeline, issues)
    dag = build_dag(pipeline)
    params = resolve_params(pipeline, {"target": "prod"})
    for job in ready(dag, states, approved):
        spec = job_spec(job, render_step(pipeline, job, params, outputs))
"""

from hodei.domain.pipelines.dag import (
    Dag,
    Plan,
    RetryPlan,
    Skip,
    awaiting_approval,
    build_dag,
    expand,
    plan,
    ready,
    retry_plan,
    run_status,
    to_skip,
)
from hodei.domain.pipelines.expressions import Context, ExpressionError, Ref, parse_template, render
from hodei.domain.pipelines.model import (
    DEFAULT_LIMITS,
    Cache,
    Issue,
    JobStatus,
    Limits,
    Matrix,
    Param,
    ParamType,
    Pipeline,
    PipelineError,
    StepJob,
    StepSpec,
    When,
    job_id,
    status_of,
)
from hodei.domain.pipelines.parse import check_artifact_path, check_pipeline, parse_pipeline
from hodei.domain.pipelines.rendering import (
    RenderedStep,
    job_spec,
    parse_outputs,
    render_step,
    resolve_params,
)

__all__ = [
    "DEFAULT_LIMITS",
    "Cache",
    "Context",
    "Dag",
    "ExpressionError",
    "Issue",
    "JobStatus",
    "Limits",
    "Matrix",
    "Param",
    "ParamType",
    "Pipeline",
    "PipelineError",
    "Plan",
    "Ref",
    "RenderedStep",
    "RetryPlan",
    "Skip",
    "StepJob",
    "StepSpec",
    "When",
    "awaiting_approval",
    "build_dag",
    "check_artifact_path",
    "check_pipeline",
    "expand",
    "job_id",
    "job_spec",
    "parse_outputs",
    "parse_pipeline",
    "parse_template",
    "plan",
    "ready",
    "render",
    "render_step",
    "resolve_params",
    "retry_plan",
    "run_status",
    "status_of",
    "to_skip",
]
