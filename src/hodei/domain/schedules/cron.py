"""Cron expressions and the times they fire, in a time zone, as pure functions of an instant.

An expression is standard five-field cron (minute, hour, day of month, month, day of week) or
one of the aliases (@hourly, @daily, @midnight, @weekly, @monthly, @yearly, @annually).
croniter matches the fields; this module decides how wall-clock times become instants, so
daylight-saving changes are handled one way everywhere:

- the expression is matched against the zone's *wall-clock* time, and each matching wall-clock
  time fires once;
- a wall-clock time that does not exist (the hour skipped when clocks go forward) fires at the
  instant the clocks jump over it (02:30 on a spring-forward day at 02:00 -> 03:30, once; if
  03:30 matches too, that instant still fires once);
- a wall-clock time that happens twice (the hour repeated when clocks go back) fires at its
  first occurrence only.

Instants are POSIX seconds (floats), as everywhere else in Hodei.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from itertools import pairwise
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterError, croniter

from hodei.errors import ValidationError

__all__ = [
    "ALIASES",
    "Cron",
    "fire_times",
    "min_gap",
    "next_fire",
    "parse_cron",
    "zone",
]

ALIASES = {
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
    "@monthly": "0 0 1 * *",
    "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@hourly": "0 * * * *",
}
_FIELDS = (
    ("minute", "0-59"),
    ("hour", "0-23"),
    ("day of month", "1-31"),
    ("month", "1-12 or JAN-DEC"),
    ("day of week", "0-7 or SUN-SAT"),
)
# Searching for the next match gives up after this many candidates (an expression such as
# "0 0 30 2 *", February 30th, matches nothing; croniter gives up on its own after years).
_MAX_CANDIDATES = 1000
_MAX_TEXT = 200


@dataclass(frozen=True, slots=True)
class Cron:
    """A checked expression (`fields`: the five fields, aliases expanded) and its zone."""

    text: str  # as the user wrote it
    fields: str
    timezone: str

    @property
    def tz(self) -> tzinfo:
        return zone(self.timezone)


def zone(name: str) -> tzinfo:
    """The IANA time zone `name` (e.g. Europe/Madrid, UTC); ValidationError if unknown."""
    if not name or len(name) > 64 or name.startswith(("/", ".")) or ".." in name:
        raise ValidationError(f"unknown time zone {name[:64]!r}")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValidationError(
            f"unknown time zone {name!r} (use an IANA name such as UTC or Europe/Madrid)"
        ) from None


def parse_cron(text: str, timezone: str = "UTC") -> Cron:
    """Check an expression and its zone; ValidationError saying which field is wrong."""
    zone(timezone)
    stripped = " ".join(text.split())
    if not stripped:
        raise ValidationError("empty cron expression")
    if len(stripped) > _MAX_TEXT:
        raise ValidationError(f"cron expression longer than {_MAX_TEXT} characters")
    if stripped.startswith("@"):
        fields = ALIASES.get(stripped.lower())
        if fields is None:
            raise ValidationError(
                f"unknown cron alias {stripped[:40]!r} (known: {', '.join(ALIASES)})"
            )
        return Cron(text, fields, timezone)
    parts = stripped.split(" ")
    if len(parts) != 5:
        raise ValidationError(
            f"cron expression {stripped[:60]!r} has {len(parts)} field(s); expected 5: "
            "minute hour day-of-month month day-of-week (or an alias such as @daily)"
        )
    for index, (part, (what, allowed)) in enumerate(zip(parts, _FIELDS, strict=True)):
        probe = ["*"] * 5
        probe[index] = part
        if not _accepted(" ".join(probe)):
            raise ValidationError(
                f"invalid {what} field {part[:40]!r} in cron expression {stripped[:60]!r} "
                f"(allowed: {allowed}, with *, lists a,b, ranges a-b and steps */n)"
            )
    if not _accepted(stripped):  # each field alone is fine, together they are not
        raise ValidationError(f"invalid cron expression {stripped[:60]!r}")
    return Cron(text, stripped, timezone)


def _accepted(fields: str) -> bool:
    # croniter refuses "H" (hashed) fields without an id, which Hodei never gives it.
    try:
        croniter(fields, datetime(2000, 1, 1))
    except (CroniterError, ValueError, KeyError, TypeError):
        return False
    return True


def _instant(wall: datetime, tz: tzinfo) -> float:
    """The instant of a naive wall-clock time: its first occurrence when it happens twice;
    when it does not exist, the instant the clocks jumped over it (fold=0 reads it with the
    offset from before the jump, which is that instant plus the time skipped)."""
    return wall.replace(tzinfo=tz, fold=0).timestamp()


def next_fire(cron: Cron, after: float) -> float | None:
    """The first fire strictly after the instant `after`; None if the expression matches no
    date in the years croniter searches (e.g. February 30th)."""
    tz = cron.tz
    start = datetime.fromtimestamp(after, tz).replace(tzinfo=None, microsecond=0)
    # One minute back: an `after` within the repeated hour reads as a wall time that may be
    # later than the first occurrence of a match that is still ahead of it in real time.
    try:
        it = croniter(cron.fields, start - timedelta(minutes=1))
        for _ in range(_MAX_CANDIDATES):
            wall = it.get_next(datetime)
            at = _instant(wall, tz)
            if at > after:
                return at
    except (CroniterError, ValueError, OverflowError):
        return None
    return None


def fire_times(cron: Cron, start: float, end: float, limit: int) -> Iterator[float]:
    """The fires t with start <= t <= end, oldest first, at most `limit` of them (one
    croniter walk: next_fire's rules, without a new iterator per fire)."""
    first = next_fire(cron, math.nextafter(start, -math.inf))
    if first is None or first > end or limit <= 0:
        return
    yield first
    tz, last, count = cron.tz, first, 1
    try:
        it = croniter(cron.fields, datetime.fromtimestamp(first, tz).replace(tzinfo=None))
        misses = 0
        while count < limit and misses < _MAX_CANDIDATES:
            at = _instant(it.get_next(datetime), tz)
            if at > end:
                return
            if at <= last:  # a missing wall time mapped onto one already fired
                misses += 1
                continue
            misses = 0
            yield at
            last, count = at, count + 1
    except (CroniterError, ValueError, OverflowError):
        return


def min_gap(cron: Cron, start: float, samples: int = 400) -> float | None:
    """The shortest time between two consecutive fires among the next `samples` after
    `start` (None when it fires fewer than twice)."""
    times = list(fire_times(cron, start, float("inf"), samples))
    gaps = [b - a for a, b in pairwise(times)]
    return min(gaps) if gaps else None


def describe(at: float, timezone: str) -> str:
    """An instant as the zone's wall-clock time with its offset (for messages and views)."""
    return datetime.fromtimestamp(at, zone(timezone)).isoformat(timespec="seconds")


def utc_text(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).isoformat(timespec="seconds")
