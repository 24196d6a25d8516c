"""What a schedule does when it is due: pure functions of the schedule, the time and whether
an earlier fire's run is still active.

`plan` takes every due time since the schedule's `next_fire` and decides each one:

1. **Catch-up.** A due time more than `ON_TIME_S` ago was missed (the server was down, or the
   schedule paused). `skip`: missed times do not run; `once`: only the newest due time runs,
   standing for the others; `all`: each runs, the newest `catch_up_limit` of them.
2. **Starting deadline.** A start later than its time by more than `starting_deadline_s` is
   skipped instead.
3. **Overlap.** `forbid`: a start while an earlier run is active is skipped; `replace`: only
   the newest start of the batch stays, and it cancels the active runs first; `allow`: all
   start.

Times skipped together for the same reason become one `Decision` (`covers`), so a week of
downtime of a `* * * * *` schedule is one row, not ten thousand.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from hodei.domain.schedules.cron import Cron, fire_times, next_fire, parse_cron
from hodei.domain.schedules.model import CatchUp, Overlap, Schedule

__all__ = [
    "MAX_CATCH_UP",
    "MAX_SCAN",
    "ON_TIME_S",
    "Decision",
    "Plan",
    "after_result",
    "plan",
]

ON_TIME_S = 10.0  # a fire handled within this of its time is on time, not a missed one
MAX_CATCH_UP = 100  # the largest catch_up_limit
# Due times counted in one plan (a week of a `* * * * *` schedule); past that, the newest ones
# are not looked at one by one: the row says "10000+ missed fires".
MAX_SCAN = 10_000
FAILED_RESULTS = frozenset({"failed", "timed_out"})


@dataclass(frozen=True, slots=True)
class Decision:
    at: float  # the due time (of the newest time it covers)
    start: bool
    reason: str = ""  # why it was skipped, or what a catch-up start stands for
    covers: int = 1
    replace_previous: bool = False


@dataclass(frozen=True, slots=True)
class Plan:
    decisions: tuple[Decision, ...]  # oldest first
    next_fire: float | None  # the first time after `now`


def _ago(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


def plan(schedule: Schedule, now: float, previous_active: bool) -> Plan:
    """The decisions for every time `schedule` was due up to `now` (none while it is paused:
    they wait for resume, when the catch-up policy decides them)."""
    cron = parse_cron(schedule.cron, schedule.timezone)
    if schedule.paused or schedule.next_fire is None or schedule.next_fire > now:
        return Plan((), schedule.next_fire)
    count, newest = _due(cron, schedule.next_fire, now)
    if not count:  # next_fire was not a match (the expression changed): start from there
        return Plan((), next_fire(cron, max(now, schedule.next_fire)))
    decisions = _decide(schedule, now, count, newest, previous_active)
    return Plan(decisions, next_fire(cron, now))


def _due(cron: Cron, start: float, now: float) -> tuple[int, list[float]]:
    """How many times were due from `start` to `now` (counted up to MAX_SCAN), and the newest
    MAX_CATCH_UP + 1 of them, oldest first."""
    newest: deque[float] = deque(maxlen=MAX_CATCH_UP + 1)
    count = 0
    for at in fire_times(cron, start, now, MAX_SCAN):
        newest.append(at)
        count += 1
    return count, list(newest)


def _decide(
    s: Schedule, now: float, count: int, newest: list[float], previous_active: bool
) -> tuple[Decision, ...]:
    on_time = [t for t in newest if now - t <= ON_TIME_S]
    missed = [t for t in newest if now - t > ON_TIME_S]
    n_missed = count - len(on_time)  # missed ones beyond `newest` included
    out: list[Decision] = []
    starts: list[Decision] = []
    if missed:
        more = "+" if count >= MAX_SCAN else ""  # counted up to MAX_SCAN, then given up
        what = f"{n_missed}{more} missed fire{'s' if n_missed != 1 else ''}"
        last = missed[-1]
        if s.catch_up is CatchUp.SKIP:
            out.append(Decision(last, False, f"{what}, not caught up (catch-up: skip)", n_missed))
        elif s.catch_up is CatchUp.ONCE and on_time:
            reason = f"{what}, caught up by the fire on time (catch-up: once)"
            out.append(Decision(last, False, reason, n_missed))
        elif s.catch_up is CatchUp.ONCE:
            if n_missed > 1:
                reason = f"{n_missed - 1} missed fire(s), caught up by one run (catch-up: once)"
                out.append(Decision(missed[-2], False, reason, n_missed - 1))
            starts.append(Decision(last, True, f"catch-up: once, for {what}"))
        else:
            limit = max(1, min(s.catch_up_limit, MAX_CATCH_UP))
            kept = missed[-limit:]
            if n_missed > len(kept):
                n = n_missed - len(kept)
                dropped_at = missed[-limit - 1] if len(missed) > limit else kept[0] - 1e-3
                reason = f"{n} missed fire(s) beyond the catch-up limit of {limit}"
                out.append(Decision(dropped_at, False, reason, n))
            starts.extend(Decision(t, True, "catch-up: all") for t in kept)
    starts.extend(Decision(t, True) for t in on_time)
    out.extend(_overlap(s, now, starts, previous_active))
    return tuple(sorted(out, key=lambda d: (d.at, d.start)))


def _overlap(
    s: Schedule, now: float, starts: list[Decision], previous_active: bool
) -> list[Decision]:
    out: list[Decision] = []
    timely: list[Decision] = []
    deadline = s.starting_deadline_s
    for d in starts:
        late = now - d.at
        if deadline > 0 and late > deadline:
            reason = f"{_ago(late)} late, past its starting deadline of {_ago(deadline)}"
            out.append(Decision(d.at, False, reason))
        else:
            timely.append(d)
    if s.overlap is Overlap.ALLOW:
        return out + timely
    if s.overlap is Overlap.REPLACE:
        if not timely:
            return out
        newest = timely[-1]
        for d in timely[:-1]:
            out.append(Decision(d.at, False, "replaced by a newer fire (overlap: replace)"))
        kept = Decision(newest.at, True, newest.reason, replace_previous=previous_active)
        return [*out, kept]
    active = previous_active
    for d in timely:
        if active:
            out.append(Decision(d.at, False, "the previous run is still active (overlap: forbid)"))
        else:
            out.append(d)
            active = True
    return out


def after_result(schedule: Schedule, result: str) -> dict[str, object]:
    """The schedule's changes once a fire's run ended with `result` (a job state or a run
    state): failures in a row counted, and the pause once there are `pause_after` of them."""
    if result not in FAILED_RESULTS:
        return {"failures": 0} if schedule.failures else {}
    failures = schedule.failures + 1
    changes: dict[str, object] = {"failures": failures}
    if schedule.pause_after and failures >= schedule.pause_after and not schedule.paused:
        changes["paused"] = True
        changes["pause_reason"] = (
            f"paused after {failures} failed run{'s' if failures != 1 else ''} in a row "
            f"(pause-after {schedule.pause_after})"
        )
    return changes
