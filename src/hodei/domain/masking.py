"""Boundary-safe secret masking for byte streams.

`StreamMasker` replaces every occurrence of every secret with a mask, even when a secret is split
across any number of `feed()` calls. The output is exactly what a single leftmost-longest,
non-overlapping search over the whole stream would give (`mask_all`), with the least possible
latency: only the longest suffix of the pending bytes that is a proper prefix of some secret is
held back; everything before it is released at once.

Besides each secret itself, the masker also hides forms in which it commonly leaks:
- each line (>= MIN_SECRET_LENGTH characters) of a multi-line secret, since output may be
  reflowed;
- JSON-escaped, URL-encoded (%20 and + for spaces) and shell-escaped forms (backslash-escaped as
  `printf %q` writes it, double-quoted, single-quoted as `shlex.quote` and `${v@Q}` write it),
  when they differ from the secret;
- base64 and URL-safe base64 forms (at the three possible byte alignments) for secrets of
  MIN_BASE64_SECRET bytes or more.

Secrets shorter than MIN_SECRET_LENGTH characters are refused where they are stored: masking
them would blank out ordinary output and still tell little about them.
"""

from __future__ import annotations

import base64
import bisect
import json
import re
import shlex
from collections.abc import Iterable
from urllib.parse import quote, quote_plus

from ahocorasick_rs import BytesAhoCorasick, MatchKind

MIN_SECRET_LENGTH = 4  # shorter secrets (and lines of one) would mask too much ordinary output
MIN_LINE = MIN_SECRET_LENGTH
MIN_BASE64_SECRET = 8  # base64 fragments of shorter secrets are too short to be specific
SHORT_SECRET_MESSAGE = (
    f"a secret must be at least {MIN_SECRET_LENGTH} characters long: a shorter value cannot be "
    "masked in job output without hiding ordinary text"
)
_SHELL_PLAIN = re.compile(r"[^A-Za-z0-9_./,:=@%+^-]")  # what `printf %q` leaves alone


def secret_too_short(value: bytes | str) -> bool:
    """True when a value is too short to be masked safely (see MIN_SECRET_LENGTH)."""
    return len(value) < MIN_SECRET_LENGTH


def _to_bytes(secret: bytes | str) -> bytes:
    return secret.encode() if isinstance(secret, str) else bytes(secret)


_URLSAFE = bytes.maketrans(b"+/", b"-_")


