"""From a job of a step to what runs: params resolved, expressions rendered, a `JobSpec`."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

from hodei.domain.jobs import MAX_NAME, JobSpec, shown, validate_spec
from hodei.domain.pipelines.expressions import Context, render
from hodei.domain.pipelines.model import ParamType, Pipeline, StepJob
from hodei.domain.pipelines.parse import OUTPUT_NAME, check_artifact_path, suggest
from hodei.errors import ValidationError

MAX_OUTPUT_VALUE = 64 * 1024
MAX_OUTPUTS_BYTES = 1024 * 1024
_INT = re.compile(r"[+-]?\d{1,19}")
_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})


def resolve_params(pipeline: Pipeline, given: Mapping[str, str | int | bool]) -> dict[str, str]:
    """Every param's value for one run (as a string), from `given` and the defaults.

    Raise ValidationError naming every unknown, missing or ill-typed param.
    """
    problems: list[str] = []
    values: dict[str, str] = {}
    for name in given:
        if name not in pipeline.params:
            problems.append(f"unknown param {shown(name)}{suggest(name, pipeline.params)}")
    for name, param in pipeline.params.items():
        raw = given.get(name)
        if raw is None:
            if param.default is None:
                problems.append(f"param {name!r} is required")
            else:
                values[name] = param.default
            continue
        text = ("true" if raw else "false") if isinstance(raw, bool) else str(raw)
        if param.type is ParamType.INT:
            if isinstance(raw, bool) or not _INT.fullmatch(text.strip()):
                problems.append(f"param {name!r} must be a whole number, not {shown(text)}")
                continue
            text = str(int(text))
        elif param.type is ParamType.BOOL:
            if text.lower() in _TRUE:
                text = "true"
            elif text.lower() in _FALSE:
                text = "false"
            else:
                problems.append(f"param {name!r} must be true or false, not {shown(text)}")
                continue
        elif param.type is ParamType.CHOICE and text not in param.options:
            problems.append(
                f"param {name!r} must be one of {', '.join(param.options)}, not {shown(text)}"
            )
            continue
        if "\x00" in text or len(text) > 32 * 1024:
            problems.append(f"param {name!r} must be at most 32 KiB without NUL")
            continue
        values[name] = text
    if problems:
        raise ValidationError("; ".join(problems))
    return values


@dataclass(frozen=True, slots=True)
class RenderedStep:
    """A job's strings with every expression replaced."""

    command: str
    arguments: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)  # the pipeline's env, then the step's
    labels: dict[str, str] = field(default_factory=dict)
    image: str | None = None
    artifacts: tuple[str, ...] = ()
    cache_key: str | None = None  # None: the step has no cache


def render_step(
    pipeline: Pipeline,
    job: StepJob,
    params: Mapping[str, str],
    outputs: Mapping[str, Mapping[str, str]] | None = None,
) -> RenderedStep:
    """Render `job`'s strings: its matrix values, the run's `params` (from `resolve_params`)
    and `outputs`, step name -> the outputs that step wrote (its needs' are enough)."""
    step = job.step
    outputs = outputs or {}
    base = Context(job.matrix_values, params, {}, outputs)
    pipeline_env = {key: render(value, base) for key, value in pipeline.env.items()}
    env_context = Context(job.matrix_values, params, pipeline_env, outputs)
    env = {**pipeline_env, **{key: render(value, env_context) for key, value in step.env.items()}}
    context = Context(job.matrix_values, params, env, outputs)
    artifacts = tuple(render(path, context) for path in step.artifacts)
    for path in artifacts:
        problem = check_artifact_path(path)
        if problem is not None:
            raise ValidationError(f"step {step.name!r}: {problem}")
    command = render(step.run if step.run is not None else step.command or "", context)
    arguments = tuple(render(arg, context) for arg in step.args)
    labels = {key: render(value, context) for key, value in step.labels.items()}
    image = render(step.image, context) if step.image is not None else None
    cache_key: str | None = None
    if step.cache is not None:
        if step.cache.key is not None:
            cache_key = render(step.cache.key, context)
        else:
            cache_key = _default_cache_key(job, command, arguments, env, image)
    return RenderedStep(command, arguments, env, labels, image, artifacts, cache_key)


def _default_cache_key(
    job: StepJob, command: str, arguments: tuple[str, ...], env: dict[str, str], image: str | None
) -> str:
    material = json.dumps(
        [job.pipeline, job.id, command, list(arguments), sorted(env.items()), image],
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(material.encode("utf-8", "surrogatepass")).hexdigest()


def job_spec(job: StepJob, rendered: RenderedStep, *, queued_by: str = "") -> JobSpec:
    """The `JobSpec` that runs `job`, validated (ValidationError if rendering made it too big
    or its image is not an image reference)."""
    step = job.step
    name = f"{job.pipeline}/{job.id}"
    spec = JobSpec(
        command=rendered.command,
        arguments=rendered.arguments,
        name=name if len(name) <= MAX_NAME else name[: MAX_NAME - 3] + "...",
        env=dict(rendered.env),
        secrets=step.secrets,
        labels=dict(rendered.labels),
        cpu=step.cpu,
        memory_bytes=step.memory_bytes,
        timeout_s=step.timeout_s,
        max_retries=step.retries,
        priority=step.priority,
        queued_by=queued_by,
        image=rendered.image or None,
    )
    try:
        return validate_spec(spec)
    except ValidationError as exc:
        raise ValidationError(f"step {step.name!r}: {exc.message}") from None


def parse_outputs(text: str, declared: tuple[str, ...]) -> dict[str, str]:
    """A step's outputs file: `NAME=value` lines; only declared names are kept.

    Blank lines and lines starting with '#' are ignored; a later line wins. A value may not
    span lines. Raise ValidationError for a line that is not NAME=value or a file too large.
    """
    if len(text) > MAX_OUTPUTS_BYTES:
        raise ValidationError(f"outputs file too large (more than {MAX_OUTPUTS_BYTES} bytes)")
    wanted = set(declared)
    out: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, sep, value = line.partition("=")
        name = name.strip()
        if not sep or not OUTPUT_NAME.fullmatch(name):
            raise ValidationError(f"outputs line {number}: expected NAME=value, got {shown(line)}")
        if len(value) > MAX_OUTPUT_VALUE or "\x00" in value:
            raise ValidationError(f"outputs line {number}: value of {name!r} too long or with NUL")
        if name in wanted:
            out[name] = value
    return out
