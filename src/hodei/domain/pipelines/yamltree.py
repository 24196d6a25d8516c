"""YAML text -> a tree of nodes that each know their line and column.

PyYAML's safe loader parses (its C parser when available); the node graph is composed here
from its events rather than by PyYAML's composer, so that every value keeps its mark and the
limits hold while the file is read: aliases and anchors are refused outright (no YAML bomb
can expand), and nesting depth and node count are bounded. Duplicate keys are kept (as
pairs) for the caller to report in its own words.
"""

from __future__ import annotations

from collections.abc import Container
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


class _Anything:
    """Holds every first character: each plain scalar goes through the resolver."""

    def __contains__(self, item: object) -> bool:
        return True


_ANY = _Anything()


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
        return _compose(loader, limits)
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


def _compose(loader: Any, limits: Limits) -> Node | None:
    get_event = loader.get_event
    get_event()  # StreamStart
    event = get_event()
    if type(event) is yaml.StreamEndEvent:
        return None
    root = _Composer(loader, limits).node()  # after DocumentStart
    get_event()  # DocumentEnd
    event = get_event()
    if type(event) is not yaml.StreamEndEvent:
        line, column = _mark(event)
        raise TreeError("a pipeline file holds one YAML document only", line, column)
    return root


class _Composer:
    def __init__(self, loader: Any, limits: Limits) -> None:
        self.loader = loader
        self.limits = limits
        # A plain scalar's type depends on its text alone (unless path resolvers are set),
        # so each text is resolved once; one starting with a character that no implicit
        # resolver looks at is a string without asking (most of a file).
        resolvers = loader.yaml_implicit_resolvers
        self.by_text = None not in resolvers and not loader.yaml_path_resolvers
        self.typed_first: Container[str] = frozenset(resolvers) if self.by_text else _ANY
        self.plain: dict[str, object] = {}  # text -> value, for plain scalars

    def node(self) -> Node:
        """The next node and everything in it: one flat loop over the events (no recursion).

        Each open collection gathers its items in a flat list (a mapping's keys and values
        alternate) that becomes its items or pairs when it closes.
        """
        get_event = self.loader.get_event
        max_nodes = self.limits.max_nodes
        max_depth = self.limits.max_depth
        typed_first = self.typed_first
        plain = self.plain
        scalar_event = yaml.ScalarEvent
        sequence_start = yaml.SequenceStartEvent
        ends = (yaml.SequenceEndEvent, yaml.MappingEndEvent)
        open_nodes: list[Seq | Map] = []
        open_items: list[list[Node]] = []
        items: list[Node] | None = None  # the innermost open collection's
        nodes = 0
        while True:
            event = get_event()
            kind = type(event)
            if kind is not scalar_event and kind in ends:
                done = open_nodes.pop()
                if type(done) is Map:
                    assert items is not None
                    pairs = iter(items)
                    done.pairs = list(zip(pairs, pairs, strict=False))
                if not open_nodes:
                    return done
                items = open_items.pop()
                continue
            mark = event.start_mark
            nodes += 1
            if nodes > max_nodes:
                raise TreeError(
                    f"too many YAML nodes (more than {max_nodes})", mark.line + 1, mark.column + 1
                )
            if kind is scalar_event:
                if event.anchor is not None:
                    raise TreeError(
                        "YAML anchors (&name) are not allowed", mark.line + 1, mark.column + 1
                    )
                text: str = event.value
                if event.tag is not None:
                    node: Node = self.scalar(event, mark.line + 1, mark.column + 1)
                elif not event.implicit[0] or text[:1] not in typed_first:
                    node = Scalar(text, text, mark.line + 1, mark.column + 1)
                elif text in plain:
                    node = Scalar(plain[text], text, mark.line + 1, mark.column + 1)
                else:
                    node = self.scalar(event, mark.line + 1, mark.column + 1)
                    if self.by_text:
                        plain[text] = node.value
                if items is None:
                    return node
                items.append(node)
                continue
            line, column = mark.line + 1, mark.column + 1
            if kind is yaml.AliasEvent:
                raise TreeError("YAML aliases (*name) are not allowed", line, column)
            if event.anchor is not None:
                raise TreeError("YAML anchors (&name) are not allowed", line, column)
            if len(open_nodes) >= max_depth:
                raise TreeError(f"nested too deeply (more than {max_depth} levels)", line, column)
            tag = event.tag
            inner: list[Node] = []
            if kind is sequence_start:
                if tag is not None and tag != "!" and tag != _SEQ:
                    raise TreeError(f"YAML tag {tag[:40]!r} is not allowed", line, column)
                collection: Seq | Map = Seq(inner, line, column)
            else:
                if tag is not None and tag != "!" and tag != _MAP:
                    raise TreeError(f"YAML tag {tag[:40]!r} is not allowed", line, column)
                collection = Map([], line, column)  # its pairs are made from `inner` at its end
            if items is not None:
                items.append(collection)
                open_items.append(items)
            open_nodes.append(collection)
            items = inner

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
