"""The steps of a pipeline file: each step's fields read into a `Draft`, then a `StepSpec`.

A step's matrix is read by `matrix`; its expressions are kept on the draft and checked once
every step is known, since a step may read the outputs of steps written after it.
"""

from __future__ import annotations

from collections.abc import Callable

from hodei.domain.jobs import (
    JobSpec,
    check_image,
    parse_duration,
    parse_size,
    shown,
    validate_spec,
)
from hodei.domain.pipelines.matrix import read_matrix
from hodei.domain.pipelines.model import Cache, StepSpec, When
from hodei.domain.pipelines.values import (
    ENV_KEY,
    LABEL_KEY,
    OUTPUT_NAME,
    STEP_NAME,
    Draft,
    ValueReader,
    check_artifact_path,
    kind_of,
    suggest,
)
from hodei.domain.pipelines.yamltree import Map, Node, Scalar
from hodei.errors import ValidationError

STEP_FIELDS = (
    "run",
    "command",
    "args",
    "needs",
    "env",
    "secrets",
    "labels",
    "cpu",
    "memory",
    "timeout",
    "retries",
    "priority",
    "image",
    "matrix",
    "artifacts",
    "outputs",
    "when",
    "continue_on_error",
    "cache",
    "description",
)
MAX_ARTIFACTS = 100
MAX_OUTPUTS = 64
MAX_PATH = 1024


def read_steps(r: ValueReader, node: Node) -> dict[str, Draft]:
    """The steps of the file by name, in file order; a step with a bad name is left out."""
    drafts: dict[str, Draft] = {}
    if isinstance(node, Map) and len(node.pairs) > r.limits.max_steps:
        r.err(node, f"too many steps ({len(node.pairs)} > {r.limits.max_steps})")
        return drafts
    if not isinstance(node, Map):
        r.err(node, f"steps must be a mapping of step names to steps, not {kind_of(node)}")
        return drafts
    if not node.pairs:
        r.err(node, "steps must not be empty")
    seen: dict[str, Node] = {}
    for key, value in node.pairs:
        if not isinstance(key, Scalar) or key.value is None:
            r.err(key, "step names must be strings")
            continue
        name = key.text
        first = seen.get(name)
        if first is not None:
            r.err(key, f"duplicate step name {shown(name)} (first at line {first.line})")
            continue
        seen[name] = key
        if not STEP_NAME.fullmatch(name):
            r.err(
                key,
                f"invalid step name {shown(name)} (use 1-64 letters, digits, '_' or '-', "
                "starting with a letter or digit)",
            )
            continue
        draft = Draft(name, key)
        drafts[name] = draft
        _read_step(r, draft, value)
    return drafts


def _read_step(r: ValueReader, draft: Draft, node: Node) -> None:
    what = f"step {draft.name!r}"
    found = r.fields(node, what, STEP_FIELDS)
    if not isinstance(node, Map):
        return
    f = draft.fields
    value: Callable[[str], Node] = lambda key: found[key][1]  # noqa: E731
    if "matrix" in found:
        draft.matrix = read_matrix(r, value("matrix"), what)
    if "run" in found:
        f["run"] = r.template(value("run"), f"run of {what}", draft, "step")
    if "command" in found:
        f["command"] = r.template(value("command"), f"command of {what}", draft, "step")
    if "run" in found and "command" in found:
        r.err(found["command"][0], f"{what} has both run and command (use one)")
    elif "run" not in found and "command" not in found:
        r.err(draft.key, f"{what} has neither run nor command")
    if "args" in found:
        if "command" not in found:
            r.err(found["args"][0], f"args of {what} need command (run takes a command line)")
        args = [
            r.template(item, f"an argument of {what}", draft, "step")
            for item in r.items(value("args"), f"args of {what}")
        ]
        f["args"] = tuple(arg for arg in args if arg is not None)
    if "needs" in found:
        draft.needs = r.names(value("needs"), f"needs of {what}", STEP_NAME, r.limits.max_steps)
    usual = ("matrix" in found) + ("run" in found) + ("command" in found) + ("args" in found)
    if len(found) == usual + ("needs" in found):
        return  # the usual step: none of the other fields to read
    if "env" in found:
        f["env"] = r.string_map(value("env"), f"env of {what}", ENV_KEY, draft, "step_env")
    if "labels" in found:
        f["labels"] = r.string_map(value("labels"), f"labels of {what}", LABEL_KEY, draft, "step")
    if "secrets" in found:
        f["secrets"] = tuple(
            name for name, _ in r.names(value("secrets"), f"secrets of {what}", ENV_KEY, 64)
        )
    if "image" in found:
        image = r.template(value("image"), f"image of {what}", draft, "step")
        if image is not None and "${{" not in image:  # a literal: checked now, not at its run
            try:
                check_image(image)
            except ValidationError as exc:
                r.err(value("image"), f"image of {what}: {exc.message}")
        f["image"] = image
    _read_resources(r, found, what, f)
    if "artifacts" in found:
        f["artifacts"] = _read_artifacts(r, value("artifacts"), what, draft)
    if "outputs" in found:
        f["outputs"] = tuple(
            name
            for name, _ in r.names(value("outputs"), f"outputs of {what}", OUTPUT_NAME, MAX_OUTPUTS)
        )
    if "when" in found:
        when = r.literal(value("when"), f"when of {what}")
        if when is not None and when not in tuple(When):
            r.err(
                value("when"),
                f"unknown when {shown(when)} of {what} "
                f"(on_success, on_failure, always or manual){suggest(when, tuple(When))}",
            )
        elif when is not None:
            f["when"] = When(when)
    if "continue_on_error" in found:
        f["continue_on_error"] = r.boolean(
            value("continue_on_error"), f"continue_on_error of {what}"
        )
    if "cache" in found:
        f["cache"] = _read_cache(r, value("cache"), what, draft)
    if "description" in found:
        f["description"] = r.description(found)


