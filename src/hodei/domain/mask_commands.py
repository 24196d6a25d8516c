"""`::add-mask::VALUE` lines: how a job registers more values to mask while it runs.

As with GitHub Actions' workflow command, a line of the job's output that starts with
`::add-mask::` is never shown: the rest of the line (without its `\\r\\n` or `\\n`) becomes one
more secret, masked from then on (and in what the masker still holds back). The filter holds
back only what could still become such a line: at the start of a line, the bytes that are a
prefix of `::add-mask::`; everything else passes at once. A command line longer than
MAX_COMMAND_LINE is dropped whole, with a visible note, so memory stays bounded.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum, auto

ADD_MASK = b"::add-mask::"
MAX_COMMAND_LINE = 64 * 1024
TOO_LONG_NOTE = b"[hodei: ::add-mask:: line longer than 64 KiB ignored]\n"


@dataclass(frozen=True, slots=True)
class AddMask:
    """A job asked for `value` to be masked."""

    value: bytes


class _State(Enum):
    LINE_START = auto()  # _held is a (possibly empty) proper prefix of ADD_MASK
    MID_LINE = auto()  # not a command line: bytes pass through up to the next newline
    COMMAND = auto()  # after ADD_MASK: _held collects the value up to the newline
    SKIPPING = auto()  # a command line too long: dropped up to the next newline


class MaskCommandFilter:
    """Splits a byte stream into output (bytes) and AddMask commands, in stream order."""

    def __init__(self) -> None:
        self._state = _State.LINE_START
        self._held = bytearray()

    def feed(self, data: bytes) -> list[bytes | AddMask]:
        out: list[bytes | AddMask] = []
        pos = 0
        while pos < len(data):
            pos = self._step(data, pos, out)
        return out

    def flush(self) -> list[bytes | AddMask]:
        """The stream ended: release a held prefix, or take an unterminated command."""
        held, state = bytes(self._held), self._state
        self._held.clear()
        self._state = _State.LINE_START
        if state is _State.LINE_START and held:
            return [held]
        if state is _State.COMMAND:
            return [AddMask(held.rstrip(b"\r"))]
        return []

    def _step(self, data: bytes, pos: int, out: list[bytes | AddMask]) -> int:
        """Consume from data[pos:] in the current state; return the new position."""
        newline = data.find(b"\n", pos)
        if self._state is _State.MID_LINE:
            if newline < 0:
                out.append(data[pos:])
                return len(data)
            out.append(data[pos : newline + 1])
            self._state = _State.LINE_START
            return newline + 1
        if self._state is _State.LINE_START:
            return self._line_start(data, pos, out)
        end = len(data) if newline < 0 else newline
        if self._state is _State.COMMAND:
            self._held += data[pos:end]
            if newline >= 0:
                out.append(AddMask(bytes(self._held).rstrip(b"\r")))
                self._held.clear()
            elif len(self._held) > MAX_COMMAND_LINE:
                self._held.clear()
                self._state = _State.SKIPPING
                out.append(TOO_LONG_NOTE)
                return end
        if newline >= 0:
            self._state = _State.LINE_START
            return newline + 1
        return end

    def _line_start(self, data: bytes, pos: int, out: list[bytes | AddMask]) -> int:
        need = ADD_MASK[len(self._held) :]
        take = data[pos : pos + len(need)]
        if need.startswith(take):
            self._held += take
            if len(self._held) == len(ADD_MASK):
                self._held.clear()
                self._state = _State.COMMAND
            return pos + len(take)
        if self._held:
            out.append(bytes(self._held))
            self._held.clear()
        self._state = _State.MID_LINE
        return pos
