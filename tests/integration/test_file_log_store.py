"""FileLogStore against a real directory tree."""

from __future__ import annotations

import resource
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from hodei.adapters.logs.files import FileLogStore
from hodei.errors import StoreError


@pytest.fixture
def logs(tmp_path: Path) -> Iterator[FileLogStore]:
    store = FileLogStore(tmp_path / "logs")
    yield store
    store.close()


def test_append_returns_end_offsets_and_read_returns_bytes(logs: FileLogStore) -> None:
    assert logs.append("j1", 1, b"hello ") == 6
    assert logs.append("j1", 1, b"world\n") == 12
    assert logs.append("j1", 1, b"") == 12
    assert logs.size("j1", 1) == 12
    assert logs.read("j1", 1) == b"hello world\n"


def test_read_with_offset_and_limit(logs: FileLogStore) -> None:
    logs.append("j1", 0, b"0123456789")
    assert logs.read("j1", 0, offset=3) == b"3456789"
    assert logs.read("j1", 0, offset=3, limit=4) == b"3456"
    assert logs.read("j1", 0, offset=8, limit=100) == b"89"
    assert logs.read("j1", 0, offset=10) == b""
    assert logs.read("j1", 0, offset=50) == b""
    assert logs.read("j1", 0, limit=0) == b""
    with pytest.raises(ValueError):
        logs.read("j1", 0, offset=-1)


def test_missing_log_is_empty(logs: FileLogStore) -> None:
    assert logs.read("nobody", 1) == b""
    assert logs.size("nobody", 1) == 0
    logs.seal("nobody", 1)  # nothing to flush


def test_attempts_are_separate_files(logs: FileLogStore, tmp_path: Path) -> None:
    logs.append("j1", 1, b"first")
    logs.append("j1", 2, b"second")
    assert logs.read("j1", 1) == b"first"
    assert logs.read("j1", 2) == b"second"
    assert (tmp_path / "logs" / "j1" / "2.log").read_bytes() == b"second"
    mode = (tmp_path / "logs" / "j1" / "1.log").stat().st_mode
    assert stat.S_IMODE(mode) == 0o600


def test_seal_then_append_again(logs: FileLogStore) -> None:
    logs.append("j1", 1, b"abc")
    assert logs.open_handles == 1
    logs.seal("j1", 1)
    assert logs.open_handles == 0
    assert logs.size("j1", 1) == 3
    assert logs.append("j1", 1, b"def") == 6
    assert logs.read("j1", 1) == b"abcdef"
    logs.seal("j1", 1)
    logs.seal("j1", 1)  # idempotent


@pytest.mark.parametrize("job_id", ["", ".", "..", "../etc", "a/b", "a\\b", "x..y", "nul\x00"])
def test_bad_job_id_rejected(logs: FileLogStore, job_id: str) -> None:
    with pytest.raises(ValueError):
        logs.append(job_id, 1, b"x")
    with pytest.raises(ValueError):
        logs.read(job_id, 1)
    with pytest.raises(ValueError):
        logs.size(job_id, 1)
    with pytest.raises(ValueError):
        logs.seal(job_id, 1)


@pytest.mark.parametrize("attempt", [-1, True, "1"])
def test_bad_attempt_rejected(logs: FileLogStore, attempt: object) -> None:
    with pytest.raises(ValueError):
        logs.append("j1", attempt, b"x")  # type: ignore[arg-type]


def test_new_store_sees_previous_bytes(tmp_path: Path) -> None:
    first = FileLogStore(tmp_path / "logs")
    first.append("j1", 1, b"before restart\n")
    first.close()  # not sealed: os.write already handed the bytes to the kernel
    second = FileLogStore(tmp_path / "logs")
    try:
        assert second.size("j1", 1) == 15
        assert second.read("j1", 1) == b"before restart\n"
        assert second.append("j1", 1, b"after\n") == 21
        assert second.read("j1", 1) == b"before restart\nafter\n"
    finally:
        second.close()


def test_lru_caps_open_handles(tmp_path: Path) -> None:
    logs = FileLogStore(tmp_path / "logs", max_open=2)
    try:
        expected: dict[str, bytes] = {}
        for round_ in range(3):
            for i in range(5):
                chunk = f"{round_}:{i};".encode()
                offset = logs.append(f"j{i}", 1, chunk)
                expected[f"j{i}"] = expected.get(f"j{i}", b"") + chunk
                assert offset == len(expected[f"j{i}"])
                assert logs.open_handles <= 2
        for job_id, data in expected.items():
            assert logs.read(job_id, 1) == data
            assert logs.size(job_id, 1) == len(data)
            logs.seal(job_id, 1)  # also flushes files whose handle the LRU closed
    finally:
        logs.close()
    logs.close()  # idempotent


def test_full_disk_leaves_nothing_half_written(logs: FileLogStore) -> None:
    assert logs.append("j1", 1, b"a" * 60_000) == 60_000
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    # Python ignores SIGXFSZ, so a write past the limit is cut short then fails with EFBIG,
    # just like a disk that fills up in the middle of a write.
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, hard))
    try:
        with pytest.raises(StoreError, match="cannot append 10000 bytes"):
            logs.append("j1", 1, b"b" * 10_000)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert logs.size("j1", 1) == 60_000
    assert logs.read("j1", 1) == b"a" * 60_000
    assert logs.append("j1", 1, b"c") == 60_001


def test_reading_past_the_end_is_empty_even_for_absurd_offsets(logs: FileLogStore) -> None:
    logs.append("j", 1, b"abc")
    for offset in (3, 4, 1 << 40, (1 << 63) - 1):
        assert logs.read("j", 1, offset) == b""