def _read_resources(
    r: ValueReader, found: dict[str, tuple[Node, Node]], what: str, f: dict[str, object]
) -> None:
    if "cpu" in found:
        node = found["cpu"][1]
        if (
            not isinstance(node, Scalar)
            or isinstance(node.value, bool)
            or not isinstance(node.value, int | float)
        ):
            r.err(node, f"cpu of {what} must be a number of cores, not {kind_of(node)}")
        elif not 0 <= node.value <= 1024:
            r.err(node, f"cpu of {what} must be between 0 and 1024 cores")
        else:
            f["cpu"] = float(node.value)
    if "memory" in found:
        memory = r.measured(found["memory"][1], f"memory of {what}", parse_size, 1 << 50, "1 PiB")
        f["memory_bytes"] = None if memory is None else int(memory)  # whole bytes, as jobs have
    if "timeout" in found:
        f["timeout_s"] = r.measured(
            found["timeout"][1], f"timeout of {what}", parse_duration, 30 * 86400, "30 days"
        )
    if "retries" in found:
        f["retries"] = r.integer(found["retries"][1], f"retries of {what}", 0, 100)
    if "priority" in found:
        f["priority"] = r.integer(
            found["priority"][1], f"priority of {what}", -1_000_000, 1_000_000
        )


def _read_artifacts(r: ValueReader, node: Node, what: str, draft: Draft) -> tuple[str, ...]:
    out: list[str] = []
    items = r.items(node, f"artifacts of {what}")
    if len(items) > MAX_ARTIFACTS:
        r.err(node, f"too many artifacts in {what} ({len(items)} > {MAX_ARTIFACTS})")
        return ()
    for item in items:
        path = r.template(item, f"an artifact of {what}", draft, "step")
        if path is None:
            continue
        problem = check_artifact_path(path)
        if problem is not None:
            r.err(item, problem)
        else:
            out.append(path)
    return tuple(out)


def _read_cache(r: ValueReader, node: Node, what: str, draft: Draft) -> Cache | None:
    if isinstance(node, Scalar) and isinstance(node.value, bool):
        return Cache() if node.value else None
    if not isinstance(node, Map):
        r.err(
            node,
            f"cache of {what} must be true, false or a mapping with key, not {kind_of(node)}",
        )
        return None
    found = r.fields(node, f"cache of {what}", ("key",))
    if "key" not in found:
        return Cache()
    return Cache(r.template(found["key"][1], f"the cache key of {what}", draft, "step"))


def step_spec(r: ValueReader, draft: Draft, env: dict[str, str]) -> StepSpec:
    """The step read, its job spec checked as a job with the pipeline's `env` would be."""
    f = draft.fields
    spec = StepSpec(
        name=draft.name,
        needs=tuple([name for name, _ in draft.needs]),
        matrix=draft.matrix,
        line=draft.key.line,
        column=draft.key.column,
        **{key: value for key, value in f.items() if value is not None},  # type: ignore[arg-type]
    )
    probe = JobSpec(
        command=spec.run or spec.command or "",
        arguments=spec.args,
        env={**env, **spec.env},
        secrets=spec.secrets,
        labels=spec.labels,
        cpu=spec.cpu,
        memory_bytes=spec.memory_bytes,
        timeout_s=spec.timeout_s,
        max_retries=spec.retries,
        priority=spec.priority,
    )
    try:
        validate_spec(probe)
    except ValidationError as exc:
        r.err(draft.key, f"step {draft.name!r}: {exc.message}")
    return spec
