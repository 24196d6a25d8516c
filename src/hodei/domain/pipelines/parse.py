"""Pipeline file -> `Pipeline`, with every problem reported at once, each at its line and column.

`check_pipeline` returns the pipeline (None if anything is wrong) and the issues;
`parse_pipeline` returns the pipeline or raises `PipelineError` holding all of them. The work
is linear in the size of the file: steps, needs edges and expressions are each looked at a
bounded number of times (an expression reading a step's outputs walks the needs upwards
from its step until it finds that step, once per distinct pair).
"""

from __future__ import annotations

import difflib
import itertools
import re
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from hodei.domain.jobs import (
    JobSpec,
    artifact_path_problem,
    parse_duration,
    parse_size,
    shown,
    validate_spec,
)
from hodei.domain.pipelines.expressions import ExpressionError, Part, Ref, parse_template
from hodei.domain.pipelines.model import (
    DEFAULT_LIMITS,
    Cache,
    Combination,
    Issue,
    Limits,
    Matrix,
    Param,
    ParamType,
    Pipeline,
    PipelineError,
    StepSpec,
    When,
)
from hodei.domain.pipelines.yamltree import Map, Node, Scalar, Seq, TreeError, load_tree
from hodei.errors import ValidationError

STEP_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
PIPELINE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
ENV_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
LABEL_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,62}")
PARAM_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
OUTPUT_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
MATRIX_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,63}")
MATRIX_VALUE = re.compile(r"[^\x00-\x1f\x7f,=\[\]]{1,64}")

PIPELINE_FIELDS = ("name", "description", "env", "params", "steps")
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
PARAM_FIELDS = ("type", "default", "options", "description")
MATRIX_RESERVED = ("exclude", "include", "max_parallel")
MAX_ARTIFACTS = 100
MAX_OUTPUTS = 64
MAX_PATH = 1024
MAX_DESCRIPTION = 4096
_RAW_MATRIX_CAP = 65_536  # combinations computed before exclusions at most


def parse_pipeline(
    source: str | bytes, *, limits: Limits = DEFAULT_LIMITS, filename: str = "pipeline"
) -> Pipeline:
    """The pipeline in `source`; raise PipelineError listing every problem."""
    pipeline, issues = check_pipeline(source, limits=limits)
    if pipeline is None:
        raise PipelineError(issues, filename)
    return pipeline


def check_pipeline(
    source: str | bytes, *, limits: Limits = DEFAULT_LIMITS
) -> tuple[Pipeline | None, tuple[Issue, ...]]:
    """(the pipeline or None, every problem found in file order)."""
    size = len(source)
    if size > limits.max_bytes or (
        isinstance(source, str) and len(source.encode("utf-8", "surrogatepass")) > limits.max_bytes
    ):
        return None, (Issue(1, 1, f"file too large (more than {limits.max_bytes} bytes)"),)
    if isinstance(source, bytes):
        try:
            text = source.decode("utf-8")
        except UnicodeDecodeError as exc:
            return None, (Issue(1, 1, f"file is not UTF-8 (byte {exc.start})"),)
    else:
        text = source
    try:
        root = load_tree(text, limits)
    except TreeError as exc:
        return None, (Issue(exc.line, exc.column, exc.message),)
    reader = _Reader(limits)
    pipeline = reader.pipeline(root)
    issues = sorted(reader.issues)
    if len(issues) > limits.max_errors:
        rest = len(issues) - limits.max_errors
        last = issues[limits.max_errors - 1]
        issues = [
            *issues[: limits.max_errors],
            Issue(last.line, last.column, f"... and {rest} more"),
        ]
    return (pipeline if not issues else None), tuple(issues)


