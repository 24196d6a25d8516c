"""YAML text -> a tree of nodes that each know their line and column.

PyYAML's safe loader parses (its C parser when available); the node graph is composed here
from its events rather than by PyYAML's composer, so that every value keeps its mark and the
limits hold while the file is read: aliases and anchors are refused outright (no YAML bomb
can expand), and nesting depth and node count are bounded. Duplicate keys are kept (as
pairs) for the caller to report in its own words.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import yaml

from hodei.domain.pipelines.model import Limits

_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

_NULL = "tag:yaml.org,2002:null"
_BOOL = "tag:yaml.org,2002:bool"
_INT = "tag:yaml.org,2002:int"
_FLOAT = "tag:yaml.org,2002:float"
_STR = "tag:yaml.org,2002:str"
_ALLOWED_TAGS = {_NULL, _BOOL, _INT, _FLOAT, _STR}
_SEQ = "tag:yaml.org,2002:seq"
_MAP = "tag:yaml.org,2002:map"


@dataclass(slots=True)
class Scalar:
    value: object  # None, bool, int, float or str (a timestamp stays its text)
    text: str  # as written (after YAML's quoting and folding)
    line: int
    column: int


@dataclass(slots=True)
class Seq:
    items: list[Node]
    line: int
    column: int


@dataclass(slots=True)
class Map:
    pairs: list[tuple[Node, Node]]
    line: int
    column: int


Node = Scalar | Seq | Map


class TreeError(Exception):
    """The file cannot be read into a tree at all (syntax, alias, depth, size)."""

    def __init__(self, message: str, line: int = 1, column: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.column = column


def load_tree(text: str, limits: Limits) -> Node | None:
    """The single document of `text` as a tree (None for an empty file); raise TreeError."""
    loader = _LOADER(text)
    try:
        return _Composer(loader, limits).document()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        line, column = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
        raise TreeError(f"invalid YAML: {problem}", line, column) from None
    except yaml.YAMLError as exc:
        raise TreeError(f"invalid YAML: {exc}") from None
    except RecursionError:  # not reached with a sane max_depth; kept as a last guard
        raise TreeError("invalid YAML: nested too deeply") from None
    finally:
        loader.dispose()


class _Composer:
    def __init__(self, loader: Any, limits: Limits) -> None:
        self.loader = loader
        self.limits = limits
        self.nodes = 0

    def document(self) -> Node | None:
        loader = self.loader
        loader.get_event()  # StreamStart
        if loader.check_event(yaml.StreamEndEvent):
            return None
        loader.get_event()  # DocumentStart
        root = self.node(0)
        loader.get_event()  # DocumentEnd
        if not loader.check_event(yaml.StreamEndEvent):
            event = loader.get_event()
            line, column = _mark(event)
            raise TreeError("a pipeline file holds one YAML document only", line, column)
        return root

    def node(self, depth: int) -> Node:
        """The next node and everything in it: one flat loop over the events (no recursion)."""
        get_event = self.loader.get_event
        limits = self.limits
        stack: list[Seq | Map] = []
        keys: list[Node | None] = []  # per open mapping: its key waiting for a value
        while True:
            event = get_event()
            kind = type(event)
            if kind is yaml.SequenceEndEvent or kind is yaml.MappingEndEvent:
                done: Node = stack.pop()
                keys.pop()
                if not stack:
                    return done
                continue
            mark = event.start_mark
            line, column = mark.line + 1, mark.column + 1
            self.nodes += 1
            if self.nodes > limits.max_nodes:
                raise TreeError(f"too many YAML nodes (more than {limits.max_nodes})", line, column)
            if kind is yaml.AliasEvent:
                raise TreeError("YAML aliases (*name) are not allowed", line, column)
            if event.anchor is not None:
                raise TreeError("YAML anchors (&name) are not allowed", line, column)
            node: Node
            if kind is yaml.ScalarEvent:
                node = self.scalar(event, line, column)
            else:
                if len(stack) + depth >= limits.max_depth:
                    raise TreeError(
                        f"nested too deeply (more than {limits.max_depth} levels)", line, column
                    )
                is_seq = kind is yaml.SequenceStartEvent
                self.check_tag(event.tag, _SEQ if is_seq else _MAP, line, column)
                node = Seq([], line, column) if is_seq else Map([], line, column)
            if stack:
                top = stack[-1]
                if isinstance(top, Seq):
                    top.items.append(node)
                elif (key := keys[-1]) is None:
                    keys[-1] = node
                else:
                    top.pairs.append((key, node))
                    keys[-1] = None
            elif type(node) is Scalar:
                return node
            if not isinstance(node, Scalar):
                stack.append(node)
                keys.append(None)

    def check_tag(self, tag: str | None, expected: str, line: int, column: int) -> None:
        if tag is not None and tag not in ("!", expected):
            raise TreeError(f"YAML tag {tag[:40]!r} is not allowed", line, column)

    def scalar(self, event: Any, line: int, column: int) -> Scalar:
        text: str = event.value
        tag = event.tag
        if tag is None or tag == "!":
            if not event.implicit[0]:  # quoted or block: a string
                return Scalar(text, text, line, column)
            tag = self.loader.resolve(yaml.ScalarNode, text, event.implicit)
        elif tag not in _ALLOWED_TAGS:
            raise TreeError(f"YAML tag {tag[:40]!r} is not allowed", line, column)
        value: object = text
        if tag == _NULL:
            value = None
        elif tag in (_BOOL, _INT, _FLOAT):
            try:
                value = self.loader.construct_object(yaml.ScalarNode(tag, text))
            except (ValueError, KeyError, yaml.YAMLError):
                raise TreeError(
                    f"invalid {tag.rsplit(':', 1)[-1]} {text[:40]!r}", line, column
                ) from None
        return Scalar(value, text, line, column)


def _mark(event: Any) -> tuple[int, int]:  # for the rare events outside node()
    mark = event.start_mark
    return (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
