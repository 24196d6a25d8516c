"""What happens to a job's output before it leaves the agent, in order:

1. `::add-mask::VALUE` lines are taken out and VALUE is masked from then on
   (see mask_commands);
2. every secret, in its common encodings, is masked (see masking.StreamMasker);
3. the output limit: past `limit` bytes, one visible line says the rest is discarded, and
   the rest is counted but not kept (the job runs on to its end). When the stream ends, a
   last line says how many bytes were discarded.

Only bytes that could still become a secret or an `::add-mask::` line are held back, so
masking adds no latency to ordinary output.
"""

from __future__ import annotations

from collections.abc import Iterable

from hodei.domain.mask_commands import AddMask, MaskCommandFilter
from hodei.domain.masking import MIN_SECRET_LENGTH, StreamMasker, secret_too_short

SHORT_VALUE_NOTE = (
    f"[hodei: ::add-mask:: value shorter than {MIN_SECRET_LENGTH} characters ignored]\n".encode()
)


def human_size(n: int) -> str:
    """1048576 -> '1 MiB', 1536 -> '1.5 KiB', 100 -> '100 bytes'."""
    amount = float(n)
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if amount < 1024 or unit == "GiB":
            return f"{amount:.4g} {unit}"
        amount /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


class JobOutput:
    """One attempt's output filter; feed() and flush() return the bytes to send on."""

    def __init__(self, secrets: Iterable[str | bytes], limit: int) -> None:
        self._commands = MaskCommandFilter()
        self._masker = StreamMasker(secrets)
        self._limit = limit
        self._sent = 0
        self._cut = False  # the limit was reached: nothing more is kept
        self._discarded = 0

    @property
    def truncated(self) -> bool:
        return self._cut

    @property
    def discarded(self) -> int:
        return self._discarded

    def feed(self, data: bytes) -> bytes:
        if self.truncated:
            self._discarded += len(data)
            return b""
        return self._cap(self._run(self._commands.feed(data)))

    def flush(self) -> bytes:
        out = b""
        if not self.truncated:
            out = self._cap(self._run(self._commands.flush()) + self._masker.flush())
        if self._discarded:
            out += f"[hodei: {self._discarded} more bytes of output discarded]\n".encode()
        return out

    def mask_text(self, text: str) -> str:
        """Mask a message (an error) with every value known so far."""
        return self._masker.mask(text.encode()).decode("utf-8", "replace")

    def _run(self, items: list[bytes | AddMask]) -> bytes:
        out: list[bytes] = []
        for item in items:
            if isinstance(item, AddMask):
                value = item.value.strip()
                if secret_too_short(value):
                    out.append(self._masker.feed(SHORT_VALUE_NOTE))
                else:
                    self._masker.add(value)
            else:
                out.append(self._masker.feed(item))
        return b"".join(out)

    def _cap(self, data: bytes) -> bytes:
        room = self._limit - self._sent
        if len(data) <= room:
            self._sent += len(data)
            return data
        self._sent, self._cut = self._limit, True
        self._discarded += len(data) - room
        note = (
            f"\n[hodei: output limit of {human_size(self._limit)} reached; the rest of this "
            "job's output is discarded, the job keeps running]\n"
        )
        return data[:room] + note.encode()
