"""The line index of a log (server.core.logindex): checked against a plain reference on many
logs, whole and fed in pieces, with small blocks (and once with the real 64 KiB)."""

from __future__ import annotations

import random
from typing import Any

import pytest

from hodei.server.core import logindex
from hodei.server.core.logindex import LineIndex, LineIndexes


def reference(data: bytes, block: int) -> dict[str, Any]:
    starts = [0] + [i + 1 for i, byte in enumerate(data) if byte == 0x0A]
    lines = data.count(b"\n") + (1 if data and not data.endswith(b"\n") else 0)
    entries = []
    for b in range(-(-len(data) // block)):
        later = [(q, n) for n, q in enumerate(starts) if q >= b * block]
        entries.append(list(later[0]) if later else [len(data), lines])
    return {"size": len(data), "lines": lines, "block": block, "starts": entries}


def random_log(rng: random.Random, size: int) -> bytes:
    kind = rng.choice(["short", "long", "mixed", "none", "only"])
    if kind == "none":
        return b"x" * size
    if kind == "only":
        return b"\n" * size
    out = bytearray()
    while len(out) < size:
        width = rng.randint(0, 5) if kind == "short" else rng.randint(0, 200)
        if kind == "mixed" and rng.random() < 0.1:
            width = rng.randint(50, 400)
        out += b"a" * width + b"\n"
    return bytes(out[:size])


@pytest.fixture
def small_blocks(monkeypatch: pytest.MonkeyPatch) -> int:
    monkeypatch.setattr(logindex, "BLOCK", 16)
    return 16


def test_empty_log() -> None:
    assert LineIndex().view() == {"size": 0, "lines": 0, "block": 65536, "starts": []}


def test_one_line_and_one_newline(small_blocks: int) -> None:
    index = LineIndex()
    index.extend(b"abc")
    assert index.view()["starts"] == [[0, 0]] and index.lines == 1
    index.extend(b"\n")
    assert index.view() == {"size": 4, "lines": 1, "block": 16, "starts": [[0, 0]]}


def test_a_line_longer_than_blocks_gives_them_the_next_line(small_blocks: int) -> None:
    index = LineIndex()
    index.extend(b"x" * 40)  # blocks 0..2; no line starts after 0 yet
    assert index.view()["starts"] == [[0, 0], [40, 1], [40, 1]]
    index.extend(b"\nnext")
    assert index.view()["starts"] == [[0, 0], [41, 1], [41, 1]]


@pytest.mark.parametrize("seed", range(200))
def test_matches_the_reference_whole_and_in_pieces(small_blocks: int, seed: int) -> None:
    rng = random.Random(seed)
    data = random_log(rng, rng.randint(0, 600))
    whole = LineIndex()
    whole.extend(data)
    assert whole.view() == reference(data, small_blocks)
    pieces = LineIndex()
    cut = 0
    while cut < len(data):
        step = rng.choice([1, 2, 15, 16, 17, rng.randint(1, 100)])
        pieces.extend(data[cut : cut + step])
        cut += step
        assert pieces.view() == reference(data[:cut], small_blocks)


def test_real_blocks_on_a_few_megabytes() -> None:
    rng = random.Random(7)
    lines = [b"y" * rng.randint(0, 300) for _ in range(30_000)]
    lines[5000] = b"z" * 300_000  # spans several blocks
    data = b"\n".join(lines)
    index = LineIndex()
    for start in range(0, len(data), 1 << 20):
        index.extend(data[start : start + (1 << 20)])
    view = index.view()
    assert view == reference(data, 65536)
    offset, line = view["starts"][40]
    assert data[offset:].split(b"\n", 1)[0] == lines[line]  # jump to a line, then read it


async def test_the_cache_extends_an_index_and_forgets_the_oldest() -> None:
    log = bytearray(b"one\ntwo\n")
    reads: list[tuple[int, int]] = []

    def read(offset: int, limit: int) -> bytes:
        reads.append((offset, limit))
        return bytes(log[offset : offset + limit])

    cache = LineIndexes(limit=2)
    assert (await cache.index("j", 1, len(log), read))["lines"] == 2
    log += b"three"
    view = await cache.index("j", 1, len(log), read)
    assert view["lines"] == 3 and view["size"] == 13
    assert reads == [(0, 8), (8, 5)]  # only the new bytes the second time
    assert await cache.index("j", 1, len(log), read) == view and len(reads) == 2
    await cache.index("k", 1, 0, read)
    await cache.index("m", 1, 0, read)
    assert len(cache) == 2
    await cache.index("j", 1, len(log), read)
    assert reads[-1] == (0, 13)  # forgotten: scanned again