def suggest(word: str, candidates: Iterable[str]) -> str:
    """' (did you mean 'x'?)' when one candidate is close to `word`, else ''."""
    close = difflib.get_close_matches(word, [str(c) for c in candidates], n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def check_artifact_path(path: str) -> str | None:
    """Why `path` is not an acceptable artifact path, or None: relative, no '..', no NUL."""
    return artifact_path_problem(path)


@dataclass
class _Template:
    node: Node
    parts: tuple[Part, ...]
    scope: str  # "pipeline_env" | "step_env" | "step"


@dataclass
class _Draft:
    name: str
    key: Node
    fields: dict[str, object] = field(default_factory=dict)
    needs: list[tuple[str, Node]] = field(default_factory=list)
    templates: list[_Template] = field(default_factory=list)
    matrix: Matrix | None = None


class _Reader:
    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.issues: list[Issue] = []
        self.env: dict[str, str] = {}
        self.env_templates: list[_Template] = []
        self.params: dict[str, Param] = {}
        self.drafts: dict[str, _Draft] = {}
        self._reach: dict[tuple[str, str], bool] = {}

    # -- reporting and typed reads -------------------------------------------------------

    def err(self, node: Node, message: str) -> None:
        self.issues.append(Issue(node.line, node.column, message))

    def mapping(self, node: Node, what: str) -> list[tuple[str, Node, Node]] | None:
        """(key, key node, value node) of a mapping; duplicates and bad keys reported."""
        if not isinstance(node, Map):
            self.err(node, f"{what} must be a mapping, not {_kind(node)}")
            return None
        out: list[tuple[str, Node, Node]] = []
        seen: dict[str, Node] = {}
        for key, value in node.pairs:
            if not isinstance(key, Scalar) or key.value is None:
                self.err(key, f"keys of {what} must be strings")
                continue
            first = seen.get(key.text)
            if first is not None:
                self.err(
                    key, f"duplicate key {shown(key.text)} in {what} (first at line {first.line})"
                )
                continue
            seen[key.text] = key
            out.append((key.text, key, value))
        return out

    def fields(
        self, node: Node, what: str, allowed: tuple[str, ...]
    ) -> dict[str, tuple[Node, Node]]:
        out: dict[str, tuple[Node, Node]] = {}
        for key, key_node, value in self.mapping(node, what) or ():
            if key not in allowed:
                self.err(key_node, f"unknown field {shown(key)} in {what}{suggest(key, allowed)}")
            else:
                out[key] = (key_node, value)
        return out

    def text(self, node: Node, what: str, *, empty_ok: bool = False) -> str | None:
        """A scalar as written (so 3.10 stays '3.10' and yes stays 'yes')."""
        if not isinstance(node, Scalar):
            self.err(node, f"{what} must be a string, not {_kind(node)}")
            return None
        if node.value is None or (not empty_ok and not node.text.strip()):
            self.err(node, f"{what} must not be empty")
            return None
        if "\x00" in node.text:
            self.err(node, f"{what} must not contain NUL")
            return None
        return node.text

    def template(self, node: Node, what: str, draft: _Draft | None, scope: str) -> str | None:
        value = self.text(node, what)
        if value is None:
            return None
        try:
            parts = parse_template(value)
        except ExpressionError as exc:
            self.err(node, f"{what}: {exc.message}")
            return None
        if any(isinstance(part, Ref) for part in parts):
            target = draft.templates if draft is not None else self.env_templates
            target.append(_Template(node, parts, scope))
        return value

    def literal(self, node: Node, what: str) -> str | None:
        value = self.text(node, what)
        if value is not None and "${{" in value:
            self.err(node, f"{what} cannot hold expressions")
            return None
        return value

    def integer(self, node: Node, what: str, low: int, high: int) -> int | None:
        if (
            not isinstance(node, Scalar)
            or isinstance(node.value, bool)
            or not isinstance(node.value, int)
        ):
            self.err(node, f"{what} must be a whole number, not {_kind(node)}")
            return None
        if not low <= node.value <= high:
            self.err(node, f"{what} must be between {low} and {high}")
            return None
        return node.value

    def boolean(self, node: Node, what: str) -> bool | None:
        if not isinstance(node, Scalar) or not isinstance(node.value, bool):
            self.err(node, f"{what} must be true or false, not {_kind(node)}")
            return None
        return node.value

    def items(self, node: Node, what: str) -> list[Node]:
        """A sequence's items (a lone scalar counts as a one-item list)."""
        if isinstance(node, Seq):
            return node.items
        if isinstance(node, Scalar) and node.value is not None:
            return [node]
        self.err(node, f"{what} must be a list, not {_kind(node)}")
        return []

    def names(
        self, node: Node, what: str, pattern: re.Pattern[str], limit: int
    ) -> list[tuple[str, Node]]:
        out: list[tuple[str, Node]] = []
        seen: set[str] = set()
        items = self.items(node, what)
        if len(items) > limit:
            self.err(node, f"too many {what} ({len(items)} > {limit})")
            return out
        for item in items:
            value = self.text(item, f"an entry of {what}")
            if value is None:
                continue
            if not pattern.fullmatch(value):
                self.err(item, f"invalid name {shown(value)} in {what}")
            elif value in seen:
                self.err(item, f"{shown(value)} is listed twice in {what}")
            else:
                seen.add(value)
                out.append((value, item))
        return out

    def string_map(
        self, node: Node, what: str, key_re: re.Pattern[str], draft: _Draft | None, scope: str
    ) -> dict[str, str]:
        out: dict[str, str] = {}
        for key, key_node, value in self.mapping(node, what) or ():
            if not key_re.fullmatch(key):
                self.err(key_node, f"invalid key {shown(key)} in {what}")
                continue
            rendered = self.template(value, f"{what}.{key}", draft, scope)
            if rendered is not None:
                out[key] = rendered
        return out

    # -- the file ------------------------------------------------------------------------

    def pipeline(self, root: Node | None) -> Pipeline | None:
        if root is None:
            self.issues.append(Issue(1, 1, "file is empty (a pipeline needs name and steps)"))
            return None
        top = self.fields(root, "the pipeline", PIPELINE_FIELDS)
        if not isinstance(root, Map):
            return None
        name = ""
        if "name" not in top:
            self.err(root, "the pipeline has no name")
        elif (value := self.literal(top["name"][1], "name")) is not None:
            if PIPELINE_NAME.fullmatch(value):
                name = value
            else:
                self.err(
                    top["name"][1],
                    f"invalid pipeline name {shown(value)} "
                    "(use 1-64 letters, digits, '.', '_' or '-')",
                )
        description = self.description(top)
        if "params" in top:
            self.read_params(top["params"][1])
        if "env" in top:
            self.env = self.string_map(top["env"][1], "env", ENV_KEY, None, "pipeline_env")
        if "steps" not in top:
            self.err(root, "the pipeline has no steps")
        else:
            self.read_steps(top["steps"][1])
        self.check_graph()
        for template in self.env_templates:
            self.check_refs(template, None)
        for draft in self.drafts.values():
            for template in draft.templates:
                self.check_refs(template, draft)
        self.check_expansion()
        if self.issues:
            return None
        steps = {draft.name: self.step_spec(draft) for draft in self.drafts.values()}
        return Pipeline(
            name=name, steps=steps, env=self.env, params=self.params, description=description
        )

    def description(self, found: dict[str, tuple[Node, Node]]) -> str:
        if "description" not in found:
            return ""
        value = self.text(found["description"][1], "description", empty_ok=True) or ""
        if len(value) > MAX_DESCRIPTION:
            self.err(
                found["description"][1],
                f"description too long (more than {MAX_DESCRIPTION} characters)",
            )
        return value

    def read_params(self, node: Node) -> None:
        for name, key_node, value in self.mapping(node, "params") or ():
            if not PARAM_NAME.fullmatch(name):
                self.err(key_node, f"invalid param name {shown(name)}")
                continue
            param = self.param(name, value)
            if param is not None:
                self.params[name] = param

    def param(self, name: str, node: Node) -> Param | None:
        what = f"param {name!r}"
        if isinstance(node, Scalar):  # shorthand: a string param with this default
            default = (
                self.literal(node, f"the default of {what}") if node.value is not None else None
            )
            return Param(name, ParamType.STRING, default)
        found = self.fields(node, what, PARAM_FIELDS)
        kind = ParamType.STRING
        if "type" in found:
            written = self.literal(found["type"][1], f"the type of {what}")
            if written is not None and written not in tuple(ParamType):
                self.err(
                    found["type"][1],
                    f"unknown type {shown(written)} of {what} (string, int, bool or choice)"
                    + suggest(written, tuple(ParamType)),
                )
                return None
            kind = ParamType(written) if written is not None else kind
        options: tuple[str, ...] = ()
        if kind is ParamType.CHOICE:
            if "options" not in found:
                self.err(node, f"{what} is a choice and needs options")
                return None
            options = tuple(self.choice_options(found["options"][1], what))
            if not options:
                return None
        elif "options" in found:
            self.err(found["options"][0], f"options are for choice params only ({what} is {kind})")
        default = None
        if "default" in found:
            default = self.param_default(kind, options, found["default"][1], what)
            if default is None:
                return None
        description = self.description(found)
        return Param(name, kind, default, options, description)

    def choice_options(self, node: Node, what: str) -> list[str]:
        out: list[str] = []
        for item in self.items(node, f"the options of {what}"):
            value = self.literal(item, f"an option of {what}")
            if value is not None and value in out:
                self.err(item, f"option {shown(value)} of {what} is listed twice")
            elif value is not None:
                out.append(value)
        return out

    def param_default(
        self, kind: ParamType, options: tuple[str, ...], node: Node, what: str
    ) -> str | None:
        if kind is ParamType.INT:
            number = self.integer(node, f"the default of {what}", -(2**63), 2**63 - 1)
            return None if number is None else str(number)
        if kind is ParamType.BOOL:
            flag = self.boolean(node, f"the default of {what}")
            return None if flag is None else ("true" if flag else "false")
        value = self.literal(node, f"the default of {what}")
        if value is not None and kind is ParamType.CHOICE and value not in options:
            self.err(
                node, f"the default of {what} must be one of its options{suggest(value, options)}"
            )
            return None
        return value

    # -- steps ---------------------------------------------------------------------------

    def read_steps(self, node: Node) -> None:
        if isinstance(node, Map) and len(node.pairs) > self.limits.max_steps:
            self.err(node, f"too many steps ({len(node.pairs)} > {self.limits.max_steps})")
            return
        if not isinstance(node, Map):
            self.err(node, f"steps must be a mapping of step names to steps, not {_kind(node)}")
            return
        if not node.pairs:
            self.err(node, "steps must not be empty")
        seen: dict[str, Node] = {}
        for key, value in node.pairs:
            if not isinstance(key, Scalar) or key.value is None:
                self.err(key, "step names must be strings")
                continue
            name = key.text
            first = seen.get(name)
            if first is not None:
                self.err(key, f"duplicate step name {shown(name)} (first at line {first.line})")
                continue
            seen[name] = key
            if not STEP_NAME.fullmatch(name):
                self.err(
                    key,
                    f"invalid step name {shown(name)} (use 1-64 letters, digits, '_' or '-', "
                    "starting with a letter or digit)",
                )
                continue
            draft = _Draft(name, key)
            self.drafts[name] = draft
            self.read_step(draft, value)

    def read_step(self, draft: _Draft, node: Node) -> None:
        what = f"step {draft.name!r}"
        found = self.fields(node, what, STEP_FIELDS)
        if not isinstance(node, Map):
            return
        f = draft.fields
        value: Callable[[str], Node] = lambda key: found[key][1]  # noqa: E731
        if "matrix" in found:
            draft.matrix = self.read_matrix(value("matrix"), what)
        if "run" in found:
            f["run"] = self.template(value("run"), f"run of {what}", draft, "step")
        if "command" in found:
            f["command"] = self.template(value("command"), f"command of {what}", draft, "step")
        if "run" in found and "command" in found:
            self.err(found["command"][0], f"{what} has both run and command (use one)")
        elif "run" not in found and "command" not in found:
            self.err(draft.key, f"{what} has neither run nor command")
        if "args" in found:
            if "command" not in found:
                self.err(
                    found["args"][0], f"args of {what} need command (run takes a command line)"
                )
            args = [
                self.template(item, f"an argument of {what}", draft, "step")
                for item in self.items(value("args"), f"args of {what}")
            ]
            f["args"] = tuple(arg for arg in args if arg is not None)
        if "needs" in found:
            draft.needs = self.names(
                value("needs"), f"needs of {what}", STEP_NAME, self.limits.max_steps
            )
        if "env" in found:
            f["env"] = self.string_map(value("env"), f"env of {what}", ENV_KEY, draft, "step_env")
        if "labels" in found:
            f["labels"] = self.string_map(
                value("labels"), f"labels of {what}", LABEL_KEY, draft, "step"
            )
        if "secrets" in found:
            f["secrets"] = tuple(
                name for name, _ in self.names(value("secrets"), f"secrets of {what}", ENV_KEY, 64)
            )
        if "image" in found:
            f["image"] = self.template(value("image"), f"image of {what}", draft, "step")
        self.read_resources(found, what, f)
        if "artifacts" in found:
            f["artifacts"] = self.read_artifacts(value("artifacts"), what, draft)
        if "outputs" in found:
            f["outputs"] = tuple(
                name
                for name, _ in self.names(
                    value("outputs"), f"outputs of {what}", OUTPUT_NAME, MAX_OUTPUTS
                )
            )
        if "when" in found:
            when = self.literal(value("when"), f"when of {what}")
            if when is not None and when not in tuple(When):
                self.err(
                    value("when"),
                    f"unknown when {shown(when)} of {what} "
                    f"(on_success, on_failure, always or manual){suggest(when, tuple(When))}",
                )
            elif when is not None:
                f["when"] = When(when)
        if "continue_on_error" in found:
            f["continue_on_error"] = self.boolean(
                value("continue_on_error"), f"continue_on_error of {what}"
            )
        if "cache" in found:
            f["cache"] = self.read_cache(value("cache"), what, draft)
        if "description" in found:
            f["description"] = self.description(found)

    def read_resources(
        self, found: dict[str, tuple[Node, Node]], what: str, f: dict[str, object]
    ) -> None:
        if "cpu" in found:
            node = found["cpu"][1]
            if (
                not isinstance(node, Scalar)
                or isinstance(node.value, bool)
                or not isinstance(node.value, int | float)
            ):
                self.err(node, f"cpu of {what} must be a number of cores, not {_kind(node)}")
            elif not 0 <= node.value <= 1024:
                self.err(node, f"cpu of {what} must be between 0 and 1024 cores")
            else:
                f["cpu"] = float(node.value)
        if "memory" in found:
            f["memory_bytes"] = self.measured(
                found["memory"][1], f"memory of {what}", parse_size, 1 << 50, "1 PiB"
            )
        if "timeout" in found:
            f["timeout_s"] = self.measured(
                found["timeout"][1], f"timeout of {what}", parse_duration, 30 * 86400, "30 days"
            )
        if "retries" in found:
            f["retries"] = self.integer(found["retries"][1], f"retries of {what}", 0, 100)
        if "priority" in found:
            f["priority"] = self.integer(
                found["priority"][1], f"priority of {what}", -1_000_000, 1_000_000
            )

    def measured(
        self, node: Node, what: str, parser: Callable[[str], float], high: float, shown_high: str
    ) -> float | None:
        if not isinstance(node, Scalar) or node.value is None or isinstance(node.value, bool):
            self.err(
                node, f"{what} must be a number or a string such as 512M or 10m, not {_kind(node)}"
            )
            return None
        try:
            amount = (
                float(node.value)
                if isinstance(node.value, int | float)
                else float(parser(node.text))
            )
        except ValidationError as exc:
            self.err(node, f"{what}: {exc.message}")
            return None
        if not 0 <= amount <= high:
            self.err(node, f"{what} must be between 0 and {shown_high}")
            return None
        return amount

    def read_artifacts(self, node: Node, what: str, draft: _Draft) -> tuple[str, ...]:
        out: list[str] = []
        items = self.items(node, f"artifacts of {what}")
        if len(items) > MAX_ARTIFACTS:
            self.err(node, f"too many artifacts in {what} ({len(items)} > {MAX_ARTIFACTS})")
            return ()
        for item in items:
            path = self.template(item, f"an artifact of {what}", draft, "step")
            if path is None:
                continue
            problem = check_artifact_path(path)
            if problem is not None:
                self.err(item, problem)
            else:
                out.append(path)
        return tuple(out)

    def read_cache(self, node: Node, what: str, draft: _Draft) -> Cache | None:
        if isinstance(node, Scalar) and isinstance(node.value, bool):
            return Cache() if node.value else None
        if not isinstance(node, Map):
            self.err(
                node,
                f"cache of {what} must be true, false or a mapping with key, not {_kind(node)}",
            )
            return None
        found = self.fields(node, f"cache of {what}", ("key",))
        if "key" not in found:
            return Cache()
        return Cache(self.template(found["key"][1], f"the cache key of {what}", draft, "step"))

    # -- matrix --------------------------------------------------------------------------

    def read_matrix(self, node: Node, what: str) -> Matrix | None:
        entries = self.mapping(node, f"the matrix of {what}")
        if entries is None:
            return None
        axes: list[tuple[str, tuple[str, ...]]] = []
        exclude_node = include_node = None
        max_parallel: int | None = None
        broken = False
        for key, key_node, value in entries:
            if key == "exclude":
                exclude_node = value
            elif key == "include":
                include_node = value
            elif key == "max_parallel":
                max_parallel = self.integer(
                    value, f"max_parallel of {what}", 1, self.limits.max_jobs_per_step
                )
                broken |= max_parallel is None
            elif not MATRIX_KEY.fullmatch(key):
                self.err(key_node, f"invalid matrix key {shown(key)} in {what}")
                broken = True
            else:
                values = self.matrix_values(value, f"matrix key {key!r} of {what}")
                broken |= values is None
                if values is not None:
                    axes.append((key, values))
        keys = [key for key, _ in axes]
        exclude = (
            self.combos(exclude_node, "exclude", what, keys, dict(axes))
            if exclude_node is not None
            else []
        )
        include = (
            self.combos(include_node, "include", what, keys, None)
            if include_node is not None
            else []
        )
        if broken or exclude is None or include is None:
            return None
        if not axes and not include:
            self.err(node, f"the matrix of {what} has no keys")
            return None
        size = 1
        for _, values in axes:
            size *= len(values)
        if size > _RAW_MATRIX_CAP:
            self.err(node, f"the matrix of {what} is too large ({size} combinations)")
            return None
        combos: list[Combination] = []
        if axes:
            names = [key for key, _ in axes]
            for values in itertools.product(*(vals for _, vals in axes)):
                combos.append(tuple(zip(names, values, strict=True)))
        used = [False] * len(exclude)
        kept: list[Combination] = []
        for combo in combos:
            as_dict = dict(combo)
            hit = False
            for i, rule in enumerate(exclude):
                if all(as_dict[k] == v for k, v in rule):
                    used[i] = hit = True
            if not hit:
                kept.append(combo)
        for i, rule in enumerate(exclude):
            if not used[i]:
                self.err(
                    exclude_node or node,
                    f"exclude entry {_combo_text(rule)} of {what} matches no combination",
                )
        present = set(kept)
        for combo in include:
            if combo in present:
                self.err(
                    include_node or node,
                    f"include entry {_combo_text(combo)} of {what} is already in the matrix",
                )
            else:
                present.add(combo)
                kept.append(combo)
        if not kept:
            self.err(node, f"the matrix of {what} has no combinations left")
            return None
        if len(kept) > self.limits.max_jobs_per_step:
            self.err(
                node,
                f"the matrix of {what} expands to {len(kept)} jobs "
                f"(more than {self.limits.max_jobs_per_step})",
            )
            return None
        return Matrix(tuple(axes), tuple(exclude), tuple(include), max_parallel, tuple(kept))

    def matrix_values(self, node: Node, what: str) -> tuple[str, ...] | None:
        if not isinstance(node, Seq) or not node.items:
            self.err(node, f"{what} must be a non-empty list of values")
            return None
        out: list[str] = []
        for item in node.items:
            value = self.matrix_value(item, f"a value of {what}")
            if value is None:
                return None
            if value in out:
                self.err(item, f"{shown(value)} is listed twice in {what}")
                return None
            out.append(value)
        return tuple(out)

    def matrix_value(self, node: Node, what: str) -> str | None:
        value = self.literal(node, what)
        if value is not None and not MATRIX_VALUE.fullmatch(value):
            self.err(
                node,
                f"{what} must be 1-64 characters without control characters, ',', '=', '[' or ']'",
            )
            return None
        return value

    def combos(
        self,
        node: Node,
        kind: str,
        what: str,
        keys: list[str],
        allowed: dict[str, tuple[str, ...]] | None,
    ) -> list[Combination] | None:
        if not isinstance(node, Seq):
            self.err(node, f"{kind} of the matrix of {what} must be a list of mappings")
            return None
        out: list[Combination] = []
        ok = True
        first_keys: list[str] | None = None
        for entry in node.items:
            pairs = self.mapping(entry, f"an {kind} entry of {what}")
            if pairs is None:
                ok = False
                continue
            combo: list[tuple[str, str]] = []
            for key, key_node, value in pairs:
                if keys and key not in keys:
                    self.err(
                        key_node,
                        f"{kind}: {shown(key)} is not a key of the matrix of {what}"
                        + suggest(key, keys),
                    )
                    ok = False
                    continue
                if not keys and not MATRIX_KEY.fullmatch(key):
                    self.err(key_node, f"invalid matrix key {shown(key)} in {what}")
                    ok = False
                    continue
                text = self.matrix_value(value, f"{kind} value {key!r} of {what}")
                if text is None:
                    ok = False
                elif allowed is not None and text not in allowed.get(key, ()):
                    self.err(
                        value,
                        f"exclude: {shown(text)} is not a value of matrix key {key!r} of {what}",
                    )
                    ok = False
                else:
                    combo.append((key, text))
            if not ok:
                continue
            if kind == "exclude":
                if not combo:
                    self.err(entry, f"an exclude entry of {what} is empty")
                    ok = False
                out.append(tuple(combo))
                continue
            order = keys or first_keys or [key for key, _ in combo]
            first_keys = order
            if sorted(key for key, _ in combo) != sorted(order):
                self.err(entry, f"an include entry of {what} must set exactly {', '.join(order)}")
                ok = False
                continue
            as_dict = dict(combo)
            out.append(tuple((key, as_dict[key]) for key in order))
        return out if ok else None

    # -- the graph and the expressions ---------------------------------------------------

    def check_graph(self) -> None:
        drafts = self.drafts
        for draft in drafts.values():
            for need, node in draft.needs:
                if need not in drafts:
                    self.err(
                        node,
                        f"step {draft.name!r} needs unknown step {need!r}{suggest(need, drafts)}",
                    )
        # Iterative DFS: white (absent), grey (on the path), black (done); a grey
        # neighbour closes a cycle.
        state: dict[str, int] = {}
        for start in drafts:
            if start in state:
                continue
            path: list[str] = [start]
            position = {start: 0}
            stack = [iter(drafts[start].needs)]
            state[start] = 1
            while stack:
                step = path[-1]
                for need, node in stack[-1]:
                    if need not in drafts:
                        continue
                    seen = state.get(need)
                    if seen is None:
                        state[need] = 1
                        position[need] = len(path)
                        path.append(need)
                        stack.append(iter(drafts[need].needs))
                        break
                    if seen == 1:
                        cycle = [*path[position[need] :], need]
                        self.err(node, f"cycle in needs: {_cycle_text(cycle)}")
                else:
                    state[step] = 2
                    del position[step]
                    path.pop()
                    stack.pop()

    def needs_transitively(self, step: str, target: str) -> bool:
        known = self._reach.get((step, target))
        if known is not None:
            return known
        seen = {step}
        queue = deque([step])
        found = False
        while queue and not found:
            for need, _ in self.drafts[queue.popleft()].needs:
                if need == target:
                    found = True
                    break
                if need in self.drafts and need not in seen:
                    seen.add(need)
                    queue.append(need)
        self._reach[(step, target)] = found
        return found

    def check_refs(self, template: _Template, draft: _Draft | None) -> None:
        for part in template.parts:
            if isinstance(part, Ref):
                problem = self.ref_problem(part, draft, template.scope)
                if problem is not None:
                    self.err(template.node, f"{part.text}: {problem}")

    def ref_problem(self, ref: Ref, draft: _Draft | None, scope: str) -> str | None:
        if ref.namespace == "params":
            if ref.name not in self.params:
                return f"no param {ref.name!r} is declared{suggest(ref.name, self.params)}"
            return None
        if draft is None:
            return "the pipeline's env may only use params"
        if ref.namespace == "matrix":
            if draft.matrix is None:
                return f"step {draft.name!r} has no matrix"
            keys = draft.matrix.keys
            if ref.name not in keys:
                return f"{ref.name!r} is not a key of the matrix of step {draft.name!r}" + suggest(
                    ref.name, keys
                )
            return None
        if ref.namespace == "env":
            names = set(self.env)
            if scope == "step":
                names.update(_as_dict(draft.fields.get("env")))
            if ref.name not in names:
                where = (
                    "the pipeline's env"
                    if scope == "step_env"
                    else "the pipeline's env or the step's env"
                )
                return f"{ref.name!r} is not set in {where}{suggest(ref.name, names)}"
            return None
        target = self.drafts.get(ref.step)
        if target is None:
            return f"no step {ref.step!r}{suggest(ref.step, self.drafts)}"
        if ref.step == draft.name:
            return "a step cannot read its own outputs"
        if not self.needs_transitively(draft.name, ref.step):
            return f"step {draft.name!r} does not need {ref.step!r} (add it to needs)"
        if target.matrix is not None:
            return f"step {ref.step!r} has a matrix, so which job's output is meant is ambiguous"
        outputs = _as_tuple(target.fields.get("outputs"))
        if ref.name not in outputs:
            return f"step {ref.step!r} declares no output {ref.name!r}{suggest(ref.name, outputs)}"
        return None

    def check_expansion(self) -> None:
        total = sum(len(d.matrix.combinations) if d.matrix else 1 for d in self.drafts.values())
        if total > self.limits.max_jobs:
            node = next(iter(self.drafts.values())).key
            self.err(
                node, f"the pipeline expands to {total} jobs (more than {self.limits.max_jobs})"
            )

    def step_spec(self, draft: _Draft) -> StepSpec:
        f = draft.fields
        spec = StepSpec(
            name=draft.name,
            needs=tuple(name for name, _ in draft.needs),
            matrix=draft.matrix,
            line=draft.key.line,
            column=draft.key.column,
            **{key: value for key, value in f.items() if value is not None},  # type: ignore[arg-type]
        )
        probe = JobSpec(
            command=spec.run or spec.command or "",
            arguments=spec.args,
            env={**self.env, **spec.env},
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
            self.err(draft.key, f"step {draft.name!r}: {exc.message}")
        return spec


def _kind(node: Node) -> str:
    if isinstance(node, Map):
        return "a mapping"
    if isinstance(node, Seq):
        return "a list"
    value = node.value
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"the boolean {node.text}"
    if isinstance(value, int | float):
        return f"the number {node.text}"
    return f"the string {shown(node.text)}"


def _cycle_text(cycle: list[str]) -> str:
    """The steps in the order they would run (each needs the one before it), cut if long."""
    names = cycle[::-1]
    if len(names) <= 12:
        return " -> ".join(names)
    return " -> ".join([*names[:6], "...", *names[-4:]]) + f" ({len(names) - 1} steps)"


def _combo_text(combo: Combination) -> str:
    return "{" + ", ".join(f"{key}: {value}" for key, value in combo) + "}"


def _as_dict(value: object) -> dict[str, str]:
    return value if isinstance(value, dict) else {}


def _as_tuple(value: object) -> tuple[str, ...]:
    return value if isinstance(value, tuple) else ()
