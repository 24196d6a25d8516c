"""Checks of the needs graph of the steps read: unknown needs, cycles, and reachability.

A cycle is reported with its steps named in the order they would run, at the needs entry
that closes it; reachability answers whether one step needs another, directly or not.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Mapping

from hodei.domain.pipelines.values import Draft, suggest
from hodei.domain.pipelines.yamltree import Node


def check_graph(drafts: Mapping[str, Draft], err: Callable[[Node, str], None]) -> None:
    """Report each needs entry naming no step, and each cycle in the needs."""
    for draft in drafts.values():
        for need, node in draft.needs:
            if need not in drafts:
                err(
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
                    err(node, f"cycle in needs: {_cycle_text(cycle)}")
            else:
                state[step] = 2
                del position[step]
                path.pop()
                stack.pop()


class Reachability:
    """Whether a step needs another through any chain of needs, each pair computed once."""

    def __init__(self, drafts: Mapping[str, Draft]) -> None:
        self._drafts = drafts
        self._known: dict[tuple[str, str], bool] = {}

    def needs_transitively(self, step: str, target: str) -> bool:
        known = self._known.get((step, target))
        if known is not None:
            return known
        drafts = self._drafts
        seen = {step}
        queue = deque([step])
        found = False
        while queue and not found:
            for need, _ in drafts[queue.popleft()].needs:
                if need == target:
                    found = True
                    break
                if need in drafts and need not in seen:
                    seen.add(need)
                    queue.append(need)
        self._known[(step, target)] = found
        return found


def _cycle_text(cycle: list[str]) -> str:
    """The steps in the order they would run (each needs the one before it), cut if long."""
    names = cycle[::-1]
    if len(names) <= 12:
        return " -> ".join(names)
    return " -> ".join([*names[:6], "...", *names[-4:]]) + f" ({len(names) - 1} steps)"
