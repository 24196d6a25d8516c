"""Expressions in step strings: `${{ matrix.python }}` and friends, substituted, never evaluated.

Grammar (whitespace inside the braces is optional):

    template   := ( literal | "$${{" | expression )*
    expression := "${{" reference "}}"
    reference  := "matrix." KEY
                | "params." NAME
                | "env." NAME
                | "steps." STEP ".outputs." NAME
    KEY        := [A-Za-z_][A-Za-z0-9_-]{0,63}
    NAME       := [A-Za-z_][A-Za-z0-9_]{0,127}
    STEP       := [A-Za-z0-9][A-Za-z0-9_-]{0,63}

`$${{` is a literal `${{`. Anything else between `${{` and `}}` is an error, found when the
file is parsed; rendering only looks values up.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from hodei.errors import ValidationError

OPEN = "${{"
_OPEN_OR_ESCAPE = re.compile(r"\$?\$\{\{")
_REFERENCE = re.compile(
    r"\s*(?:"
    r"(?P<ns>matrix)\.(?P<key>[A-Za-z_][A-Za-z0-9_-]{0,63})"
    r"|(?P<ns2>params|env)\.(?P<name>[A-Za-z_][A-Za-z0-9_]{0,127})"
    r"|steps\.(?P<step>[A-Za-z0-9][A-Za-z0-9_-]{0,63})\.outputs\."
    r"(?P<output>[A-Za-z_][A-Za-z0-9_]{0,127})"
    r")\s*"
)
NAMESPACES = ("matrix", "params", "env", "steps")


@dataclass(frozen=True, slots=True)
class Ref:
    """One `${{ ... }}`: the namespace, the name in it, and for `steps` the step."""

    namespace: str  # matrix, params, env or steps
    name: str
    step: str = ""
    text: str = ""  # as written, for messages

    def __str__(self) -> str:
        if self.namespace == "steps":
            return f"steps.{self.step}.outputs.{self.name}"
        return f"{self.namespace}.{self.name}"


Part = str | Ref


class ExpressionError(ValidationError):
    pass


def has_expressions(text: str) -> bool:
    return OPEN in text


def parse_template(text: str) -> tuple[Part, ...]:
    """`text` as literal strings and references; raise ExpressionError for a bad expression."""
    if OPEN not in text:
        return (text,) if text else ()
    parts: list[Part] = []
    literal: list[str] = []
    pos = 0
    while (found := _OPEN_OR_ESCAPE.search(text, pos)) is not None:
        literal.append(text[pos : found.start()])
        if found.group().startswith("$$"):
            literal.append(OPEN)
            pos = found.end()
            continue
        end = text.find("}}", found.end())
        if end < 0:
            raise ExpressionError(f"unclosed expression {_cut(text[found.start() :])} (no '}}}}')")
        inner = text[found.end() : end]
        parts_text = text[found.start() : end + 2]
        parts.append("".join(literal))
        literal.clear()
        parts.append(_reference(inner, parts_text))
        pos = end + 2
    literal.append(text[pos:])
    parts.append("".join(literal))
    return tuple(part for part in parts if part != "")


def _reference(inner: str, written: str) -> Ref:
    m = _REFERENCE.fullmatch(inner)
    if m is None:
        head = inner.strip().split(".", 1)[0]
        if head and head not in NAMESPACES:
            raise ExpressionError(
                f"unknown namespace {head[:40]!r} in {_cut(written)} "
                "(use matrix.KEY, params.NAME, env.NAME or steps.STEP.outputs.NAME)"
            )
        raise ExpressionError(
            f"invalid expression {_cut(written)} "
            "(use matrix.KEY, params.NAME, env.NAME or steps.STEP.outputs.NAME)"
        )
    if m.group("ns"):
        return Ref("matrix", m.group("key"), text=written)
    if m.group("ns2"):
        return Ref(m.group("ns2"), m.group("name"), text=written)
    return Ref("steps", m.group("output"), step=m.group("step"), text=written)


def _cut(text: str, limit: int = 60) -> str:
    return repr(text[:limit]) + ("..." if len(text) > limit else "")


@dataclass(frozen=True, slots=True)
class Context:
    """The values a step's expressions may see."""

    matrix: Mapping[str, str]
    params: Mapping[str, str]
    env: Mapping[str, str]
    outputs: Mapping[str, Mapping[str, str]]  # step name -> its outputs


def render(text: str, context: Context) -> str:
    """`text` with every expression replaced by its value.

    A step output that its step did not write renders as the empty string; any other value
    that is missing raises ValidationError (the file was validated, so the caller passed the
    wrong params or matrix).
    """
    if OPEN not in text:
        return text
    out: list[str] = []
    for part in parse_template(text):
        out.append(part if isinstance(part, str) else _value(part, context))
    return "".join(out)


def _value(ref: Ref, context: Context) -> str:
    if ref.namespace == "steps":
        return context.outputs.get(ref.step, {}).get(ref.name, "")
    values = {"matrix": context.matrix, "params": context.params, "env": context.env}[ref.namespace]
    try:
        return values[ref.name]
    except KeyError:
        raise ValidationError(f"no value for {ref}") from None
