"""Checks of the references in expressions: each names something its place may read.

The pipeline's env may read params only; a step may read params, its matrix keys, the env it
gets, and the outputs of a step without a matrix that it needs, directly or not.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

from hodei.domain.pipelines.expressions import Ref
from hodei.domain.pipelines.graph import Reachability
from hodei.domain.pipelines.model import Param
from hodei.domain.pipelines.values import Draft, Template, ValueReader

# A message, or one that ends with a suggestion: (message, word, the names it may be close to)
Problem = str | tuple[str, str, Collection[str]]


class References:
    """The names a file declares, against which its expressions are checked."""

    def __init__(
        self, params: Mapping[str, Param], env: Mapping[str, str], drafts: Mapping[str, Draft]
    ) -> None:
        self._params = params
        self._env = env
        self._drafts = drafts
        self._reach = Reachability(
            drafts,
            (
                part.step
                for draft in drafts.values()
                for template in draft.templates
                for part in template.parts
                if isinstance(part, Ref) and part.namespace == "steps"
            ),
        )

    def check(self, template: Template, draft: Draft | None, r: ValueReader) -> None:
        """Report each reference of `template` (in `draft`, or the pipeline's env) that fails."""
        for part in template.parts:
            if isinstance(part, Ref):
                problem = self.problem(part, draft, template.scope)
                if isinstance(problem, str):
                    r.err(template.node, f"{part.text}: {problem}")
                elif problem is not None:
                    head, word, candidates = problem
                    r.hint(template.node, f"{part.text}: {head}", word, candidates)

    def problem(self, ref: Ref, draft: Draft | None, scope: str) -> Problem | None:
        """What is wrong with `ref`: a message, or one to end with a suggestion (the message,
        the word and the names it may be close to)."""
        if ref.namespace == "params":
            if ref.name not in self._params:
                return f"no param {ref.name!r} is declared", ref.name, self._params
            return None
        if draft is None:
            return "the pipeline's env may only use params"
        if ref.namespace == "matrix":
            if draft.matrix is None:
                return f"step {draft.name!r} has no matrix"
            keys = draft.matrix.keys
            if ref.name not in keys:
                head = f"{ref.name!r} is not a key of the matrix of step {draft.name!r}"
                return head, ref.name, keys
            return None
        if ref.namespace == "env":
            step_env = _as_dict(draft.fields.get("env")) if scope == "step" else {}
            if ref.name not in self._env and ref.name not in step_env:
                names = set(self._env)
                names.update(step_env)
                where = (
                    "the pipeline's env"
                    if scope == "step_env"
                    else "the pipeline's env or the step's env"
                )
                return f"{ref.name!r} is not set in {where}", ref.name, names
            return None
        target = self._drafts.get(ref.step)
        if target is None:
            return f"no step {ref.step!r}", ref.step, self._drafts
        if ref.step == draft.name:
            return "a step cannot read its own outputs"
        if not self._reach.needs_transitively(draft.name, ref.step):
            return f"step {draft.name!r} does not need {ref.step!r} (add it to needs)"
        if target.matrix is not None:
            return f"step {ref.step!r} has a matrix, so which job's output is meant is ambiguous"
        outputs = _as_tuple(target.fields.get("outputs"))
        if ref.name not in outputs:
            return f"step {ref.step!r} declares no output {ref.name!r}", ref.name, outputs
        return None


def _as_dict(value: object) -> dict[str, str]:
    return value if isinstance(value, dict) else {}


def _as_tuple(value: object) -> tuple[str, ...]:
    return value if isinstance(value, tuple) else ()
