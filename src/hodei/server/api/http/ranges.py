"""HTTP byte ranges of a log (RFC 9110 section 14): the one range a `Range` header asks for, and
the bytes of a log of a given size it names."""

from __future__ import annotations

import re
from dataclasses import dataclass

from hodei.errors import ValidationError

_SPEC = re.compile(r"([0-9]*)[ \t]*-[ \t]*([0-9]*)")
_FORMS = "Range must be bytes=FIRST-LAST, bytes=FIRST- or bytes=-COUNT"
_MAX_DIGITS = 19  # any position past MAX_INT is past the end of every log


@dataclass(frozen=True, slots=True)
class ByteRange:
    first: int | None  # None: the last `last` bytes (a suffix range, `bytes=-N`)
    last: int | None  # inclusive; None: to the end (`bytes=N-`)

    def within(self, size: int) -> tuple[int, int] | None:
        """(first, last) of the bytes it names in a log of `size` bytes (inclusive), or None
        when none of them exists yet (the answer is then 416 with `bytes */size`)."""
        if self.first is None:
            assert self.last is not None
            if self.last == 0 or size == 0:
                return None
            return max(0, size - self.last), size - 1
        if self.first >= size:
            return None
        return self.first, size - 1 if self.last is None else min(self.last, size - 1)


def parse_range(header: str) -> ByteRange | None:
    """The byte range of a `Range` header; None for a unit other than bytes (such a header is
    ignored, as RFC 9110 says). ValidationError for a malformed range or several of them: a
    log is served one range at a time (multipart answers would only cost clients work)."""
    unit, sep, spec = header.strip().partition("=")
    unit = unit.strip()
    if not sep or not unit:
        raise ValidationError(_FORMS)
    if unit.lower() != "bytes":
        return None
    if "," in spec:
        raise ValidationError("Range: one byte range at a time")
    match = _SPEC.fullmatch(spec.strip())
    if match is None or not (match.group(1) or match.group(2)):
        raise ValidationError(_FORMS)
    first, last = (_position(text) for text in match.groups())
    if first is not None and last is not None and last < first:
        raise ValidationError("Range: the last byte comes before the first")
    return ByteRange(first, last)


def _position(text: str) -> int | None:
    if not text:
        return None
    digits = text.lstrip("0") or "0"
    return int(digits) if len(digits) <= _MAX_DIGITS else 10**_MAX_DIGITS


def content_range(span: tuple[int, int] | None, size: int) -> str:
    if span is None:
        return f"bytes */{size}"
    return f"bytes {span[0]}-{span[1]}/{size}"
