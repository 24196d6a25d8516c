"""The Range header of a log read (server.api.http.ranges)."""

from __future__ import annotations

import pytest

from hodei.errors import ValidationError
from hodei.server.api.http.ranges import ByteRange, content_range, parse_range


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("bytes=0-9", ByteRange(0, 9)),
        ("bytes=10-", ByteRange(10, None)),
        ("bytes=-5", ByteRange(None, 5)),
        ("  Bytes = 3 - 4 ", ByteRange(3, 4)),
        ("bytes=007-08", ByteRange(7, 8)),
        ("bytes=1-" + "9" * 40, ByteRange(1, 10**19)),
    ],
)
def test_the_three_forms(header: str, expected: ByteRange) -> None:
    assert parse_range(header) == expected


def test_another_unit_is_ignored() -> None:
    assert parse_range("lines=0-9") is None


@pytest.mark.parametrize(
    "header", ["", "bytes", "=0-1", "bytes=", "bytes=-", "bytes=a-b", "bytes=5-2", "bytes=0-1,3-4"]
)
def test_malformed_or_several_are_refused(header: str) -> None:
    with pytest.raises(ValidationError):
        parse_range(header)


@pytest.mark.parametrize(
    ("asked", "size", "span"),
    [
        (ByteRange(0, 9), 100, (0, 9)),
        (ByteRange(0, 500), 100, (0, 99)),
        (ByteRange(99, None), 100, (99, 99)),
        (ByteRange(100, None), 100, None),
        (ByteRange(None, 10), 100, (90, 99)),
        (ByteRange(None, 1000), 100, (0, 99)),
        (ByteRange(None, 0), 100, None),
        (ByteRange(None, 5), 0, None),
        (ByteRange(0, None), 0, None),
    ],
)
def test_the_bytes_named_in_a_log(
    asked: ByteRange, size: int, span: tuple[int, int] | None
) -> None:
    assert asked.within(size) == span


def test_content_range() -> None:
    assert content_range((0, 9), 100) == "bytes 0-9/100"
    assert content_range(None, 100) == "bytes */100"
