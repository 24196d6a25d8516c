"""The server's edge for artifacts, on real files: uploads into the store (Intake), a result
naming its archive, and an assignment's inputs sent before it (StreamChannel)."""

from __future__ import annotations

import asyncio
import hashlib
import os
from pathlib import Path

from hodei._proto.hodei.v1 import worker_pb2 as pb
from hodei.adapters.artifacts.files import FileArtifactStore
from hodei.domain.work import Assignment
from hodei.server.api.grpc.artifacts import (
    DATA_CHUNK,
    INCOMPLETE,
    MAX_MESSAGE_INPUT_BYTES,
    Intake,
    result_problem,
)
from hodei.server.api.grpc.channel import StreamChannel


def chunks(job_id: str, data: bytes, size: int = 1000, sha: str = "") -> list[pb.ArtifactChunk]:
    out = []
    for offset in range(0, len(data), size):
        part = data[offset : offset + size]
        out.append(pb.ArtifactChunk(job_id=job_id, attempt=1, offset=offset, data=part))
    out[-1].last = True
    out[-1].sha256 = sha or hashlib.sha256(data).hexdigest()
    out[-1].size = len(data)
    return out


def stored(store: FileArtifactStore, job_id: str, data: bytes) -> None:
    upload = store.begin(job_id, 1, 1 << 30)
    upload.write(0, data)
    upload.commit(hashlib.sha256(data).hexdigest(), len(data))


def files(root: Path) -> list[str]:
    return sorted(p.name for p in root.rglob("*") if p.is_file())


def test_an_upload_is_committed_on_its_last_chunk(tmp_path: Path) -> None:
    store = FileArtifactStore(tmp_path)
    intake = Intake(store, "w", 1 << 20)
    data = os.urandom(3500)
    parts = chunks("j", data)
    intake.take(parts[:2])
    assert store.info("j", 1) is None
    intake.take(parts[2:])
    info = store.info("j", 1)
    assert info is not None and store.read("j", 1) == data
    good = pb.JobResult(job_id="j", attempt=1, artifact_sha256=info.sha256, artifact_bytes=3500)
    assert result_problem(store, good) == ""
    assert result_problem(store, pb.JobResult(job_id="j", attempt=1)) == ""  # names none


def test_a_bad_upload_is_dropped_and_its_result_fails(tmp_path: Path) -> None:
    store = FileArtifactStore(tmp_path)
    intake = Intake(store, "w", 1 << 20)
    data = b"x" * 2500
    intake.take(chunks("j", data, sha="0" * 64))
    assert store.info("j", 1) is None and files(tmp_path) == []
    named = pb.JobResult(
        job_id="j",
        attempt=1,
        artifact_sha256=hashlib.sha256(data).hexdigest(),
        artifact_bytes=len(data),
    )
    assert result_problem(store, named) == INCOMPLETE
    parts = chunks("k", data)
    intake.take([parts[0], parts[2]])  # a gap: dropped, and the rest of it ignored
    assert files(tmp_path) == []


def test_an_upload_past_the_limit_is_dropped(tmp_path: Path) -> None:
    store = FileArtifactStore(tmp_path)
    intake = Intake(store, "w", 2000)
    intake.take(chunks("j", b"y" * 2500))
    assert store.info("j", 1) is None and files(tmp_path) == []


def test_offset_zero_starts_an_upload_over(tmp_path: Path) -> None:
    store = FileArtifactStore(tmp_path)
    intake = Intake(store, "w", 1 << 20)
    data = os.urandom(2500)
    intake.take(chunks("j", os.urandom(2500))[:2])  # the first try, cut short
    intake.take(chunks("j", data))
    assert store.read("j", 1) == data


def test_closing_abandons_uploads_under_way(tmp_path: Path) -> None:
    store = FileArtifactStore(tmp_path)
    intake = Intake(store, "w", 1 << 20)
    intake.take(chunks("j", b"z" * 2500)[:2])
    assert files(tmp_path)  # its temp file
    intake.close()
    assert files(tmp_path) == []
    intake.take(chunks("k", b"z" * 10))  # a closed intake takes nothing more
    assert files(tmp_path) == []


# ---- inputs -------------------------------------------------------------------------------


def assignment(job_id: str, *inputs: str) -> Assignment:
    return Assignment(job_id=job_id, attempt=1, command="true", inputs=inputs)


async def drain(channel: StreamChannel) -> list[pb.ServerMessage]:
    """Every message the channel has to send (until it has none for a while)."""
    out: list[pb.ServerMessage] = []
    while True:
        try:
            msg = await asyncio.wait_for(channel.next_message(), 0.1)
        except TimeoutError:
            return out
        assert msg is not None
        out.append(msg)