def _base64_forms(secret: bytes) -> set[bytes]:
    """The base64 characters that depend only on the secret, for each of the 3 byte offsets."""
    forms: set[bytes] = set()
    for offset in range(3):
        encoded = base64.b64encode(b"\0" * offset + secret)
        first = -(-8 * offset // 6)  # ceil: first character made only of secret bits
        last = 8 * (offset + len(secret)) // 6  # characters before this are complete
        form = encoded[first:last]
        forms.add(form)
        forms.add(form.translate(_URLSAFE))
    return forms


def _text_forms(text: str) -> set[str]:
    """JSON-, URL- and shell-escaped forms of a text secret."""
    return {
        json.dumps(text)[1:-1],
        json.dumps(text, ensure_ascii=False)[1:-1],
        quote(text, safe=""),
        quote(text),  # "/" kept
        quote_plus(text),
        _SHELL_PLAIN.sub(lambda m: "\\" + m.group(), text),  # printf %q, for printable text
        re.sub(r'(["\\$`])', r"\\\1", text),  # inside "double quotes"
        shlex.quote(text),  # 'it'"'"'s'
        text.replace("'", "'\\''"),  # inside ${v@Q} / 'single quotes': 'it'\''s'
    }


def expand_secret(secret: bytes | str) -> set[bytes]:
    """All byte patterns masked for one secret (empty for an empty secret)."""
    raw = _to_bytes(secret)
    if not raw:
        return set()
    patterns = {raw}
    if b"\n" in raw:
        patterns.update(
            line for line in raw.replace(b"\r", b"").split(b"\n") if len(line) >= MIN_LINE
        )
    try:
        text = raw.decode()
    except UnicodeDecodeError:
        text = None  # binary secret: no text encodings to derive
    if text is not None:
        patterns.update(form.encode() for form in _text_forms(text))
    if len(raw) >= MIN_BASE64_SECRET:
        patterns.update(_base64_forms(raw))
    return {p for p in patterns if p}


class StreamMasker:
    """Masks secrets in a stream fed in arbitrary chunks; see the module docstring."""

    def __init__(self, secrets: Iterable[bytes | str] = (), mask: bytes = b"***") -> None:
        self._mask = mask
        self._patterns: set[bytes] = set()
        self._sorted: list[bytes] = []
        self._matcher: BytesAhoCorasick | None = None
        self._first_bytes: re.Pattern[bytes] | None = None
        self._longest = 0
        self._held = b""
        for secret in secrets:
            self._patterns |= expand_secret(secret)
        self._rebuild()

    @property
    def patterns(self) -> frozenset[bytes]:
        return frozenset(self._patterns)

    def add(self, secret: bytes | str) -> None:
        """Register another secret; it applies to bytes not yet released."""
        new = expand_secret(secret) - self._patterns
        if new:
            self._patterns |= new
            self._rebuild()

    def feed(self, data: bytes) -> bytes:
        """Return the masked bytes that are safe to release now."""
        if self._matcher is None:
            return data
        out, self._held = self._process(self._held + data)
        return out

    def mask(self, data: bytes) -> bytes:
        """Mask a whole buffer apart from the stream (e.g. an error message)."""
        return mask_with(self._matcher, data, self._mask)

    def flush(self) -> bytes:
        """Release everything held back (the stream ended)."""
        held, self._held = self._held, b""
        return mask_with(self._matcher, held, self._mask)

    def _rebuild(self) -> None:
        if not self._patterns:
            return
        self._sorted = sorted(self._patterns)
        self._longest = max(map(len, self._sorted))
        self._matcher = BytesAhoCorasick(self._sorted, matchkind=MatchKind.LeftmostLongest)
        firsts = b"".join(re.escape(bytes([b])) for b in sorted({p[0] for p in self._sorted}))
        self._first_bytes = re.compile(b"[" + firsts + b"]")

    def _process(self, buf: bytes) -> tuple[bytes, bytes]:
        """Mask what is final in buf; return (released, held back)."""
        assert self._matcher is not None
        out: list[bytes] = []
        while True:
            hold = self._hold_start(buf)
            pos = 0
            for _, start, end in self._matcher.find_matches_as_indexes(buf):
                # A match starting before `hold` cannot grow or be preceded by a longer one
                # with more data; later ones may, so they wait.
                if start >= hold:
                    break
                out += (buf[pos:start], self._mask)
                pos = end
            if pos <= hold:
                out.append(buf[pos:hold])
                return b"".join(out), buf[hold:]
            # A final match ran into the held region: the search restarts at its end.
            buf = buf[pos:]

    def _hold_start(self, buf: bytes) -> int:
        """Start of the longest suffix of buf that is a proper prefix of some pattern."""
        assert self._first_bytes is not None
        window = max(0, len(buf) - self._longest + 1)
        for m in self._first_bytes.finditer(buf, window):
            if self._is_proper_prefix(buf[m.start() :]):
                return m.start()
        return len(buf)

    def _is_proper_prefix(self, tail: bytes) -> bool:
        # Patterns starting with `tail` sort right at (or just after, if equal) its position.
        i = bisect.bisect_left(self._sorted, tail)
        for candidate in self._sorted[i : i + 2]:
            if len(candidate) > len(tail) and candidate.startswith(tail):
                return True
        return False


def mask_with(matcher: BytesAhoCorasick | None, data: bytes, mask: bytes = b"***") -> bytes:
    """Mask every match of matcher in data at once (the reference behaviour)."""
    if matcher is None or not data:
        return data
    out: list[bytes] = []
    pos = 0
    for _, start, end in matcher.find_matches_as_indexes(data):
        out += (data[pos:start], mask)
        pos = end
    out.append(data[pos:])
    return b"".join(out)


def mask_all(data: bytes, secrets: Iterable[bytes | str], mask: bytes = b"***") -> bytes:
    """Mask a whole buffer in one go."""
    patterns: set[bytes] = set()
    for secret in secrets:
        patterns |= expand_secret(secret)
    if not patterns:
        return data
    matcher = BytesAhoCorasick(sorted(patterns), matchkind=MatchKind.LeftmostLongest)
    return mask_with(matcher, data, mask)
