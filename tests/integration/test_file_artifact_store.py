"""FileArtifactStore on real files: uploads, checks, crash safety, outputs, expiry."""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import pytest

from hodei.adapters.artifacts.files import FileArtifactStore
from hodei.errors import StoreError


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def upload(store: FileArtifactStore, job: str, attempt: int, data: bytes, chunk: int = 3) -> None:
    up = store.begin(job, attempt, 1 << 20)
    for offset in range(0, len(data), chunk):
        up.write(offset, data[offset : offset + chunk])
    up.commit(sha(data), len(data))


def visible(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def test_an_upload_in_chunks_is_kept_and_read_back(tmp_path: Path) -> None:
    store = FileArtifactStore(tmp_path)
    data = os.urandom(10_000)
    before = time.time()
    upload(store, "job-1", 2, data, chunk=4096)
    info = store.info("job-1", 2)
    assert info is not None
    assert (info.job_id, info.attempt, info.sha256, info.size) == ("job-1", 2, sha(data), 10_000)
    assert before <= info.created_at <= time.time()
    assert store.read("job-1", 2) == data
    assert store.read("job-1", 2, 100, 50) == data[100:150]
    assert store.read("job-1", 2, 20_000) == b""
    assert visible(tmp_path) == ["job-1/2.json", "job-1/2.tar"]
    meta = json.loads((tmp_path / "job-1" / "2.json").read_text())
    assert meta["sha256"] == sha(data) and meta["size"] == 10_000
    assert (tmp_path / "job-1" / "2.tar").stat().st_mode & 0o077 == 0


def test_nothing_is_visible_before_commit(tmp_path: Path) -> None:
    store = FileArtifactStore(tmp_path)
    up = store.begin("j", 1, 1000)
    up.write(0, b"abc")
    assert store.info("j", 1) is None
    assert store.latest("j") is None
    assert store.read("j", 1) == b""
    (name,) = (p.name for p in (tmp_path / "j").iterdir())
    assert name.startswith(".")  # a hidden temp file only
    up.abort()
    assert visible(tmp_path) == []


def test_offset_zero_restarts_and_a_gap_is_refused(tmp_path: Path) -> None:
    store = FileArtifactStore(tmp_path)
    up = store.begin("j", 1, 1000)
    up.write(0, b"stale data")
    up.write(0, b"fresh")  # a resend after a reconnect
    with pytest.raises(ValueError, match="offset 9"):
        up.write(9, b"x")
    up.write(5, b"!")
    info = up.commit(sha(b"fresh!"), 6)
    assert info.size == 6
    assert store.read("j", 1) == b"fresh!"


def test_a_bad_checksum_or_size_keeps_nothing(tmp_path: Path) -> None:
    store = FileArtifactStore(tmp_path)
    up = store.begin("j", 1, 1000)
    up.write(0, b"payload")
    with pytest.raises(ValueError, match="does not match"):
        up.commit(sha(b"other"), 7)
    assert store.info("j", 1) is None
    up = store.begin("j", 1, 1000)
    up.write(0, b"payload")
    with pytest.raises(ValueError, match="does not match"):
        up.commit(sha(b"payload"), 8)
    assert visible(tmp_path) == []


def test_the_size_limit_is_enforced_while_writing(tmp_path: Path) -> None:
    store = FileArtifactStore(tmp_path)
    up = store.begin("j", 1, 10)
    up.write(0, b"123456")
    with pytest.raises(ValueError, match=r"larger than the limit \(12 bytes > 10\)"):
        up.write(6, b"789012")
    up.abort()
    assert visible(tmp_path) == []


def test_a_new_commit_replaces_the_old_one_and_latest_is_the_newest_attempt(
    tmp_path: Path,
) -> None:
    store = FileArtifactStore(tmp_path)
    upload(store, "j", 1, b"first")
    upload(store, "j", 3, b"third")
    upload(store, "j", 1, b"first, again")
    assert store.read("j", 1) == b"first, again"
    latest = store.latest("j")
    assert latest is not None and latest.attempt == 3
    assert store.latest("nobody") is None


def test_an_archive_without_sidecar_or_with_a_wrong_size_is_not_visible(tmp_path: Path) -> None:
    """What a crash between the renames (or a damaged file) leaves is never served."""
    store = FileArtifactStore(tmp_path)
    upload(store, "j", 1, b"archive")
    (tmp_path / "j" / "1.json").unlink()
    assert store.info("j", 1) is None and store.read("j", 1) == b""
    upload(store, "j", 2, b"archive")
    (tmp_path / "j" / "2.tar").write_bytes(b"trunc")
    assert store.info("j", 2) is None


def test_outputs_are_stored_replaced_and_read(tmp_path: Path) -> None:
    store = FileArtifactStore(tmp_path)
    assert store.outputs("j", 1) is None
    store.put_outputs("j", 1, b"A=1\n")
    store.put_outputs("j", 1, b"A=2\nB=3\n")
    assert store.outputs("j", 1) == b"A=2\nB=3\n"
    assert visible(tmp_path) == ["j/1.outputs"]


def test_expire_removes_what_is_older_and_keeps_the_rest(tmp_path: Path) -> None:
    store = FileArtifactStore(tmp_path)
    upload(store, "old", 1, b"old archive")
    store.put_outputs("old", 1, b"X=1\n")
    abandoned = store.begin("old", 2, 100)  # a crash's leftover temp file
    abandoned.write(0, b"half")
    past = time.time() - 3600
    meta_path = tmp_path / "old" / "1.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "created_at": past}))
    for path in (tmp_path / "old").iterdir():
        os.utime(path, (past, past))
    upload(store, "new", 1, b"new archive")
    store.put_outputs("new", 1, b"Y=1\n")
    assert store.expire(time.time() - 60) == 1
    assert visible(tmp_path) == ["new/1.json", "new/1.outputs", "new/1.tar"]
    assert not (tmp_path / "old").exists()
    assert store.expire(time.time() + 60) == 1
    assert visible(tmp_path) == []
    assert FileArtifactStore(tmp_path / "missing").expire(time.time()) == 0


@pytest.mark.parametrize("job_id", ["", ".", "..", "a/b", "../x", ".hidden", "a\x00"])
def test_unsafe_job_ids_are_refused(tmp_path: Path, job_id: str) -> None:
    store = FileArtifactStore(tmp_path)
    with pytest.raises(ValueError):
        store.begin(job_id, 1, 10)
    with pytest.raises(ValueError):
        store.put_outputs(job_id, 1, b"")


def test_a_disk_that_refuses_gives_a_store_error(tmp_path: Path) -> None:
    (tmp_path / "root").write_text("not a directory")
    store = FileArtifactStore(tmp_path / "root")
    with pytest.raises(StoreError, match="cannot"):
        store.begin("j", 1, 10)
    with pytest.raises(StoreError, match="cannot"):
        store.put_outputs("j", 1, b"A=1")
