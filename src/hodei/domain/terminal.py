"""Make job output safe to print on a terminal, keeping its colours.

A job's output may carry escape sequences that rewrite the terminal of whoever reads the log:
cursor moves, clear screen, window titles and hyperlinks (OSC), device queries that make the
terminal type answers, and so on. `TerminalFilter` keeps only SGR sequences (`ESC [ 0-9;: m`:
colours and text styles) and the controls text needs (newline, tab, carriage return); every
other ESC, C0 control (BEL, backspace, ...), DEL and C1 control (U+0080-U+009F, e.g. the
one-character CSI) is written as a visible, inert escape such as `\\x1b`, so what followed it
(`[2J`, `]0;title`) shows as plain text. Bytes that are not valid UTF-8 pass as they are.

It works on a stream fed in arbitrary chunks: only the tail that could still become an SGR
sequence (at most MAX_HELD bytes) or a C1 control is held back.
"""

from __future__ import annotations

import re

MAX_HELD = 64  # a longer would-be SGR sequence is not one we keep
_UNSAFE = re.compile(
    rb"\x1b(?:\[[0-9;:]*m)?"  # SGR (kept), or any other ESC (neutralised)
    rb"|[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]"  # C0 controls but \t \n \r; DEL
    rb"|\xc2[\x80-\x9f]"  # C1 controls, UTF-8 encoded
)
_TAIL = re.compile(rb"(?:\x1b(?:\[[0-9;:]*)?|\xc2)\Z")


def _visible(match: re.Match[bytes]) -> bytes:
    seq = match.group()
    if len(seq) > 1 and seq[0] == 0x1B:
        return seq  # a complete SGR sequence
    if seq[0] == 0xC2:
        return b"\\u%04x" % seq[1]
    return b"\\x%02x" % seq[0]


def neutralise(data: bytes) -> bytes:
    """The whole of `data`, made safe (see the module docstring)."""
    return _UNSAFE.sub(_visible, data)


class TerminalFilter:
    """`neutralise` for a stream: feed() chunks, flush() at the end."""

    def __init__(self) -> None:
        self._held = b""

    def feed(self, data: bytes) -> bytes:
        buf = self._held + data
        tail = _TAIL.search(buf, max(0, len(buf) - MAX_HELD))
        cut = tail.start() if tail else len(buf)
        self._held = buf[cut:]
        return neutralise(buf[:cut])

    def flush(self) -> bytes:
        held, self._held = self._held, b""
        return neutralise(held)
