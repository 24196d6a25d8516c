"""GroupCommit (the PostgreSQL store's batching) without a database."""

from __future__ import annotations

import asyncio

from hodei.adapters.store.pg_batch import GroupCommit, Pending


class Recorder:
    """A batch runner that records what ran together and how many batches overlapped."""

    def __init__(self, delay: float = 0.01) -> None:
        self.batches: list[list[tuple[str, int]]] = []
        self.flying = 0
        self.most_flying = 0
        self.delay = delay

    async def run(self, batch: list[Pending]) -> None:
        self.flying += 1
        self.most_flying = max(self.most_flying, self.flying)
        self.batches.append([(p.key, p.request) for p in batch])
        await asyncio.sleep(self.delay)
        self.flying -= 1
        for p in batch:
            if not p.future.done():
                p.future.set_result(p.request)


async def test_a_lone_call_runs_at_once() -> None:
    rec = Recorder(delay=0)
    queue = GroupCommit(rec.run, max_batch=10)
    assert await asyncio.wait_for(queue.submit("a", 1), 1) == 1
    assert rec.batches == [[("a", 1)]] and queue.batches == 1


async def test_calls_made_together_share_batches_within_the_limits() -> None:
    rec = Recorder()
    queue = GroupCommit(rec.run, max_batch=50, max_in_flight=2)
    results = await asyncio.gather(*(queue.submit(f"k{i}", i) for i in range(400)))
    assert results == list(range(400))
    assert all(len(batch) <= 50 for batch in rec.batches)
    assert len(rec.batches) == 8 and rec.most_flying == 2


async def test_unique_keys_never_share_or_overlap_and_keep_their_order() -> None:
    rec = Recorder()
    queue = GroupCommit(rec.run, max_batch=100, max_in_flight=3, unique=True)
    calls = [queue.submit("same", i) for i in range(5)] + [queue.submit("other", 9)]
    assert await asyncio.gather(*calls) == [0, 1, 2, 3, 4, 9]
    same = [request for batch in rec.batches for key, request in batch if key == "same"]
    assert same == [0, 1, 2, 3, 4]
    assert all(len({key for key, _ in batch}) == len(batch) for batch in rec.batches)
    assert rec.batches[0] == [("same", 0), ("other", 9)]
    assert rec.most_flying == 1  # the later "same" calls each waited for the one before


async def test_a_cancelled_caller_does_not_disturb_the_batch() -> None:
    rec = Recorder()
    queue = GroupCommit(rec.run, max_batch=10)
    doomed = asyncio.ensure_future(queue.submit("a", 1))
    kept = queue.submit("b", 2)
    await asyncio.sleep(0)
    doomed.cancel()
    assert await kept == 2


async def test_a_failing_runner_fails_its_callers() -> None:
    async def broken(batch: list[Pending]) -> None:
        raise RuntimeError("bug")

    queue = GroupCommit(broken, max_batch=10)
    results = await asyncio.gather(
        queue.submit("a", 1), queue.submit("b", 2), return_exceptions=True
    )
    assert [str(r) for r in results] == ["bug", "bug"]
