"""Artifact archives over HWP, at the server's edge.

`Intake` takes the ArtifactChunks a worker sends into the ArtifactStore: an upload begins at
offset 0 (offset 0 again starts it over: the agent resends an archive whole after a
reconnect) and is committed, size and sha256 checked, on its last chunk. An upload that does
not check out is dropped and logged; the result that names it then fails (`result_problem`).

`InputTransfer` is the other way: the input archives of one assignment, read from the store a
piece at a time as the stream's messages are made (so memory stays bounded by one message),
followed by the AssignJob itself. An input the store does not have is named with an empty
sha256, and the agent fails the attempt before it starts.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from hodei._proto.hodei.v1 import worker_pb2 as pb
from hodei.domain.jobs import parse_input_key
from hodei.domain.work import Assignment
from hodei.errors import HodeiError
from hodei.ports import ArtifactStore, ArtifactUpload

log = logging.getLogger(__name__)

DATA_CHUNK = 256 * 1024
MAX_MESSAGE_INPUT_BYTES = 1024 * 1024  # input data per ServerMessage
INCOMPLETE = "artifact upload incomplete or corrupt"

_Key = tuple[str, int]


class Intake:
    """The uploads of one stream (see the module docstring). `take` blocks (file writes,
    fsync on commit): it is called in a thread, one call at a time; `close` may come from
    another thread meanwhile (the stream's end), and never waits for it."""

    def __init__(self, store: ArtifactStore, worker_id: str, max_bytes: int) -> None:
        self._store = store
        self._worker = worker_id
        self._max = max_bytes
        self._uploads: dict[_Key, ArtifactUpload] = {}
        self._lock = threading.Lock()
        self._busy = False  # a take is under way: it aborts what is left if closed meanwhile
        self._closed = False

    def take(self, chunks: Sequence[pb.ArtifactChunk]) -> None:
        """Chunks of attempts this worker holds, in order."""
        with self._lock:
            if self._closed:
                return
            self._busy = True
        try:
            self._take(chunks)
        finally:
            with self._lock:
                self._busy = False
                if self._closed:
                    self._abort_all()

    def _take(self, chunks: Sequence[pb.ArtifactChunk]) -> None:
        for chunk in chunks:
            if self._closed:
                return
            key = (chunk.job_id, chunk.attempt)
            upload = self._uploads.get(key)
            try:
                if upload is None:
                    if chunk.offset != 0:
                        continue  # the rest of an upload already dropped
                    upload = self._store.begin(chunk.job_id, chunk.attempt, self._max)
                    self._uploads[key] = upload
                upload.write(chunk.offset, chunk.data)
                if chunk.last:
                    del self._uploads[key]
                    info = upload.commit(chunk.sha256, chunk.size)
                    log.debug("artifacts of %s/%d kept (%d bytes)", *key, info.size)
            except (ValueError, HodeiError) as exc:
                self._drop(key, str(exc))

    def _drop(self, key: _Key, why: str) -> None:
        upload = self._uploads.pop(key, None)
        if upload is not None:
            upload.abort()
        job_id, attempt = key
        log.warning(
            "artifacts of job %s attempt %d from worker %s dropped: %s",
            job_id,
            attempt,
            self._worker,
            why,
        )

    def close(self) -> None:
        """The stream is gone: uploads under way are abandoned (the agent sends them again
        whole if it comes back)."""
        with self._lock:
            self._closed = True
            if not self._busy:
                self._abort_all()

    def _abort_all(self) -> None:
        while self._uploads:
            _, upload = self._uploads.popitem()
            upload.abort()


def result_problem(store: ArtifactStore, result: pb.JobResult) -> str:
    """Why a result naming an archive cannot stand (that archive is not the one stored), or
    "" when it names none or the right one."""
    if not result.artifact_sha256:
        return ""
    try:
        info = store.info(result.job_id, result.attempt)
    except ValueError:
        info = None
    if info is None or (info.sha256, info.size) != (result.artifact_sha256, result.artifact_bytes):
        return INCOMPLETE
    return ""


def input_of(store: ArtifactStore | None, key: str) -> pb.ArtifactInput:
    """What the store has for an input key "JOB_ID/ATTEMPT" (an empty sha256: nothing)."""
    info = None
    if store is not None:
        try:
            info = store.info(*parse_input_key(key))
        except ValueError:
            info = None
    if info is None:
        return pb.ArtifactInput(key=key)
    return pb.ArtifactInput(key=key, sha256=info.sha256, size=info.size)


@dataclass(slots=True)
class InputTransfer:
    """One assignment's inputs on their way, in order, then the assignment."""

    assignment: Assignment
    inputs: list[pb.ArtifactInput]
    generation: int  # of the stream it is sent on: a new stream starts it over
    index: int = 0  # the input being sent
    offset: int = 0
    cancel: pb.CancelJob | None = None  # cancelled meanwhile: no more data, this follows it

    @classmethod
    def of(
        cls, assignment: Assignment, store: ArtifactStore | None, generation: int
    ) -> InputTransfer:
        return cls(assignment, [input_of(store, key) for key in assignment.inputs], generation)

    def restart(self, generation: int) -> None:
        self.generation, self.index, self.offset = generation, 0, 0

    def fill(self, store: ArtifactStore | None, out: pb.ServerMessage) -> bool:
        """Add input data (within the per-message budget) to `out`; True once all is added."""
        if self.cancel is not None:
            return True  # the agent will not unpack it: the assignment and its cancel go now
        budget = MAX_MESSAGE_INPUT_BYTES
        while self.index < len(self.inputs) and budget > 0:
            item = self.inputs[self.index]
            if not item.sha256 or store is None:
                self.index += 1  # nothing to send: the agent fails the attempt
                continue
            size = min(DATA_CHUNK, item.size - self.offset, budget)
            data = self._read(store, item.key, size) if size > 0 else b""
            last = not data or self.offset + len(data) >= item.size
            out.inputs.add(key=item.key, offset=self.offset, data=data, last=last)
            self.offset += len(data)
            budget -= max(1, len(data))
            if last:
                self.index, self.offset = self.index + 1, 0
        return self.index >= len(self.inputs)

    def _read(self, store: ArtifactStore, key: str, size: int) -> bytes:
        try:
            return store.read(*parse_input_key(key), self.offset, size)
        except (ValueError, HodeiError) as exc:  # sent short: the agent sees it is not whole
            log.error("input artifact %s cannot be read: %s", key, exc)
            return b""
