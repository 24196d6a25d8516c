"""The log hub: dedup by sequence, byte offsets, live followers woken from memory."""

from __future__ import annotations

import asyncio
from pathlib import Path

from hodei.adapters.logs.files import FileLogStore
from hodei.domain.jobs import Job, JobSpec, JobState
from hodei.server.http_api import utf8_cut
from hodei.server.loghub import LogHub


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
