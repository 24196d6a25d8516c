"""The top level of a pipeline file (name, description, params, env, steps) and the checks' order.

Each part is read first; then the needs graph, the expressions and the job count are checked
against everything read, and only a file without issues becomes a `Pipeline`.
"""

from __future__ import annotations

from hodei.domain.jobs import shown
from hodei.domain.pipelines.graph import check_graph
from hodei.domain.pipelines.model import Issue, Limits, Param, ParamType, Pipeline
from hodei.domain.pipelines.references import References
from hodei.domain.pipelines.steps import read_steps, step_spec
from hodei.domain.pipelines.values import (
    ENV_KEY,
    PARAM_NAME,
    PIPELINE_NAME,
    Draft,
    ValueReader,
    suggest,
)
from hodei.domain.pipelines.yamltree import Map, Node, Scalar

PIPELINE_FIELDS = ("name", "description", "env", "params", "steps")
PARAM_FIELDS = ("type", "default", "options", "description")


class PipelineReader(ValueReader):
    """One file's reading: what it declares so far and the issues found."""

    def __init__(self, limits: Limits) -> None:
        super().__init__(limits)
        self.env: dict[str, str] = {}
        self.params: dict[str, Param] = {}
        self.drafts: dict[str, Draft] = {}

    def pipeline(self, root: Node | None) -> Pipeline | None:
        """The pipeline in the tree `root`, or None if any issue was found."""
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
            self.drafts = read_steps(self, top["steps"][1])
        check_graph(self.drafts, self)
        references = References(self.params, self.env, self.drafts)
        for template in self.env_templates:
            references.check(template, None, self)
        for draft in self.drafts.values():
            for template in draft.templates:
                references.check(template, draft, self)
        self.check_expansion()
        if self.issues:
            return None
        steps = {draft.name: step_spec(self, draft, self.env) for draft in self.drafts.values()}
        return Pipeline(
            name=name, steps=steps, env=self.env, params=self.params, description=description
        )

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
        out: dict[str, None] = {}  # in order; a set answers "listed twice" for a long list
        for item in self.items(node, f"the options of {what}"):
            value = self.literal(item, f"an option of {what}")
            if value is not None and value in out:
                self.err(item, f"option {shown(value)} of {what} is listed twice")
            elif value is not None:
                out[value] = None
        return list(out)

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
            self.hint(node, f"the default of {what} must be one of its options", value, options)
            return None
        return value

    def check_expansion(self) -> None:
        total = sum(len(d.matrix.combinations) if d.matrix else 1 for d in self.drafts.values())
        if total > self.limits.max_jobs:
            node = next(iter(self.drafts.values())).key
            self.err(
                node, f"the pipeline expands to {total} jobs (more than {self.limits.max_jobs})"
            )
