"""Schedules' domain: cron parsing and errors, fire times in time zones across DST changes,
catch-up, starting deadlines, overlap and the pause after failed runs, as pure functions of
the instant they are given."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hodei.domain.schedules import (
    CatchUp,
    Overlap,
    Schedule,
    after_result,
    fire_id,
    fire_run_id,
    fire_times,
    min_gap,
    next_fire,
    parse_cron,
    plan,
    schedule_of_fire,
)
from hodei.domain.schedules.policy import ON_TIME_S
from hodei.errors import ValidationError

MADRID = "Europe/Madrid"


def at(tz: str, *parts: int, fold: int = 0) -> float:
    return datetime(*parts, tzinfo=ZoneInfo(tz), fold=fold).timestamp()  # type: ignore[arg-type,misc]


def wall(tz: str, instant: float) -> str:
    return datetime.fromtimestamp(instant, ZoneInfo(tz)).isoformat()


# -- parsing and errors


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("61 * * * *", "invalid minute field '61'"),
        ("* 24 * * *", "invalid hour field '24'"),
        ("* * 32 * *", "invalid day of month field '32'"),
        ("* * * 13 *", "invalid month field '13'"),
        ("0 3 * * 1-9", "invalid day of week field '1-9'"),
        ("*/0 * * * *", "invalid minute field '*/0'"),
        ("* * *", "has 3 field(s); expected 5"),
        ("* * * * * *", "has 6 field(s); expected 5"),
        ("@reboot", "unknown cron alias '@reboot'"),
        ("", "empty cron expression"),
        ("H * * * *", "invalid minute field 'H'"),
    ],
)
def test_invalid_cron_says_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ValidationError) as err:
        parse_cron(text)
    assert message in err.value.message


def test_unknown_time_zone() -> None:
    for name in ("Mars/Olympus", "../etc/passwd", "", "Europe/Madrid/x"):
        with pytest.raises(ValidationError, match="unknown time zone"):
            parse_cron("* * * * *", name)


@pytest.mark.parametrize(
    ("alias", "fields"),
    [("@hourly", "0 * * * *"), ("@daily", "0 0 * * *"), ("@WEEKLY", "0 0 * * 0"),
     ("@monthly", "0 0 1 * *"), ("@yearly", "0 0 1 1 *"), ("@annually", "0 0 1 1 *"),
     ("@midnight", "0 0 * * *")],
)  # fmt: skip
def test_aliases(alias: str, fields: str) -> None:
    assert parse_cron(alias).fields == fields


def test_weekdays_at_three_in_madrid() -> None:
    cron = parse_cron("0 3 * * 1-5", MADRID)
    friday = at(MADRID, 2024, 6, 7, 3, 0)
    following = next_fire(cron, friday)
    assert following is not None and wall(MADRID, following) == "2024-06-10T03:00:00+02:00"


def test_a_fire_is_strictly_after() -> None:
    cron = parse_cron("*/5 * * * *")
    t = datetime(2024, 1, 1, 10, 5, tzinfo=UTC).timestamp()
    assert next_fire(cron, t) == t + 300
    assert next_fire(cron, t - 0.5) == t


def test_no_date_matches() -> None:
    assert next_fire(parse_cron("0 0 30 2 *"), 0.0) is None


# -- daylight saving


def test_spring_forward_fires_once_at_the_jump() -> None:
    # Madrid, 2024-03-31: 02:00 CET becomes 03:00 CEST; 02:30 does not exist that day.
    cron = parse_cron("30 2 * * *", MADRID)
    day = list(fire_times(cron, at(MADRID, 2024, 3, 30, 12), at(MADRID, 2024, 4, 1, 12), 10))
    assert [wall(MADRID, t) for t in day] == [
        "2024-03-31T03:30:00+02:00",  # once, at the instant the clocks jumped over 02:30
        "2024-04-01T02:30:00+02:00",
    ]


def test_fall_back_fires_once_at_the_first_occurrence() -> None:
    # Madrid, 2024-10-27: 03:00 CEST becomes 02:00 CET; 02:30 happens twice.
    cron = parse_cron("30 2 * * *", MADRID)
    day = list(fire_times(cron, at(MADRID, 2024, 10, 26, 12), at(MADRID, 2024, 10, 28, 12), 10))
    assert [wall(MADRID, t) for t in day] == [
        "2024-10-27T02:30:00+02:00",
        "2024-10-28T02:30:00+01:00",
    ]
    # Asked from within the repeated hour (after the first 02:30): not again that day.
    second = at(MADRID, 2024, 10, 27, 2, 10, fold=1)
    following = next_fire(cron, second)
    assert following is not None and wall(MADRID, following) == "2024-10-28T02:30:00+01:00"


def test_every_quarter_hour_across_the_gap_fires_each_instant_once() -> None:
    cron = parse_cron("*/15 * * * *", MADRID)
    times = list(fire_times(cron, at(MADRID, 2024, 3, 31, 1, 30), at(MADRID, 2024, 3, 31, 4), 50))
    assert len(times) == len(set(times))
    assert [wall(MADRID, t)[11:16] for t in times] == [
        "01:30", "01:45", "03:00", "03:15", "03:30", "03:45", "04:00",
    ]  # fmt: skip


@settings(max_examples=150, deadline=None)
@given(
    start=st.floats(min_value=946684800, max_value=2208988800),
    expr=st.sampled_from(["*/7 * * * *", "30 2 * * *", "0 */3 * * *", "15 1,2,3 * * 0"]),
    tz=st.sampled_from(["UTC", MADRID, "America/New_York", "Australia/Lord_Howe"]),
)
def test_fires_strictly_increase_and_match_the_expression(start: float, expr: str, tz: str) -> None:
    cron = parse_cron(expr, tz)
    times = list(fire_times(cron, start, start + 3 * 86400, 200))
    assert times == sorted(set(times))
    assert all(t >= start for t in times)
    for t in times:
        local = datetime.fromtimestamp(t, ZoneInfo(tz))
        # Each fire is a matching wall time, or the jump over a matching one that is missing.
        minute_ok = local.minute % 7 == 0 if expr.startswith("*/7") else True
        assert minute_ok or local.fold == 0


def test_min_gap() -> None:
    assert min_gap(parse_cron("* * * * *"), 0.0) == 60.0
    assert min_gap(parse_cron("0,5 3 * * *"), 0.0) == 300.0
    assert min_gap(parse_cron("@daily", MADRID), at(MADRID, 2024, 3, 1)) == 82800.0  # the 23 h day


# -- ids


def test_fire_ids() -> None:
    fid = fire_id("s0123456789ab", 1718000000.0)
    assert fid == "s0123456789ab-1718000000"
    assert schedule_of_fire(fid) == "s0123456789ab"
    assert schedule_of_fire(fire_id("s0123456789ab", 17.5, manual=True)) == "s0123456789ab"
    assert schedule_of_fire("r0123456789abcdef0.1.1") is None
    run = fire_run_id(fid)
    assert run == fire_run_id(fid) and len(run) == 18 and run.startswith("r")


# -- policies

T0 = datetime(2024, 6, 3, 12, 0, tzinfo=UTC).timestamp()  # a Monday, 12:00 UTC


def sched(**changes: object) -> Schedule:
    base = Schedule(id="s0123456789ab", name="n", cron="* * * * *", next_fire=T0)
    return base.with_changes(**changes)


def starts(p: object) -> list[float]:
    return [d.at for d in p.decisions if d.start]  # type: ignore[attr-defined]


def test_not_due_yet() -> None:
    p = plan(sched(), T0 - 1, previous_active=False)
    assert p.decisions == () and p.next_fire == T0


def test_on_time_fire_starts_and_next_is_the_following_minute() -> None:
    p = plan(sched(), T0 + 0.2, previous_active=False)
    assert starts(p) == [T0] and p.next_fire == T0 + 60


def test_paused_decides_nothing() -> None:
    p = plan(sched(paused=True), T0 + 600, previous_active=False)
    assert p.decisions == () and p.next_fire == T0


def down_for_three_minutes(policy: CatchUp, **changes: object) -> object:
    # Due at T0, T0+60, T0+120, T0+180; back at T0+180+30: all four are more than 10 s late.
    return plan(sched(catch_up=policy, **changes), T0 + 210, previous_active=False)


def test_catch_up_skip_starts_none_and_records_them() -> None:
    p = down_for_three_minutes(CatchUp.SKIP)
    assert starts(p) == []
    (only,) = p.decisions  # type: ignore[attr-defined]
    assert only.covers == 4 and "catch-up: skip" in only.reason
    assert p.next_fire == T0 + 240  # type: ignore[attr-defined]


def test_catch_up_once_starts_exactly_one() -> None:
    p = down_for_three_minutes(CatchUp.ONCE)
    assert starts(p) == [T0 + 180]
    skipped = [d for d in p.decisions if not d.start]  # type: ignore[attr-defined]
    assert [d.covers for d in skipped] == [3]


def test_catch_up_all_up_to_the_limit() -> None:
    p = down_for_three_minutes(CatchUp.ALL, catch_up_limit=2)
    assert starts(p) == [T0 + 120, T0 + 180]
    skipped = [d for d in p.decisions if not d.start]  # type: ignore[attr-defined]
    assert [d.covers for d in skipped] == [2] and "limit of 2" in skipped[0].reason


def test_skip_still_runs_the_fire_on_time() -> None:
    p = plan(sched(catch_up=CatchUp.SKIP), T0 + 180 + ON_TIME_S / 2, previous_active=False)
    assert starts(p) == [T0 + 180]
    assert [d.covers for d in p.decisions if not d.start] == [3]


def test_starting_deadline() -> None:
    p = plan(sched(catch_up=CatchUp.ONCE, starting_deadline_s=20), T0 + 90, False)
    # One run for T0 and T0+60, but that run would start 30 s late: past the deadline.
    assert starts(p) == []
    assert any("starting deadline of 20s" in d.reason for d in p.decisions)
    ok = plan(sched(catch_up=CatchUp.ONCE, starting_deadline_s=40), T0 + 90, False)
    assert starts(ok) == [T0 + 60]


def test_overlap_forbid_skips_while_active() -> None:
    p = plan(sched(overlap=Overlap.FORBID), T0 + 1, previous_active=True)
    (d,) = p.decisions
    assert not d.start and "still active (overlap: forbid)" in d.reason
    assert starts(plan(sched(overlap=Overlap.FORBID), T0 + 1, previous_active=False)) == [T0]


def test_overlap_forbid_with_catch_up_all_starts_one() -> None:
    p = down_for_three_minutes(CatchUp.ALL, overlap=Overlap.FORBID)
    assert starts(p) == [T0]


def test_overlap_replace_cancels_and_starts_the_newest() -> None:
    p = plan(sched(overlap=Overlap.REPLACE), T0 + 1, previous_active=True)
    (d,) = p.decisions
    assert d.start and d.replace_previous
    q = down_for_three_minutes(CatchUp.ALL, overlap=Overlap.REPLACE)
    assert starts(q) == [T0 + 180]


def test_overlap_allow() -> None:
    p = down_for_three_minutes(CatchUp.ALL, overlap=Overlap.ALLOW)
    assert starts(p) == [T0, T0 + 60, T0 + 120, T0 + 180]


@settings(max_examples=100, deadline=None)
@given(
    late=st.floats(min_value=0, max_value=86400),
    policy=st.sampled_from(list(CatchUp)),
    overlap=st.sampled_from(list(Overlap)),
    limit=st.integers(min_value=1, max_value=100),
    deadline=st.sampled_from([0.0, 5.0, 120.0]),
    active=st.booleans(),
)
def test_every_due_time_is_decided_once(
    late: float, policy: CatchUp, overlap: Overlap, limit: int, deadline: float, active: bool
) -> None:
    s = sched(catch_up=policy, overlap=overlap, catch_up_limit=limit, starting_deadline_s=deadline)
    p = plan(s, T0 + late, previous_active=active)
    due = int(((T0 + late) - T0) // 60) + 1  # as the sum of floats rounds
    assert sum(d.covers for d in p.decisions) == due
    assert len({d.at for d in p.decisions}) == len(p.decisions)
    assert p.next_fire is not None and p.next_fire > T0 + late
    n = len(starts(p))
    if policy is CatchUp.ONCE or overlap is not Overlap.ALLOW:
        assert n <= 1
    if policy is CatchUp.SKIP:
        assert n <= 1 and all(T0 + late - t <= ON_TIME_S for t in starts(p))
    assert n <= limit + 1
    assert len(p.decisions) <= 104


def test_a_very_long_downtime_is_counted_up_to_a_bound() -> None:
    p = plan(sched(catch_up=CatchUp.SKIP), T0 + 30 * 86400, previous_active=False)
    (d,) = p.decisions
    assert d.covers == 10_000 and "10000+ missed fires" in d.reason
    assert p.next_fire == T0 + 30 * 86400 + 60


def test_pause_after_failures() -> None:
    s = sched(pause_after=2)
    first = after_result(s, "failed")
    assert first == {"failures": 1}
    second = after_result(s.with_changes(failures=1), "timed_out")
    assert second["paused"] is True and "2 failed runs in a row" in str(second["pause_reason"])
    assert after_result(s.with_changes(failures=1), "succeeded") == {"failures": 0}
    assert after_result(s, "cancelled") == {}
    assert after_result(sched(), "failed") == {"failures": 1}  # never pauses without pause_after


def test_clients_may_not_take_a_fire_id_nor_a_step_id() -> None:
    from hodei.domain.jobs import validate_job_id

    fire = fire_id("s0123456789ab", 1_767_225_600)
    assert validate_job_id(fire, fire=True) == fire
    with pytest.raises(ValidationError, match="the scheduler's"):
        validate_job_id(fire)  # a client's id: it would block that fire
    with pytest.raises(ValidationError, match="not a schedule fire's job id"):
        validate_job_id("build-1", fire=True)
    assert validate_job_id(fire, step=None) == fire  # naming an existing job: any form
