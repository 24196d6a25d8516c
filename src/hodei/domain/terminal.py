"""Make job output safe to print on a terminal, keeping its colours: the terminal view.

A job's output may carry escape sequences that rewrite the terminal of whoever reads the log:
cursor moves, clear screen, window titles and hyperlinks (OSC), device queries that make the
terminal type answers, and so on. The stored log keeps every byte as the job wrote it; what
the CLI prints by default is this view of those bytes, the same for `hodei logs` and
`hodei logs -f`, whatever the reads or events the bytes came in. One rule:

1. The bytes are decoded as UTF-8, incrementally. A byte that is not part of valid UTF-8 is
   shown as the visible escape `\\xNN`: an 8-bit C1 control such as the one-byte CSI 0x9b
   becomes the four characters `\\x9b` (not U+FFFD: the byte's value stays readable).
2. Kept as they are: newline, tab, and SGR sequences (`ESC [ 0-9;: m`, at most
   MAX_PARAMS parameter characters: colours and text styles). CR LF is shown as a newline.
3. Every other control becomes visible, inert text: C0 controls (BEL, backspace, a lone CR,
   ...), DEL and any other ESC as `\\xNN` (so what followed, `[2J` or `]0;title`, shows as
   plain text); C1 code points U+0080-U+009F decoded from valid UTF-8 as `\\u00NN`.

The result is valid UTF-8 with no byte in 0x00-0x1f but newline, tab and the ESC of an SGR
sequence, and no C1 control. `TerminalFilter` applies it to a stream fed in arbitrary chunks
and gives exactly `neutralise()` of the whole; it holds back only an incomplete UTF-8
sequence and the tail that could still become an SGR sequence or a CR LF (at most MAX_HELD
characters).
"""

from __future__ import annotations

import codecs
import re

MAX_PARAMS = 62  # a longer would-be SGR sequence is not one we keep
MAX_HELD = MAX_PARAMS + 2  # ESC, '[', the parameters
_SGR = rf"\x1b\[[0-9;:]{{0,{MAX_PARAMS}}}m"
# What the view changes or keeps: SGR (kept), CR LF, C0 but \t \n, DEL, C1, and the lone
# surrogates U+DC80-U+DCFF that `surrogateescape` decoding makes of the bytes not valid UTF-8.
_MATCH = re.compile(rf"({_SGR}|\r\n|[\x00-\x08\x0b-\x1f\x7f-\x9f\udc80-\udcff])")
_TAIL = re.compile(rf"(?:\x1b(?:\[[0-9;:]{{0,{MAX_PARAMS}}})?|\r)\Z")
_SHOWN = {chr(c): f"\\x{c:02x}" for c in [*range(0x00, 0x09), *range(0x0B, 0x20), 0x7F]}
_SHOWN.update({chr(c): f"\\u{c:04x}" for c in range(0x80, 0xA0)})
_SHOWN.update({chr(0xDC00 + b): f"\\x{b:02x}" for b in range(0x80, 0x100)})
_SHOWN["\r\n"] = "\n"


def _safe(text: str) -> bytes:
    """The view of text decoded with `surrogateescape`."""
    parts = _MATCH.split(text)
    shown = _SHOWN.get
    parts[1::2] = [shown(part, part) for part in parts[1::2]]  # an SGR is not in _SHOWN
    return "".join(parts).encode("utf-8")


def neutralise(data: bytes) -> bytes:
    """The terminal view of the whole of `data` (see the module docstring)."""
    return _safe(data.decode("utf-8", "surrogateescape"))


class TerminalFilter:
    """`neutralise` for a stream: feed() chunks, flush() at the end."""

    def __init__(self) -> None:
        self._decoder = codecs.getincrementaldecoder("utf-8")("surrogateescape")
        self._held = ""

    def feed(self, data: bytes) -> bytes:
        return self._emit(self._decoder.decode(data), final=False)

    def flush(self) -> bytes:
        return self._emit(self._decoder.decode(b"", final=True), final=True)

    def _emit(self, text: str, final: bool) -> bytes:
        buf = self._held + text
        cut = len(buf)
        if not final:
            tail = _TAIL.search(buf, max(0, len(buf) - MAX_HELD))
            cut = tail.start() if tail else cut
        self._held = buf[cut:]
        return _safe(buf[:cut])
