"""Group commit for the PostgreSQL store: calls that arrive together go to the database as one
statement, which is what makes a burst of submissions or state changes cheap (one round trip
and one commit for hundreds of rows instead of one each)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any


@dataclass(slots=True)
class Pending:
    """One call waiting for its batch: `key` is the job id, `request` what the batch needs."""

    key: str
    request: Any
    future: asyncio.Future[Any]


class GroupCommit:
    """Queues calls and runs them in batches through `run`, which must resolve every future of
    its batch and never raise.

    A call waits at most one turn of the event loop when a batch slot is free, so a lone call
    is not delayed; while `max_in_flight` batches are running, calls gather for the next one.
    With `unique`, a batch (and everything in flight) holds at most one call per key, in the
    order they came: two changes of one job never share a statement or overtake each other.
    """

    def __init__(
        self,
        run: Callable[[list[Pending]], Awaitable[None]],
        *,
        max_batch: int,
        max_in_flight: int = 4,
        unique: bool = False,
        on_commit: Callable[[float], None] | None = None,
    ) -> None:
        self.batches = 0  # statements run so far; each may carry many calls
        self._on_commit = on_commit  # told each batch's seconds (its statement and commit)
        self._run = run
        self._max_batch = max(1, max_batch)
        self._max_in_flight = max(1, max_in_flight)
        self._unique = unique
        self._waiting: list[Pending] = []
        self._busy_keys: set[str] = set()
        self._flying: set[asyncio.Task[None]] = set()
        self._pump_scheduled = False

    def submit(self, key: str, request: Any) -> asyncio.Future[Any]:
        loop = asyncio.get_running_loop()
        pending = Pending(key, request, loop.create_future())
        self._waiting.append(pending)
        if not self._pump_scheduled:  # calls made in this turn of the loop share a batch
            self._pump_scheduled = True
            loop.call_soon(self._pump)
        return pending.future

    def _pump(self) -> None:
        self._pump_scheduled = False
        while self._waiting and len(self._flying) < self._max_in_flight:
            batch = self._take()
            if not batch:  # every waiting key is in flight: wait for those batches
                return
            self.batches += 1
            task = asyncio.get_running_loop().create_task(self._fly(batch))
            self._flying.add(task)

    def _take(self) -> list[Pending]:
        batch: list[Pending] = []
        rest: list[Pending] = []
        keys: set[str] = set()
        for pending in self._waiting:
            taken = pending.key in keys or pending.key in self._busy_keys
            if len(batch) >= self._max_batch or (self._unique and taken):
                rest.append(pending)
            else:
                batch.append(pending)
                keys.add(pending.key)
        self._waiting = rest
        if self._unique:
            self._busy_keys |= keys
        return batch

    async def _fly(self, batch: list[Pending]) -> None:
        started = time.perf_counter()
        try:
            await self._run(batch)
            if self._on_commit is not None:
                self._on_commit(time.perf_counter() - started)
        except Exception as exc:  # a bug in `run`: its callers get the error, not a hang
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(exc)
        finally:
            for pending in batch:  # only if `run` was cut short (the loop is torn down)
                if not pending.future.done():
                    pending.future.cancel()
            if self._unique:
                self._busy_keys -= {pending.key for pending in batch}
            task = asyncio.current_task()
            if task is not None:
                self._flying.discard(task)
            self._pump()


def fail_batch(batch: list[Pending], error: BaseException) -> None:
    """Fail every call of `batch` still waiting (a cancelled caller waits no more)."""
    for pending in batch:
        if not pending.future.done():
            pending.future.set_exception(error)
