"""Events servers sharing one store send each other, and their wire form (small JSON)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import orjson

MAX_PAYLOAD = 7900  # PostgreSQL's NOTIFY payload limit is 8000 bytes


class EventKind(StrEnum):
    JOB = "job"  # a job was created or changed state: read it from the store
    LOG = "log"  # an attempt's log grew to `size` bytes (on the shared log directory)
    CANCEL = "cancel"  # a user asked to cancel a job another server's worker runs
    TOKEN = "token"  # an API token was revoked: forget what was cached about it


@dataclass(frozen=True, slots=True)
class ClusterEvent:
    kind: EventKind
    origin: str  # the sending server's instance id
    subject: str  # the job's id; the token's id for TOKEN
    attempt: int = 0
    size: int = 0


def encode_event(event: ClusterEvent) -> str:
    data = {"k": event.kind.value, "o": event.origin, "j": event.subject}
    if event.attempt:
        data["a"] = event.attempt  # type: ignore[assignment]
    if event.size:
        data["s"] = event.size  # type: ignore[assignment]
    text = orjson.dumps(data).decode()
    if len(text) > MAX_PAYLOAD:
        raise ValueError(f"cluster event too large ({len(text)} bytes)")
    return text


def decode_event(text: str) -> ClusterEvent:
    """ValueError for anything that is not an event this version knows."""
    try:
        data = orjson.loads(text)
        kind = EventKind(data["k"])
        origin, subject = data["o"], data["j"]
        attempt, size = int(data.get("a", 0)), int(data.get("s", 0))
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ValueError(f"not a cluster event: {text[:80]!r}") from exc
    if not isinstance(origin, str) or not isinstance(subject, str) or attempt < 0 or size < 0:
        raise ValueError(f"not a cluster event: {text[:80]!r}")
    return ClusterEvent(kind, origin, subject, attempt, size)
