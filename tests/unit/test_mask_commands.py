"""::add-mask:: lines: taken out of the output whatever the chunking; nothing else held."""

from __future__ import annotations

import random

import pytest

from hodei.domain.mask_commands import ADD_MASK, MAX_COMMAND_LINE, AddMask, MaskCommandFilter


def run(chunks: list[bytes]) -> list[bytes | AddMask]:
    f = MaskCommandFilter()
    items: list[bytes | AddMask] = []
    for chunk in chunks:
        items += f.feed(chunk)
    items += f.flush()
    # Join neighbouring byte pieces, so chunking does not change the shape.
    merged: list[bytes | AddMask] = []
    for item in items:
        if isinstance(item, bytes) and merged and isinstance(merged[-1], bytes):
            merged[-1] += item
        elif item != b"":
            merged.append(item)
    return merged


DATA = b"before\n::add-mask::s3cret value\r\nmid ::add-mask::not-a-command\n::add-mask::two\nend"
EXPECTED: list[bytes | AddMask] = [
    b"before\n",
    AddMask(b"s3cret value"),
    b"mid ::add-mask::not-a-command\n",
    AddMask(b"two"),
    b"end",
]


def test_command_lines_are_taken_out() -> None:
    assert run([DATA]) == EXPECTED


@pytest.mark.parametrize("seed", range(40))
def test_any_chunking_gives_the_same_result(seed: int) -> None:
    rng = random.Random(seed)
    chunks, pos = [], 0
    while pos < len(DATA):
        size = rng.choice([1, 1, 2, 5, 13])
        chunks.append(DATA[pos : pos + size])
        pos += size
    assert run(chunks) == EXPECTED


def test_holds_back_only_a_possible_command_prefix() -> None:
    f = MaskCommandFilter()
    assert f.feed(b"hello") == [b"hello"]  # not at a line start... but a line start: 'h' differs
    assert f.feed(b" world\n::add") == [b" world\n"]  # '::add' could start a command
    assert f.feed(b"ition\n") == [b"::add", b"ition\n"]  # it did not: released at once
    assert f.feed(b"x") == [b"x"]


def test_first_line_and_unterminated_command() -> None:
    assert run([b"::add-mask::abcd"]) == [AddMask(b"abcd")]
    assert run([b"::add-mas"]) == [b"::add-mas"]  # the stream ended: released as output


def test_overlong_command_line_is_dropped_with_a_note_and_memory_stays_bounded() -> None:
    f = MaskCommandFilter()
    out = f.feed(ADD_MASK)
    for _ in range(MAX_COMMAND_LINE // 4096 + 3):
        out += f.feed(b"v" * 4096)
    assert len(f._held) <= MAX_COMMAND_LINE
    out += f.feed(b"vvv\nnext line\n")
    assert out == [b"[hodei: ::add-mask:: line longer than 64 KiB ignored]\n", b"next line\n"]
