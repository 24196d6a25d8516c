"""The typed reads the pipeline reader is built on, and the grammar of names in a file.

`ValueReader` turns tree nodes into strings, numbers, flags, lists and maps, reporting each
problem at its node and going on, so one pass finds every problem. `Draft` is a step while it
is being read; `Template` is a string holding references, checked once the whole file is read.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field

from hodei.domain.jobs import artifact_path_problem, shown
from hodei.domain.pipelines.expressions import OPEN, ExpressionError, Part, Ref, parse_template
from hodei.domain.pipelines.model import Issue, Limits, Matrix
from hodei.domain.pipelines.yamltree import Map, Node, Scalar, Seq
from hodei.errors import ValidationError

STEP_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
PIPELINE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
ENV_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
LABEL_KEY = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,62}")
PARAM_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
OUTPUT_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,127}")
MAX_DESCRIPTION = 4096
_FIELD_SETS: dict[tuple[str, ...], frozenset[str]] = {}
_CUTOFF = 0.6  # how close a suggestion must be


def suggest(word: str, candidates: Iterable[str]) -> str:
    """' (did you mean 'x'?)' when one candidate is close to `word`, else ''.

    The candidate `difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)` picks, found
    in a long list without scoring most of it: candidates are tried from the best bound on
    their score down, and the search ends when none left could beat the best found.
    """
    names = [str(c) for c in candidates]
    if len(names) <= 16:
        close = difflib.get_close_matches(word, names, n=1, cutoff=_CUTOFF)
        return f" (did you mean {close[0]!r}?)" if close else ""
    matcher = difflib.SequenceMatcher()
    matcher.set_seq2(word)
    bounded: list[tuple[float, str]] = []
    for name in names:
        matcher.set_seq1(name)
        bound = matcher.real_quick_ratio()  # from the lengths: >= quick_ratio() >= ratio()
        if bound >= _CUTOFF:
            bounded.append((bound, name))
    bounded.sort(reverse=True)
    best: tuple[float, str] | None = None  # (score, name): the highest wins, as in difflib
    for bound, name in bounded:
        if best is not None and (bound, name) <= best:
            break
        matcher.set_seq1(name)
        quick = matcher.quick_ratio()
        if quick < _CUTOFF or (best is not None and (quick, name) <= best):
            continue
        score = matcher.ratio()
        if score >= _CUTOFF and (best is None or (score, name) > best):
            best = (score, name)
    return f" (did you mean {best[1]!r}?)" if best is not None else ""


def check_artifact_path(path: str) -> str | None:
    """Why `path` is not an acceptable artifact path, or None: relative, no '..', no NUL."""
    return artifact_path_problem(path)


@dataclass(frozen=True, slots=True)
class Hinted:
    """A problem whose message ends with a suggestion, looked for only if the problem is shown.

    Looking through every step or param name for each of thousands of problems made a bad file
    of 1,000 steps take seconds; at most `max_errors` problems are shown.
    """

    line: int
    column: int
    head: str  # the message before the suggestion
    word: str
    candidates: Collection[str]

    def issue(self) -> Issue:
        return Issue(self.line, self.column, self.head + suggest(self.word, self.candidates))


def settle(found: Iterable[Issue | Hinted], max_errors: int) -> tuple[Issue, ...]:
    """Every problem in file order (line, column, message), cut after `max_errors` with a
    count of the rest."""
    entries = list(found)
    if max_errors > 0 and any(isinstance(entry, Hinted) for entry in entries):
        issues = _first_issues(entries, max_errors)
    else:
        issues = sorted(_complete(entry) for entry in entries)
    if len(entries) > max_errors:
        last = issues[max_errors - 1]
        issues = [
            *issues[:max_errors],
            Issue(last.line, last.column, f"... and {len(entries) - max_errors} more"),
        ]
    return tuple(issues)


def _first_issues(entries: list[Issue | Hinted], count: int) -> list[Issue]:
    """At least the first `count` issues in order (all if there are fewer), completing only
    those hinted problems that may be among them.

    Sorted by position and the text before the suggestion, entries are in the order of their
    whole messages, except within a run whose texts all start with the first one's text:
    such a run is completed and sorted as a whole.
    """
    entries.sort(key=_sort_key)
    out: list[Issue] = []
    start = 0
    while start < len(entries) and len(out) < count:
        line, column, head = _sort_key(entries[start])
        end = start + 1
        while end < len(entries):
            other_line, other_column, other_head = _sort_key(entries[end])
            if (other_line, other_column) != (line, column) or not other_head.startswith(head):
                break
            end += 1
        out.extend(sorted(_complete(entry) for entry in entries[start:end]))
        start = end
    return out


def _sort_key(entry: Issue | Hinted) -> tuple[int, int, str]:
    if isinstance(entry, Hinted):
        return entry.line, entry.column, entry.head
    return entry.line, entry.column, entry.message


def _complete(entry: Issue | Hinted) -> Issue:
    return entry.issue() if isinstance(entry, Hinted) else entry


@dataclass
class Template:
    node: Node
    parts: tuple[Part, ...]
    scope: str  # "pipeline_env" | "step_env" | "step"


@dataclass(slots=True)
class Draft:
    name: str
    key: Node
    fields: dict[str, object] = field(default_factory=dict)
    needs: list[tuple[str, Node]] = field(default_factory=list)
    templates: list[Template] = field(default_factory=list)
    matrix: Matrix | None = None


class ValueReader:
    """The issues found so far and the typed reads that add to them."""

    def __init__(self, limits: Limits) -> None:
        self.limits = limits
        self.issues: list[Issue | Hinted] = []
        self.env_templates: list[Template] = []

    def err(self, node: Node, message: str) -> None:
        self.issues.append(Issue(node.line, node.column, message))

    def hint(self, node: Node, head: str, word: str, candidates: Collection[str]) -> None:
        """Report `head` followed by the suggestion of `candidates` close to `word`, if any."""
        self.issues.append(Hinted(node.line, node.column, head, word, candidates))

    def mapping(self, node: Node, what: str) -> list[tuple[str, Node, Node]] | None:
        """(key, key node, value node) of a mapping; duplicates and bad keys reported."""
        if not isinstance(node, Map):
            self.err(node, f"{what} must be a mapping, not {kind_of(node)}")
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
        known = _FIELD_SETS.get(allowed)
        if known is None:  # a set answers `in` without comparing against every field name
            known = _FIELD_SETS[allowed] = frozenset(allowed)
        if type(node) is Map:  # the usual case in one pass: every key a known field, once
            for key_node, value in node.pairs:
                if type(key_node) is not Scalar or key_node.value is None:
                    break
                key = key_node.text
                if key not in known or key in out:
                    break
                out[key] = (key_node, value)
            else:
                return out
            out = {}  # read again, reporting each problem
        for key, key_node, value in self.mapping(node, what) or ():
            if key not in known:
                self.err(key_node, f"unknown field {shown(key)} in {what}{suggest(key, allowed)}")
            else:
                out[key] = (key_node, value)
        return out

    def text(self, node: Node, what: str, *, empty_ok: bool = False) -> str | None:
        """A scalar as written (so 3.10 stays '3.10' and yes stays 'yes')."""
        if not isinstance(node, Scalar):
            self.err(node, f"{what} must be a string, not {kind_of(node)}")
            return None
        if node.value is None or (not empty_ok and not node.text.strip()):
            self.err(node, f"{what} must not be empty")
            return None
        if "\x00" in node.text:
            self.err(node, f"{what} must not contain NUL")
            return None
        return node.text

    def template(self, node: Node, what: str, draft: Draft | None, scope: str) -> str | None:
        value = self.text(node, what)
        if value is None or OPEN not in value:  # no expression, nothing to check later
            return value
        try:
            parts = parse_template(value)
        except ExpressionError as exc:
            self.err(node, f"{what}: {exc.message}")
            return None
        if any(isinstance(part, Ref) for part in parts):
            target = draft.templates if draft is not None else self.env_templates
            target.append(Template(node, parts, scope))
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
            self.err(node, f"{what} must be a whole number, not {kind_of(node)}")
            return None
        if not low <= node.value <= high:
            self.err(node, f"{what} must be between {low} and {high}")
            return None
        return node.value

    def boolean(self, node: Node, what: str) -> bool | None:
        if not isinstance(node, Scalar) or not isinstance(node.value, bool):
            self.err(node, f"{what} must be true or false, not {kind_of(node)}")
            return None
        return node.value

    def items(self, node: Node, what: str) -> list[Node]:
        """A sequence's items (a lone scalar counts as a one-item list)."""
        if isinstance(node, Seq):
            return node.items
        if isinstance(node, Scalar) and node.value is not None:
            return [node]
        self.err(node, f"{what} must be a list, not {kind_of(node)}")
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
            if type(item) is Scalar and item.value is not None:  # the usual case, at once
                name = item.text
                if name not in seen and pattern.fullmatch(name):
                    seen.add(name)
                    out.append((name, item))
                    continue
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
        self, node: Node, what: str, key_re: re.Pattern[str], draft: Draft | None, scope: str
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

    def measured(
        self, node: Node, what: str, parser: Callable[[str], float], high: float, shown_high: str
    ) -> float | None:
        if not isinstance(node, Scalar) or node.value is None or isinstance(node.value, bool):
            self.err(
                node,
                f"{what} must be a number or a string such as 512M or 10m, not {kind_of(node)}",
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


def kind_of(node: Node) -> str:
    """How a message names what was written instead of what was expected."""
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
