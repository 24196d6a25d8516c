"""TerminalFilter: colours kept, every sequence that could rewrite a terminal made inert."""

from __future__ import annotations

import random

import pytest

from hodei.domain.terminal import MAX_HELD, TerminalFilter, neutralise


@pytest.mark.parametrize(
    "data",
    [
        b"\x1b[31mred\x1b[0m plain",
        b"\x1b[1;38;5;208mbold orange\x1b[m",
        b"\x1b[38:2::10:20:30mtruecolor\x1b[39m",
        b"tabs\tand\r\nnewlines\rprogress 50%\n",
        "unicode: é ✓ 日本 👍\n".encode(),
        b"\xff\xfe not utf-8 \xc3",  # invalid bytes pass as they are
    ],
)
def test_safe_output_is_unchanged(data: bytes) -> None:
    assert neutralise(data) == data


@pytest.mark.parametrize(
    ("data", "shown"),
    [
        (b"a\x1b[2Jb", b"a\\x1b[2Jb"),  # clear screen
        (b"\x1b[H\x1b[10;5H", b"\\x1b[H\\x1b[10;5H"),  # cursor moves
        (b"\x1b[1A\x1b[2K", b"\\x1b[1A\\x1b[2K"),  # up one line, erase it
        (b"\x1b]0;pwned\x07", b"\\x1b]0;pwned\\x07"),  # OSC window title
        (
            b"\x1b]8;;http://evil\x1b\\click\x1b]8;;\x1b\\",
            b"\\x1b]8;;http://evil\\x1b\\click\\x1b]8;;\\x1b\\",
        ),  # OSC 8 hyperlink
        (b"\x1bc", b"\\x1bc"),  # full reset
        (b"\x1b[6n", b"\\x1b[6n"),  # cursor position query (the terminal would answer)
        (b"\x1bP+q\x1b\\", b"\\x1bP+q\\x1b\\"),  # DCS
        (b"ring\x07 back\x08\x08 del\x7f", b"ring\\x07 back\\x08\\x08 del\\x7f"),
        (b"nul\x00 vt\x0b ff\x0c", b"nul\\x00 vt\\x0b ff\\x0c"),
        ("c1 csi \u009b2J".encode(), b"c1 csi \\u009b2J"),
        (b"\x1b[31;2Jred", b"\\x1b[31;2Jred"),  # SGR-looking prefix, other final byte
    ],
)
def test_unsafe_sequences_become_visible_text(data: bytes, shown: bytes) -> None:
    assert neutralise(data) == shown
    assert b"\x1b" not in neutralise(data)  # no live ESC left


@pytest.mark.parametrize("seed", range(60))
def test_streaming_equals_whole(seed: int) -> None:
    rng = random.Random(seed)
    pieces = [b"\x1b[31m", b"\x1b[2J", b"txt", b"\x1b", b"[", b"1;2", b"m", "\u009b".encode(),
              b"\xc2", b"\n", b"\x07", "é".encode()]  # fmt: skip
    data = b"".join(rng.choice(pieces) for _ in range(rng.randint(0, 40)))
    f = TerminalFilter()
    out, pos = [], 0
    while pos < len(data):
        size = rng.randint(1, 7)
        out.append(f.feed(data[pos : pos + size]))
        pos += size
    out.append(f.flush())
    assert b"".join(out) == neutralise(data)


def test_holds_back_only_a_possible_sgr_start() -> None:
    f = TerminalFilter()
    assert f.feed(b"abc\x1b[3") == b"abc"
    assert f.feed(b"1mred") == b"\x1b[31mred"
    assert f.feed(b"\x1b") == b""
    assert f.feed(b"]0;t") == b"\\x1b]0;t"
    assert f.feed(b"\x1b[" + b"1" * (MAX_HELD + 10)).startswith(b"\\x1b[111")
    assert f.flush() == b""