async def test_inputs_leave_in_pieces_then_their_assignment(tmp_path: Path) -> None:
    store = FileArtifactStore(tmp_path)
    big = os.urandom(MAX_MESSAGE_INPUT_BYTES + DATA_CHUNK + 5)
    small = b"small archive"
    stored(store, "a", big)
    stored(store, "b", small)
    channel = StreamChannel("token", store, max_artifact_bytes=12345)
    channel.assign(assignment("plain"))
    channel.assign(assignment("x", "a/1", "b/1", "gone/1"))
    channel.assign(assignment("y", "b/1"))
    messages = await drain(channel)
    assert all(sum(len(d.data) for d in m.inputs) <= MAX_MESSAGE_INPUT_BYTES for m in messages)
    order = [(d.key, d.offset, d.last) for m in messages for d in m.inputs]
    assert [a.job_id for m in messages for a in m.assignments] == ["plain", "x", "y"]
    # Each assignment with inputs comes after all of its data, and is the last of its message.
    for m in messages:
        if any(a.inputs for a in m.assignments):
            assert m.assignments[-1].inputs and sum(bool(a.inputs) for a in m.assignments) == 1
    # What an agent staging the data of each message before its assignments would hold.
    received: dict[str, dict[str, bytes]] = {}
    staged: dict[str, bytes] = {}
    for m in messages:
        for d in m.inputs:
            staged[d.key] = staged.get(d.key, b"") + d.data
        for a in m.assignments:
            if a.inputs:
                received[a.job_id], staged = staged, {}
    assert received == {"x": {"a/1": big, "b/1": small}, "y": {"b/1": small}}
    assert [k for k, _, last in order if last] == ["a/1", "b/1", "b/1"]  # "gone/1" has none
    x = next(a for m in messages for a in m.assignments if a.job_id == "x")
    assert [(i.key, i.sha256, i.size) for i in x.inputs] == [
        ("a/1", hashlib.sha256(big).hexdigest(), len(big)),
        ("b/1", hashlib.sha256(small).hexdigest(), len(small)),
        ("gone/1", "", 0),
    ]
    assert x.max_artifact_bytes == 12345


async def mid_transfer(tmp_path: Path) -> StreamChannel:
    """A channel part way through sending the inputs of assignment "x" (three messages of
    data for "a/1"): its first message, only data, is sent; the assignment is not."""
    store = FileArtifactStore(tmp_path)
    stored(store, "a", os.urandom(3 * MAX_MESSAGE_INPUT_BYTES))
    channel = StreamChannel("token", store)
    channel.assign(assignment("x", "a/1"))
    first = await channel.next_message()
    assert first is not None and first.inputs and not first.assignments
    return channel


async def test_an_assignment_taken_back_during_its_transfer_never_leaves(tmp_path: Path) -> None:
    channel = await mid_transfer(tmp_path)
    assert channel.unassign("x", 1)
    assert not channel.unassign("x", 1)
    channel.assign(assignment("y", "a/1"))
    channel.drop_assignments()  # a resumed stream decides again
    assert not [m for m in await drain(channel) if m.inputs or m.assignments]


async def test_a_new_stream_starts_a_transfer_over(tmp_path: Path) -> None:
    store = FileArtifactStore(tmp_path)
    data = os.urandom(2 * MAX_MESSAGE_INPUT_BYTES)
    stored(store, "a", data)
    channel = StreamChannel("token", store)
    channel.assign(assignment("x", "a/1"))
    first = await channel.next_message()
    assert first is not None and first.inputs[0].offset == 0
    channel.close()
    channel.reopen()
    again = await channel.next_message(channel.generation)
    assert again is not None and again.inputs[0].offset == 0


async def test_without_a_store_every_input_is_missing() -> None:
    channel = StreamChannel("token")
    channel.assign(assignment("x", "a/1"))
    (msg,) = await drain(channel)
    assert not msg.inputs
    assert [(i.key, i.sha256) for i in msg.assignments[0].inputs] == [("a/1", "")]


async def test_a_cancel_never_overtakes_the_assignment_it_is_for(tmp_path: Path) -> None:
    channel = await mid_transfer(tmp_path)
    channel.cancel("x", 1, 500, "cancelled by user")
    channel.cancel("other", 1, 0, "stale")
    (msg,) = await drain(channel)  # no more of its data: the assignment, then its cancel
    assert not msg.inputs
    assert [a.job_id for a in msg.assignments] == ["x"]
    assert [(c.job_id, c.grace_ms) for c in msg.cancels] == [("other", 0), ("x", 500)]
