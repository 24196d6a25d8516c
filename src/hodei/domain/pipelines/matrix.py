"""A step's matrix: its axes, exclude and include entries, and the combinations they leave.

The combinations are expanded here, while reading, so an exclude entry that matches nothing,
an include entry already present and a matrix over the job limits are reported at the file's
line like every other problem.
"""

from __future__ import annotations

import itertools
import re

from hodei.domain.jobs import shown
from hodei.domain.pipelines.model import Combination, Matrix
from hodei.domain.pipelines.values import ValueReader
from hodei.domain.pipelines.yamltree import Node, Seq

MATRIX_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,63}")
MATRIX_VALUE = re.compile(r"[^\x00-\x1f\x7f,=\[\]]{1,64}")
MATRIX_RESERVED = ("exclude", "include", "max_parallel")
_RAW_MATRIX_CAP = 65_536  # combinations computed before exclusions at most


def read_matrix(r: ValueReader, node: Node, what: str) -> Matrix | None:
    entries = r.mapping(node, f"the matrix of {what}")
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
            max_parallel = r.integer(
                value, f"max_parallel of {what}", 1, r.limits.max_jobs_per_step
            )
            broken |= max_parallel is None
        elif not MATRIX_KEY.fullmatch(key):
            r.err(key_node, f"invalid matrix key {shown(key)} in {what}")
            broken = True
        else:
            values = _axis_values(r, value, f"matrix key {key!r} of {what}")
            broken |= values is None
            if values is not None:
                axes.append((key, values))
    keys = [key for key, _ in axes]
    exclude = (
        _combos(r, exclude_node, "exclude", what, keys, dict(axes))
        if exclude_node is not None
        else []
    )
    include = (
        _combos(r, include_node, "include", what, keys, None) if include_node is not None else []
    )
    if broken or exclude is None or include is None:
        return None
    if not axes and not include:
        r.err(node, f"the matrix of {what} has no keys")
        return None
    size = 1
    for _, values in axes:
        size *= len(values)
    if size > _RAW_MATRIX_CAP:
        r.err(node, f"the matrix of {what} is too large ({size} combinations)")
        return None
    combos: list[Combination] = []
    if axes:
        names = [key for key, _ in axes]
        for values in itertools.product(*(vals for _, vals in axes)):
            combos.append(tuple(zip(names, values, strict=True)))
    kept = combos
    used = [False] * len(exclude)
    if exclude and axes:
        excluded, used = _excluded(axes, exclude, size)
        flags = f"{excluded:0{size}b}"[::-1]  # flags[i] == "1": the i-th combination is out
        kept = [combo for combo, flag in zip(combos, flags, strict=True) if flag == "0"]
    for i, rule in enumerate(exclude):
        if not used[i]:
            r.err(
                exclude_node or node,
                f"exclude entry {_combo_text(rule)} of {what} matches no combination",
            )
    present = set(kept)
    for combo in include:
        if combo in present:
            r.err(
                include_node or node,
                f"include entry {_combo_text(combo)} of {what} is already in the matrix",
            )
        else:
            present.add(combo)
            kept.append(combo)
    if not kept:
        r.err(node, f"the matrix of {what} has no combinations left")
        return None
    if len(kept) > r.limits.max_jobs_per_step:
        r.err(
            node,
            f"the matrix of {what} expands to {len(kept)} jobs "
            f"(more than {r.limits.max_jobs_per_step})",
        )
        return None
    return Matrix(tuple(axes), tuple(exclude), tuple(include), max_parallel, tuple(kept))


def _excluded(
    axes: list[tuple[str, tuple[str, ...]]], exclude: list[Combination], size: int
) -> tuple[int, list[bool]]:
    """The combinations the exclude entries match (bit i: the i-th of the axes' product, the
    last axis varying fastest) and whether each entry matches any.

    As bitsets, an entry costs an operation on one `size`-bit number per key it sets, not a
    pass over every combination (many entries over a large matrix took minutes).
    """
    everything = (1 << size) - 1
    places: dict[str, tuple[int, int, dict[str, int]]] = {}  # key -> stride, bits, index
    stride = 1
    for key, values in reversed(axes):
        period = stride * len(values)
        # The combinations with the key's first value: `stride` bits on, every `period` bits;
        # those with its i-th value are these shifted by i * stride.
        first = ((1 << stride) - 1) * (everything // ((1 << period) - 1))
        places[key] = (stride, first, {value: i for i, value in enumerate(values)})
        stride = period
    excluded = 0
    used: list[bool] = []
    for rule in exclude:
        mask = everything
        for key, value in rule:  # every key an axis and every value one of its values
            step, first, index = places[key]
            mask &= first << (index[value] * step)
        used.append(mask != 0)
        excluded |= mask
    return excluded, used


def _axis_values(r: ValueReader, node: Node, what: str) -> tuple[str, ...] | None:
    if not isinstance(node, Seq) or not node.items:
        r.err(node, f"{what} must be a non-empty list of values")
        return None
    out: dict[str, None] = {}  # in order; a set answers "listed twice" for a long list
    for item in node.items:
        value = _value(r, item, f"a value of {what}")
        if value is None:
            return None
        if value in out:
            r.err(item, f"{shown(value)} is listed twice in {what}")
            return None
        out[value] = None
    return tuple(out)


def _value(r: ValueReader, node: Node, what: str) -> str | None:
    value = r.literal(node, what)
    if value is not None and not MATRIX_VALUE.fullmatch(value):
        r.err(
            node,
            f"{what} must be 1-64 characters without control characters, ',', '=', '[' or ']'",
        )
        return None
    return value


def _combos(
    r: ValueReader,
    node: Node,
    kind: str,
    what: str,
    keys: list[str],
    allowed: dict[str, tuple[str, ...]] | None,
) -> list[Combination] | None:
    if not isinstance(node, Seq):
        r.err(node, f"{kind} of the matrix of {what} must be a list of mappings")
        return None
    out: list[Combination] = []
    ok = True
    first_keys: list[str] | None = None
    key_set = set(keys)  # sets answer membership for a long list of keys or values
    allowed_sets = {key: set(values) for key, values in (allowed or {}).items()}
    for entry in node.items:
        pairs = r.mapping(entry, f"an {kind} entry of {what}")
        if pairs is None:
            ok = False
            continue
        combo: list[tuple[str, str]] = []
        for key, key_node, value in pairs:
            if keys and key not in key_set:
                head = f"{kind}: {shown(key)} is not a key of the matrix of {what}"
                r.hint(key_node, head, key, keys)
                ok = False
                continue
            if not keys and not MATRIX_KEY.fullmatch(key):
                r.err(key_node, f"invalid matrix key {shown(key)} in {what}")
                ok = False
                continue
            text = _value(r, value, f"{kind} value {key!r} of {what}")
            if text is None:
                ok = False
            elif allowed is not None and text not in allowed_sets.get(key, ()):
                r.err(
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
                r.err(entry, f"an exclude entry of {what} is empty")
                ok = False
            out.append(tuple(combo))
            continue
        order = keys or first_keys or [key for key, _ in combo]
        first_keys = order
        if sorted(key for key, _ in combo) != sorted(order):
            r.err(entry, f"an include entry of {what} must set exactly {', '.join(order)}")
            ok = False
            continue
        as_dict = dict(combo)
        out.append(tuple((key, as_dict[key]) for key in order))
    return out if ok else None


def _combo_text(combo: Combination) -> str:
    return "{" + ", ".join(f"{key}: {value}" for key, value in combo) + "}"
