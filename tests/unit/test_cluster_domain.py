"""Cluster events: their wire form, and refusal of anything else."""

from __future__ import annotations

import pytest

from hodei.domain.cluster import ClusterEvent, EventKind, decode_event, encode_event


@pytest.mark.parametrize(
    "event",
    [
        ClusterEvent(EventKind.JOB, "srv-a", "job-1"),
        ClusterEvent(EventKind.LOG, "srv-b", "job-2", attempt=3, size=1 << 40),
        ClusterEvent(EventKind.CANCEL, "srv-c", "j"),
        ClusterEvent(EventKind.TOKEN, "srv-d", "0123456789ab"),
    ],
)
def test_events_round_trip(event: ClusterEvent) -> None:
    text = encode_event(event)
    assert len(text) < 200 and decode_event(text) == event


@pytest.mark.parametrize(
    "text",
    [
        "",
        "not json",
        "[]",
        '{"k": "job"}',
        '{"k": "reboot", "o": "a", "j": "b"}',
        '{"k": "log", "o": "a", "j": "b", "a": -1}',
        '{"k": "log", "o": 5, "j": "b"}',
        '{"k": "log", "o": "a", "j": "b", "s": "x"}',
    ],
)
def test_anything_else_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="not a cluster event"):
        decode_event(text)


def test_oversized_events_are_refused() -> None:
    with pytest.raises(ValueError, match="too large"):
        encode_event(ClusterEvent(EventKind.JOB, "o", "x" * 9000))
