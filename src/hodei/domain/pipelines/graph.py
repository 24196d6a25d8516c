"""Checks of the needs graph of the steps read: unknown needs, cycles, and reachability.

A cycle is reported with its steps named in the order they would run, at the needs entry
that closes it; reachability answers whether one step needs another, directly or not. Both
are linear in steps and needs (reachability: times one machine word per 64 steps asked about).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping

from hodei.domain.pipelines.values import Draft, ValueReader


def check_graph(drafts: Mapping[str, Draft], r: ValueReader) -> None:
    """Report each needs entry naming no step, and each cycle in the needs."""
    position = {name: index for index, name in enumerate(drafts)}
    forward = False  # a step needs itself or one written after it
    for index, draft in enumerate(drafts.values()):
        for need, node in draft.needs:
            at = position.get(need)
            if at is None:
                r.hint(node, f"step {draft.name!r} needs unknown step {need!r}", need, drafts)
            elif at >= index:
                forward = True
    if not forward:  # every step needs only steps written before it: no cycle can close
        return
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
                    r.err(node, f"cycle in needs: {_cycle_text(path, position[need], need)}")
            else:
                state[step] = 2
                del position[step]
                path.pop()
                stack.pop()


class Reachability:
    """Whether a step needs another through any chain of needs.

    The first question computes, for every step, which of `targets` (the steps asked about)
    it reaches, as a bitset: one pass over the steps and their needs in an order where each
    step comes after those it needs (file order when it is one, else the strongly connected
    components of the needs, so that a cycle answers as walking the needs would).
    """

    def __init__(self, drafts: Mapping[str, Draft], targets: Iterable[str]) -> None:
        self._drafts = drafts
        self._bits = {name: 1 << i for i, name in enumerate(dict.fromkeys(targets))}
        self._reach: dict[str, int] | None = None

    def needs_transitively(self, step: str, target: str) -> bool:
        if self._reach is None:
            self._reach = self._in_file_order() or self._by_components()
        bit = self._bits.get(target)
        if bit is None:  # not announced: walk the needs (not the reader's case)
            return self._walk(step, target)
        return bool(self._reach.get(step, 0) & bit)

    def _in_file_order(self) -> dict[str, int] | None:
        """Each step's reach, or None if a step needs itself or one written after it."""
        drafts, bits = self._drafts, self._bits
        reach: dict[str, int] = {}
        for name, draft in drafts.items():
            mask = 0
            for need, _ in draft.needs:
                known = reach.get(need)
                if known is not None:
                    mask |= known | bits.get(need, 0)
                elif need in drafts:
                    return None
            reach[name] = mask
        return reach

    def _by_components(self) -> dict[str, int]:
        """Each step's reach through Tarjan's strongly connected components (iteratively):
        a component is done after every component it needs, and every step of a cyclic one
        reaches all of its steps."""
        drafts, bits = self._drafts, self._bits
        reach: dict[str, int] = {}
        index: dict[str, int] = {}
        low: dict[str, int] = {}
        stack: list[str] = []
        on_stack: set[str] = set()
        for root in drafts:
            if root in index:
                continue
            index[root] = low[root] = len(index)
            stack.append(root)
            on_stack.add(root)
            work = [(root, iter(drafts[root].needs))]
            while work:
                step, needs = work[-1]
                for need, _ in needs:
                    if need not in drafts:
                        continue
                    if need not in index:
                        index[need] = low[need] = len(index)
                        stack.append(need)
                        on_stack.add(need)
                        work.append((need, iter(drafts[need].needs)))
                        break
                    if need in on_stack:
                        low[step] = min(low[step], index[need])
                else:
                    work.pop()
                    if work:
                        parent = work[-1][0]
                        low[parent] = min(low[parent], low[step])
                    if low[step] == index[step]:
                        members = []
                        while True:
                            member = stack.pop()
                            on_stack.discard(member)
                            members.append(member)
                            if member == step:
                                break
                        inside = set(members)
                        mask = 0
                        cyclic = len(members) > 1
                        for member in members:
                            for need, _ in drafts[member].needs:
                                if need in inside:
                                    cyclic = True
                                elif need in drafts:
                                    mask |= reach[need] | bits.get(need, 0)
                        if cyclic:
                            for member in members:
                                mask |= bits.get(member, 0)
                        for member in members:
                            reach[member] = mask
        return reach

    def _walk(self, step: str, target: str) -> bool:
        drafts = self._drafts
        seen = {step}
        queue = deque([step])
        while queue:
            for need, _ in drafts[queue.popleft()].needs:
                if need == target:
                    return True
                if need in drafts and need not in seen:
                    seen.add(need)
                    queue.append(need)
        return False


def _cycle_text(path: list[str], start: int, need: str) -> str:
    """The cycle `path[start:]` closed by `need`: its steps in the order they would run (each
    needs the one before it), cut if long. Only the names shown are taken from the path, so
    that many cycles through a long path cost little."""
    count = len(path) - start + 1
    if count <= 12:
        return " -> ".join([need, *path[start:][::-1]])
    shown = [need, *path[-1:-6:-1], "...", *path[start : start + 4][::-1]]
    return " -> ".join(shown) + f" ({count - 1} steps)"
