"""Outbox: coalescing, sequence numbers, ordering, acks, resend and backpressure; artifact
archives before their results."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

import pytest

from hodei._proto.hodei.v1 import worker_pb2
from hodei.agent.artifacts import Archive
from hodei.agent.outbox import (
    ARTIFACT_CHUNK,
    MAX_MESSAGE_ARTIFACT_BYTES,
    MAX_MESSAGE_OUTPUTS_BYTES,
    Outbox,
)


def result(job_id: str = "j", attempt: int = 1, code: int = 0) -> worker_pb2.JobResult:
    return worker_pb2.JobResult(job_id=job_id, attempt=attempt, exit_code=code)


def fake_clock() -> int:
    return 42


async def test_small_writes_coalesce_into_one_chunk() -> None:
    box = Outbox(clock=fake_clock)
    box.add_log("j", 1, b"a\n")
    box.add_log("j", 1, b"b\n")
    msg = await box.next_message()
    assert [(c.data, c.sequence, c.timestamp_ns) for c in msg.logs] == [(b"a\nb\n", 1, 42)]
    assert not box.has_pending()


async def test_big_write_becomes_several_chunks_in_one_message() -> None:
    box = Outbox()
    box.add_log("j", 1, b"x" * 10_000)
    msg = await box.next_message()
    assert [len(c.data) for c in msg.logs] == [4096, 4096, 1808]
    assert [c.sequence for c in msg.logs] == [1, 2, 3]


async def test_sequences_are_per_job_attempt_and_continue() -> None:
    box = Outbox()
    box.add_log("j", 1, b"a")
    box.add_log("k", 1, b"b")
    box.add_log("j", 2, b"c")
    first = await box.next_message()
    box.add_log("j", 1, b"d")
    second = await box.next_message()
    assert [(c.job_id, c.attempt, c.sequence) for c in first.logs] == [
        ("j", 1, 1),
        ("k", 1, 1),
        ("j", 2, 1),
    ]
    assert [(c.job_id, c.sequence, c.data) for c in second.logs] == [("j", 2, b"d")]


async def test_result_follows_its_logs_with_last_sequence() -> None:
    box = Outbox()
    box.add_log("j", 1, b"x" * 5000)
    box.add_update("j", 1, worker_pb2.JobStatusUpdate.STARTED, pid=7)
    box.add_result(result(code=4))
    msg = await box.next_message()
    assert len(msg.logs) == 2
    assert msg.updates[0].pid == 7
    assert msg.results[0].exit_code == 4
    assert msg.results[0].last_sequence == 2
    assert msg.results[0].timestamp_ns > 0


async def test_result_waits_until_all_logs_are_sent() -> None:
    box = Outbox(max_message_bytes=8192)
    box.add_log("j", 1, b"x" * 20_000)
    box.add_result(result())
    sizes = []
    while True:
        msg = await box.next_message()
        sizes.append(sum(len(c.data) for c in msg.logs))
        if msg.results:
            break
    assert sizes == [8192, 8192, 3616]
    assert msg.results[0].last_sequence == 5


async def test_result_without_logs() -> None:
    box = Outbox()
    box.add_result(result(code=1))
    msg = await box.next_message()
    assert msg.results[0].last_sequence == 0


async def test_next_message_waits_then_sends_at_once() -> None:
    box = Outbox()
    waiter = asyncio.ensure_future(box.next_message())
    await asyncio.sleep(0.01)
    assert not waiter.done()
    box.add_log("j", 1, b"hi")
    msg = await asyncio.wait_for(waiter, 1)
    assert msg.logs[0].data == b"hi"


async def test_batches_while_a_send_is_in_flight() -> None:
    box = Outbox()
    sent: list[worker_pb2.AgentMessage] = []
    release = asyncio.Event()

    async def sender() -> None:
        while len(sent) < 2:
            msg = await box.next_message()
            sent.append(msg)
            await release.wait()  # a slow write: the stream is busy

    task = asyncio.create_task(sender())
    box.add_log("j", 1, b"first")
    await asyncio.sleep(0.01)
    for i in range(10):
        box.add_log("j", 1, b"%d" % i)
        box.add_result(result(f"r{i}"))
    release.set()
    await asyncio.wait_for(task, 1)
    assert sent[0].logs[0].data == b"first"
    assert sent[1].logs[0].data == b"0123456789"
    assert len(sent[1].results) == 10


async def test_heartbeat_latest_wins() -> None:
    box = Outbox()
    box.set_heartbeat(worker_pb2.ResourceUsage(cpu_percent=1))
    box.set_heartbeat(worker_pb2.ResourceUsage(cpu_percent=2))
    msg = await box.next_message()
    assert msg.heartbeat.usage.cpu_percent == 2


async def test_acks_forget_and_unacked_keeps_the_rest() -> None:
    box = Outbox(chunk_size=2)
    box.add_log("j", 1, b"aabbcc")
    box.add_result(result())
    await box.next_message()
    box.ack_logs("j", 1, 2)
    pending = box.unacked()
    assert [c.sequence for c in pending.logs] == [3]
    assert [r.job_id for r in pending.results] == ["j"]
    assert not box.settled()
    box.ack_result("j", 1)
    assert box.unacked() == worker_pb2.AgentMessage()
    assert box.settled()


async def test_rewind_resends_same_sequences_before_new_output() -> None:
    box = Outbox(chunk_size=2)
    box.add_log("j", 1, b"aabb")
    await box.next_message()
    box.ack_logs("j", 1, 1)
    box.add_log("j", 1, b"cc")
    box.rewind()
    msg = await box.next_message()
    assert [(c.sequence, c.data) for c in msg.logs] == [(2, b"bb"), (3, b"cc")]
    # A result sent before the reconnect goes again too.
    box.add_result(result())
    await box.next_message()
    box.rewind()
    again = await box.next_message()
    assert [r.last_sequence for r in again.results] == [3]


async def test_at_the_bound_nothing_is_dropped_and_the_producer_is_told_to_wait() -> None:
    box = Outbox(chunk_size=100, max_job_bytes=1000)
    assert box.add_log("j", 1, b"a" * 800) is None
    await box.next_message()  # 800 bytes sent, unacked
    room = box.add_log("j", 1, b"b" * 600)  # over the bound: kept all the same, and a wait
    assert room is not None and not room.done()
    assert box.add_log("j", 1, b"c" * 50) is room  # given anyway: kept, same wait
    assert box.buffered("j", 1) == 1450
    msg = await box.next_message()
    assert b"".join(c.data for c in msg.logs) == b"b" * 600 + b"c" * 50
    box.ack_logs("j", 1, 4)  # 400 acked: 1050 still held, still at the bound
    assert not room.done()
    box.ack_logs("j", 1, 8)  # 800 acked: 650 held
    assert room.done()
    assert box.buffered("j", 1) == 650
    assert box.add_log("j", 1, b"d") is None
    data = b"".join(c.data for c in box.unacked().logs)
    assert data == b"b" * 600 + b"c" * 50  # every byte, in order, nothing dropped


async def test_the_bound_counts_unsent_and_rewound_bytes_and_a_result_ack_frees_it() -> None:
    box = Outbox(chunk_size=100, max_job_bytes=500)
    room = box.add_log("j", 1, b"x" * 500)  # unsent bytes count too
    assert room is not None
    await box.next_message()
    box.rewind()  # to send again: still held
    assert box.buffered("j", 1) == 500 and not room.done()
    again = await box.next_message()
    assert [c.sequence for c in again.logs] == [1, 2, 3, 4, 5]
    box.ack_result("j", 1)  # the attempt is settled: nothing to wait for
    assert room.done()
    assert box.buffered("j", 1) == 0


async def test_the_bound_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HODEI_AGENT_MAX_UNACKED", "1M")
    assert Outbox().max_job_bytes == 1 << 20
    assert Outbox(max_job_bytes=300).max_job_bytes == 300
    monkeypatch.setenv("HODEI_AGENT_MAX_UNACKED", "lots")
    assert Outbox().max_job_bytes == 64 << 20
    monkeypatch.delenv("HODEI_AGENT_MAX_UNACKED")
    assert Outbox().max_job_bytes == 64 << 20


async def test_wait_settled() -> None:
    box = Outbox()
    assert await box.wait_settled(0.01)
    box.add_result(result())
    assert not await box.wait_settled(0.01)
    await box.next_message()
    asyncio.get_running_loop().call_later(0.01, box.ack_result, "j", 1)
    assert await box.wait_settled(1)


async def test_a_chatty_job_does_not_starve_others() -> None:
    box = Outbox(max_message_bytes=4096)
    box.add_log("big", 1, b"x" * 100_000)
    box.add_log("small", 1, b"hello")
    first = await box.next_message()
    second = await box.next_message()
    assert {c.job_id for c in first.logs} == {"big"}
    assert [c.job_id for c in second.logs] == ["small", "big"]


def archive_of(tmp_path: Path, data: bytes, name: str = "archive.tar") -> Archive:
    path = tmp_path / name
    path.write_bytes(data)
    return Archive(str(path), hashlib.sha256(data).hexdigest(), len(data))


def chunks_of(msg: worker_pb2.AgentMessage) -> list[tuple[int, int, bool]]:
    return [(c.offset, len(c.data), c.last) for c in msg.artifacts]


def test_an_archive_leaves_in_chunks_before_its_result(tmp_path: Path) -> None:
    data = os.urandom(ARTIFACT_CHUNK * 5 + 10)
    archive = archive_of(tmp_path, data)
    box = Outbox()
    box.add_log("j", 1, b"done\n")
    box.add_result(result(), archive)
    first = box.take()  # one message carries at most MAX_MESSAGE_ARTIFACT_BYTES of it
    assert [c.data for c in first.logs] == [b"done\n"]
    assert chunks_of(first) == [(i * ARTIFACT_CHUNK, ARTIFACT_CHUNK, False) for i in range(4)]
    assert sum(len(c.data) for c in first.artifacts) == MAX_MESSAGE_ARTIFACT_BYTES
    assert not first.results
    second = box.take()
    assert chunks_of(second) == [
        (4 * ARTIFACT_CHUNK, ARTIFACT_CHUNK, False),
        (5 * ARTIFACT_CHUNK, 10, True),
    ]
    last = second.artifacts[-1]
    assert (last.sha256, last.size) == (archive.sha256, len(data))
    assert b"".join(c.data for c in [*first.artifacts, *second.artifacts]) == data
    assert [r.job_id for r in second.results] == ["j"]  # after its last chunk
    assert not box.has_pending()


def test_after_a_reconnect_the_archive_goes_again_whole_then_the_result(
    tmp_path: Path,
) -> None:
    archive = archive_of(tmp_path, b"x" * (ARTIFACT_CHUNK + 1))
    box = Outbox()
    box.add_result(result(), archive)
    box.take()  # sent whole, with the result; not acked yet
    box.rewind()
    again = box.take()
    assert chunks_of(again) == [(0, ARTIFACT_CHUNK, False), (ARTIFACT_CHUNK, 1, True)]
    assert [r.job_id for r in again.results] == ["j"]
    box.add_result(result("k"), archive_of(tmp_path, b"y", "other.tar"))  # another attempt's
    half = box.take()
    box.rewind()  # the other one had only begun: it starts over too
    assert chunks_of(box.take()) == [
        (0, ARTIFACT_CHUNK, False),
        (ARTIFACT_CHUNK, 1, True),
        (0, 1, True),
    ]
    assert half.artifacts


def test_a_result_ack_discards_the_archive(tmp_path: Path) -> None:
    archive = archive_of(tmp_path, b"data")
    box = Outbox()
    box.add_result(result(), archive)
    box.take()
    assert os.path.exists(archive.path) and box.held() == [("j", 1)]
    box.ack_result("j", 1)
    assert not os.path.exists(archive.path)
    box.rewind()
    assert not box.has_pending() and box.settled()


def test_results_with_big_outputs_are_spread_over_messages() -> None:
    box = Outbox()
    outputs = b"X=" + b"y" * (1024 * 1024 - 3) + b"\n"
    count = MAX_MESSAGE_OUTPUTS_BYTES // len(outputs) + 2
    for i in range(count):
        box.add_result(worker_pb2.JobResult(job_id=f"j{i}", attempt=1, outputs=outputs))
    sizes = []
    while box.has_pending():
        sizes.append(len(box.take().results))
    assert sum(sizes) == count and len(sizes) == 2
    assert sizes[0] * len(outputs) <= MAX_MESSAGE_OUTPUTS_BYTES + len(outputs)
