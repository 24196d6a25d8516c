"""TerminalFilter: colours kept, every sequence that could rewrite a terminal made inert."""

from __future__ import annotations

import random
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hodei.domain.terminal import MAX_HELD, MAX_PARAMS, TerminalFilter, neutralise


@pytest.mark.parametrize(
    "data",
    [
        b"\x1b[31mred\x1b[0m plain",
        b"\x1b[1;38;5;208mbold orange\x1b[m",
        b"\x1b[38:2::10:20:30mtruecolor\x1b[39m",
        b"tabs\tand\nnewlines\n",
        "unicode: é ✓ 日本 👍\n".encode(),
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
        ("c1 csi \u009b2J".encode(), b"c1 csi \\u009b2J"),  # valid UTF-8 C1: \u00NN
        (b"8-bit csi \x9b2J", b"8-bit csi \\x9b2J"),  # a byte not valid UTF-8: \xNN
        (b"\xff\xfe not utf-8 \xc3", b"\\xff\\xfe not utf-8 \\xc3"),
        (b"\xed\xa0\x80", b"\\xed\\xa0\\x80"),  # an encoded surrogate is not UTF-8
        (b"progress 50%\rdone\r\n", b"progress 50%\\x0ddone\n"),  # lone CR shown, CR LF: LF
        (b"\x1b\x9b31m", b"\\x1b\\x9b31m"),
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
              b"\xc2", b"\n", b"\x07", "é".encode(), b"\r", b"\x9b", b"\xe2\x9b"]  # fmt: skip
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
    assert f.feed(b"ok\r") == b"ok"  # a CR LF?
    assert f.feed(b"\n\xe2\x9c") == b"\n"  # an incomplete UTF-8 sequence
    assert f.feed(b"\x93") == "✓".encode()
    assert f.feed(b"\xe2") == b""
    assert f.flush() == b"\\xe2"


def test_sgr_parameters_are_bounded() -> None:
    longest = b"\x1b[" + b"1" * MAX_PARAMS + b"m"
    assert neutralise(longest) == longest
    assert neutralise(b"\x1b[" + b"1" * (MAX_PARAMS + 1) + b"m").startswith(b"\\x1b[")


# --- properties, on arbitrary bytes --------------------------------------------------------

_PIECES = [b"\x1b[31m", b"\x1b[0;1m", b"\x1b[", b"\x1b", b"\x9b", b"\xc2\x9b", b"\xc2",
           b"\r", b"\n", b"\r\n", b"\t", b"\x00", b"\x7f", b"\xe2\x9c\x93", b"\xf0\x9f",
           b"\xed\xa0\x80", b"m", b"2J", b"31"]  # fmt: skip
_DATA = st.lists(st.one_of(st.binary(max_size=12), st.sampled_from(_PIECES)), max_size=40).map(
    b"".join
)
_SGR = re.compile(rb"\x1b\[[0-9;:]*m")


def _cuts(data: bytes, sizes: list[int]) -> list[bytes]:
    pieces, pos = [], 0
    for size in sizes:
        pieces.append(data[pos : pos + size])
        pos += size
    return [*pieces, data[pos:]]


@settings(max_examples=300, deadline=None)
@given(_DATA)
def test_the_view_holds_no_live_control(data: bytes) -> None:
    shown = neutralise(data)
    text = shown.decode("utf-8")  # valid UTF-8, always
    bare = _SGR.sub(b"", shown)
    assert not [b for b in bare if b < 0x20 and b not in (0x09, 0x0A)]
    assert 0x7F not in bare
    assert not [ch for ch in text if 0x80 <= ord(ch) <= 0x9F]  # valid UTF-8 and no C1: no
    # 8-bit C1 byte either, but as a continuation byte of a printable character


@settings(max_examples=300, deadline=None)
@given(_DATA, st.lists(st.integers(min_value=0, max_value=9), max_size=20))
def test_any_cutting_of_the_stream_gives_the_same_view(data: bytes, sizes: list[int]) -> None:
    f = TerminalFilter()
    out = b"".join(f.feed(piece) for piece in _cuts(data, sizes)) + f.flush()
    assert out == neutralise(data)


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cc", "Cs"))))
def test_printable_text_is_unchanged(text: str) -> None:
    data = text.encode("utf-8")
    assert neutralise(data) == data
    assert neutralise(b"\x1b[1;31m" + data + b"\t\n\x1b[m") == b"\x1b[1;31m" + data + b"\t\n\x1b[m"
