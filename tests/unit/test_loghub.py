"""The log hub: dedup by sequence, byte offsets, live followers woken from memory."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from hodei.adapters.logs.files import FileLogStore
from hodei.domain.jobs import Job, JobSpec, JobState
from hodei.errors import StoreError
from hodei.server.api.http.logs import utf8_cut
from hodei.server.core.bus import EventBus, LogGrew
from hodei.server.core.loghub import LogHub


async def test_append_dedups_resent_sequences(tmp_path: Path) -> None:
    hub = LogHub(FileLogStore(tmp_path))
    assert hub.append("j1", 1, 1, 0, b"hello ")
    assert hub.append("j1", 1, 2, 6, b"world\n")
    assert not hub.append("j1", 1, 2, 6, b"world\n")  # a resend after reconnect
    assert hub.read("j1", 1) == b"hello world\n"
    assert hub.read("j1", 1, 6) == b"world\n"
    assert hub.size("j1", 1) == 12 and hub.last_seq("j1", 1) == 2
    hub.seal("j1", 1)
    assert hub.read("j1", 1, 6, 3) == b"wor"


async def test_follower_gets_live_bytes_then_ends_when_the_attempt_is_over(
    tmp_path: Path,
) -> None:
    hub = LogHub(FileLogStore(tmp_path))
    hub.append("j2", 1, 1, 0, b"a")
    live = hub.open("j2", 1)
    got: list[tuple[int, bytes]] = []

    async def follow() -> None:
        async for item in hub.follow("j2", 1, live, 0, wait=True):
            got.append(item)

    task = asyncio.create_task(follow())
    await asyncio.sleep(0.01)
    hub.append("j2", 1, 2, 1, b"bc")
    await asyncio.sleep(0.01)
    assert got == [(1, b"a"), (3, b"bc")]
    job = Job(id="j2", spec=JobSpec(command="x"), state=JobState.SUCCEEDED, attempts=1)
    hub.job_changed(job)
    await asyncio.wait_for(task, 2)
    assert not task.exception()


def test_utf8_cut_never_splits_a_character() -> None:
    text = "añ€😀".encode()
    assert utf8_cut(text) == len(text)
    for cut in range(len(text)):
        keep = utf8_cut(text[:cut])
        text[:keep].decode()  # must not raise
        assert cut - keep < 4


async def test_resends_after_a_restart_are_cut_by_offset(tmp_path: Path) -> None:
    hub = LogHub(FileLogStore(tmp_path))
    hub.append("j3", 1, 1, 0, b"abc")
    hub.close()
    again = LogHub(FileLogStore(tmp_path))  # a new server: no memory of sequences
    assert not again.append("j3", 1, 1, 0, b"abc")
    assert again.append("j3", 1, 2, 1, b"bcdef")  # overlaps: only "def" is new
    assert again.read("j3", 1) == b"abcdef" and again.last_seq("j3", 1) == 2


async def test_a_log_another_server_writes_is_followed_from_the_shared_store(
    tmp_path: Path,
) -> None:
    bus = EventBus()
    writer = LogHub(FileLogStore(tmp_path), bus)  # the server whose worker runs the job
    reader = LogHub(FileLogStore(tmp_path))  # another server, same log directory
    grown: list[tuple[str, int, int]] = []
    bus.subscribe(LogGrew, lambda e: grown.append((e.job_id, e.attempt, e.size)))
    writer.append("r1", 1, 1, 0, b"one\n")
    live = reader.open("r1", 1)
    got: list[bytes] = []

    async def follow() -> None:
        async for _, data in reader.follow("r1", 1, live, 0, wait=True):
            got.append(data)

    task = asyncio.create_task(follow())
    await asyncio.sleep(0.01)
    writer.append("r1", 1, 2, 4, b"two\n")
    reader.remote_appended(*grown[-1])  # what the cluster event delivers
    await asyncio.sleep(0.01)
    assert b"".join(got) == b"one\ntwo\n"
    writer.append("r1", 1, 3, 8, b"three\n")  # its event is late: the end still reads all
    done = Job("r1", JobSpec(command="x"), state=JobState.SUCCEEDED, attempts=1)
    reader.job_changed(done)
    await asyncio.wait_for(task, 2)
    assert b"".join(got) == b"one\ntwo\nthree\n"
    assert grown == [("r1", 1, 4), ("r1", 1, 8), ("r1", 1, 14)]
    assert reader.read("r1", 1, 1 << 40) == b""


def test_a_chunk_the_store_refuses_is_not_counted_as_stored(tmp_path: Path) -> None:
    class Full(FileLogStore):
        full = False

        def append(self, job_id: str, attempt: int, data: bytes) -> int:
            if self.full:
                raise StoreError("No space left on device")
            return super().append(job_id, attempt, data)

    store = Full(tmp_path)
    hub = LogHub(store)
    hub.append("f1", 1, 1, 0, b"one\n")
    store.full = True
    with pytest.raises(StoreError):
        hub.append("f1", 1, 2, 4, b"two\n")
    assert hub.last_seq("f1", 1) == 1
    store.full = False
    assert not hub.append("f1", 1, 1, 0, b"one\n")  # a resend of what is stored
    assert hub.last_seq("f1", 1) == 1  # its ack must not cover the refused chunk 2
    assert hub.append("f1", 1, 2, 4, b"two\n") and hub.last_seq("f1", 1) == 2
    assert hub.read("f1", 1) == b"one\ntwo\n"
