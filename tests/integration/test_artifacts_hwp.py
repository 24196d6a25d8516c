"""Artifacts, inputs and outputs over a real HWP stream: the server's WorkerService and core
(memory store, files for logs and artifacts) on a gRPC port, and a real agent session running
real jobs, connected through a TCP relay that a test can cut."""

from __future__ import annotations

import asyncio
import contextlib
import io
import tarfile
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from core_world import World, running_world

from hodei._proto.hodei.v1 import worker_pb2_grpc
from hodei.adapters.artifacts.files import FileArtifactStore
from hodei.adapters.providers.local import LocalProvider
from hodei.adapters.store.memory import MemoryJobStore
from hodei.agent import session as session_module
from hodei.agent.job_files import Finished
from hodei.agent.session import AgentSession
from hodei.domain.jobs import Job, JobState
from hodei.ports import ArtifactInfo, ArtifactUpload
from hodei.server.api.grpc.worker_service import WorkerService
from hodei.server.core.provisioning import Provisioner
from hodei.server.security.otp import OtpRegistry, ResumeTokens

LIMIT = 4 * 1024 * 1024
SECRET = "s3cr3t-Value-42"


class Relay:
    """A TCP relay on loopback; `cut_after(n)` aborts the connection once n bytes went from
    the agent to the server (once: the agent's reconnect passes). `upstream`: the bytes each
    connection carried from the agent."""

    def __init__(self, port: int) -> None:
        self.target = port
        self.port = 0
        self.connections = 0
        self.upstream: list[int] = []
        self._cut_at: int | None = None
        self._server: asyncio.Server | None = None
        self._links: set[asyncio.Task[None]] = set()

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for link in self._links:
            link.cancel()
        await asyncio.gather(*self._links, return_exceptions=True)

    def cut_after(self, upstream_bytes: int) -> None:
        self._cut_at = upstream_bytes

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.upstream.append(0)
        link = asyncio.create_task(self._link(reader, writer, len(self.upstream) - 1))
        self._links.add(link)
        with contextlib.suppress(asyncio.CancelledError):
            await link
        self._links.discard(link)

    async def _link(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, index: int
    ) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target)
        done = asyncio.Event()

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, up: bool) -> None:
            sent = 0
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
                    sent += len(data)
                    if not up:
                        continue
                    self.upstream[index] = sent
                    if self._cut_at is not None and sent >= self._cut_at:
                        self._cut_at = None
                        break
            except OSError:
                pass
            finally:
                done.set()

        tasks = [
            asyncio.create_task(pipe(reader, up_writer, True)),
            asyncio.create_task(pipe(up_reader, writer, False)),
        ]
        try:
            await done.wait()
        finally:
            for w in (writer, up_writer):
                w.transport.abort()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


class CountingStore(FileArtifactStore):
    """Records every upload begun (job, attempt) and how each ended."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.begun: list[tuple[str, int]] = []
        self.ended: list[str] = []

    def begin(self, job_id: str, attempt: int, max_bytes: int) -> Any:
        self.begun.append((job_id, attempt))
        return _Recorded(super().begin(job_id, attempt, max_bytes), self.ended)


class _Recorded:
    def __init__(self, inner: ArtifactUpload, ended: list[str]) -> None:
        self._inner = inner
        self._ended = ended

    def write(self, offset: int, data: bytes) -> None:
        self._inner.write(offset, data)

    def commit(self, sha256: str, size: int) -> ArtifactInfo:
        info = self._inner.commit(sha256, size)
        self._ended.append("committed")
        return info

    def abort(self) -> None:
        self._ended.append("aborted")
        self._inner.abort()


@dataclass
class Rig:
    world: World
    artifacts: CountingStore
    relay: Relay

    async def run(self, command: str, **fields: Any) -> Job:
        job = await self.world.submit(command, **fields)
        return await self.finished(job.id)

    async def finished(self, job_id: str, limit_s: float = 30.0) -> Job:
        deadline = time.monotonic() + limit_s
        while True:
            job = await self.world.job(job_id)
            if job.state.terminal:
                return job
            assert time.monotonic() < deadline, f"{job_id} still {job.state}"
            await asyncio.sleep(0.02)

    def log(self, job: Job) -> str:
        return self.world.hub.read(job.id, job.attempts).decode()


@contextlib.asynccontextmanager
async def rig(tmp_path: Path) -> AsyncIterator[Rig]:
    async with running_world(MemoryJobStore(), tmp_path) as world:
        await world.vault.put("TOKEN", SECRET)
        artifacts = CountingStore(tmp_path / "artifacts")
        otps = OtpRegistry()
        provider = LocalProvider(tmp_path / "run", lambda worker, code: None)
        provisioner = Provisioner(provider, otps, world.registry, world.bus, "", 0, 2, 30.0)
        service = WorkerService(
            otps,
            ResumeTokens(b"k" * 32),
            world.registry,
            world.reports,
            world.recovery,
            provisioner,
            world.passes,
            world.auditor,
            200,
            artifacts=artifacts,
            max_artifact_bytes=LIMIT,
        )
        server = grpc.aio.server()
        worker_pb2_grpc.add_WorkerServiceServicer_to_server(service, server)  # type: ignore[no-untyped-call]
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        relay = Relay(port)
        await relay.start()
        otp = otps.issue("w-1", 600)
        agent = AgentSession(
            f"127.0.0.1:{relay.port}", otp, {}, slots=2, cancel_grace_s=1.0, handle_signals=False
        )
        running = asyncio.create_task(agent.run())
        try:
            yield Rig(world, artifacts, relay)
        finally:
            agent.request_stop()
            await asyncio.wait_for(running, 20)
            await relay.stop()
            await server.stop(None)


def members(artifacts: FileArtifactStore, job_id: str) -> dict[str, bytes | str]:
    """name -> file bytes, or 'dir' / '-> target' for directories and symlinks."""
    out: dict[str, bytes | str] = {}
    with tarfile.open(fileobj=io.BytesIO(artifacts.read(job_id, 1))) as tar:
        for m in tar:
            if m.isdir():
                out[m.name] = "dir"
            elif m.issym():
                out[m.name] = f"-> {m.linkname}"
            else:
                f = tar.extractfile(m)
                assert f is not None
                out[m.name] = f.read()
    return out


PRODUCE = """
echo hello > out.txt
mkdir -p dir/sub
printf 'deep' > dir/sub/file.txt
ln -s sub/file.txt dir/link
echo "not an artifact" > other.txt
echo "VERSION=1.2.3" >> "$HODEI_OUTPUTS"
echo "NAME=build" >> "$HODEI_OUTPUTS"
"""

CONSUME = """
test "$(cat out.txt)" = hello
test "$(cat dir/sub/file.txt)" = deep
test -L dir/link && test "$(cat dir/link)" = deep
test ! -e other.txt
echo "seen: $(ls -A | tr '\\n' ' ')"
"""


async def test_artifacts_of_a_job_reach_the_job_that_takes_them_as_input(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        a = await r.run(PRODUCE, artifacts=("out.txt", "dir/"))
        assert a.state is JobState.SUCCEEDED, (a.reason, r.log(a))
        info = r.artifacts.info(a.id, 1)
        assert info is not None and info.size > 0
        assert members(r.artifacts, a.id) == {
            "out.txt": b"hello\n",
            "dir": "dir",
            "dir/link": "-> sub/file.txt",
            "dir/sub": "dir",
            "dir/sub/file.txt": b"deep",
        }
        assert r.artifacts.outputs(a.id, 1) == b"VERSION=1.2.3\nNAME=build\n"
        b = await r.run(CONSUME, inputs=(f"{a.id}/1",))
        assert b.state is JobState.SUCCEEDED, (b.reason, r.log(b))
        assert "seen: dir out.txt" in r.log(b)
        assert r.artifacts.info(b.id, 1) is None  # it declared none
        assert r.artifacts.outputs(b.id, 1) is None  # and wrote no outputs


async def test_a_missing_input_fails_the_attempt_before_it_starts(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        job = await r.run("touch ran", inputs=("nobody/1",))
        assert job.state is JobState.FAILED
        assert job.reason == "input artifact nobody/1 is missing (expired?)"
        assert job.exit_code == 125
        assert "input artifact nobody/1 is missing" in r.log(job)


async def test_outputs_holding_a_secret_fail_and_are_not_kept(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        plain = await r.run('echo "T=$TOKEN" >> "$HODEI_OUTPUTS"', secrets=("TOKEN",))
        encoded = await r.run(
            'echo "T=$(printf %s "$TOKEN" | base64)" >> "$HODEI_OUTPUTS"; exit 3',
            secrets=("TOKEN",),
        )
        for job, code in ((plain, 0), (encoded, 3)):
            assert job.state is JobState.FAILED
            assert job.reason == "outputs contain a secret's value"
            assert job.exit_code == code
            assert r.artifacts.outputs(job.id, 1) is None
            assert SECRET not in r.log(job)


async def test_outputs_of_a_failed_job_are_kept_too(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        job = await r.run('echo "STAGE=lint" >> "$HODEI_OUTPUTS"; exit 2', artifacts=("x",))
        assert job.state is JobState.FAILED and job.exit_code == 2
        assert job.reason == "exited with code 2"  # no archive asked of a failed job
        assert r.artifacts.outputs(job.id, 1) == b"STAGE=lint\n"
        assert r.artifacts.info(job.id, 1) is None


@pytest.mark.parametrize(
    ("command", "paths", "reason"),
    [
        ("mkdir build", ("dist/",), "artifact dist/ was not produced"),
        (
            "mkdir -p dist/deep && ln -s /etc dist/deep/etc",
            ("dist",),
            "artifact dist: symlink dist/deep/etc points outside the work directory",
        ),
        (
            "head -c 5000000 /dev/zero > big.bin",
            ("big.bin",),
            f"artifacts larger than the limit (5000704 bytes > {LIMIT})",
        ),
    ],
    ids=["missing", "symlink-out", "too-large"],
)
async def test_artifacts_that_cannot_be_packed_fail_the_attempt_with_the_reason(
    tmp_path: Path, command: str, paths: tuple[str, ...], reason: str
) -> None:
    async with rig(tmp_path) as r:
        job = await r.run(command, artifacts=paths)
        assert job.state is JobState.FAILED
        assert job.reason == reason
        assert job.exit_code == 0  # the job itself did well
        assert reason in r.log(job)
        assert r.artifacts.info(job.id, 1) is None and r.artifacts.begun == []


async def test_a_reconnect_in_the_middle_of_an_upload_sends_the_archive_again(
    tmp_path: Path,
) -> None:
    async with rig(tmp_path) as r:
        await r.run("true")  # connected, registered, settled
        before = r.relay.upstream[-1]
        r.relay.cut_after(before + 1536 * 1024)  # halfway through an archive of 3 MiB
        a = await r.run(
            "head -c 3000000 /dev/urandom > blob && sha256sum blob > blob.sha256",
            artifacts=("blob", "blob.sha256"),
        )
        assert a.state is JobState.SUCCEEDED, (a.reason, r.log(a))
        # The agent came back and sent the archive whole again, on the new connection.
        assert len(r.relay.upstream) == 2 and r.relay.upstream[1] > 3_000_000
        info = r.artifacts.info(a.id, 1)
        assert info is not None and info.size > 3_000_000
        # The server took in part of the first upload (aborted at the stream's end), or the
        # stream was gone before it read any of it; the resent one is committed.
        assert r.artifacts.begun in ([(a.id, 1)], [(a.id, 1), (a.id, 1)])
        assert r.artifacts.ended == ["aborted"] * (len(r.artifacts.begun) - 1) + ["committed"]
        assert not list((tmp_path / "artifacts").rglob(".*.tmp"))  # nothing half written left
        b = await r.run("sha256sum -c blob.sha256", inputs=(f"{a.id}/1",))
        assert b.state is JobState.SUCCEEDED, (b.reason, r.log(b))
        assert "blob: OK" in r.log(b)


async def test_a_corrupt_upload_fails_the_result_that_names_it(tmp_path: Path) -> None:
    async with rig(tmp_path) as r:
        corrupt: Callable[[bytes], bytes] = lambda data: data[:-1] + b"!"  # noqa: E731
        original = r.artifacts.begin

        def begin(job_id: str, attempt: int, max_bytes: int) -> Any:
            upload = original(job_id, attempt, max_bytes)
            write = upload.write
            upload.write = lambda offset, data: write(offset, corrupt(data))
            return upload

        r.artifacts.begin = begin  # type: ignore[method-assign]
        job = await r.run("echo data > f", artifacts=("f",))
        assert job.state is JobState.FAILED
        assert job.reason == "artifact upload incomplete or corrupt"
        assert r.artifacts.info(job.id, 1) is None
        assert r.artifacts.ended == []  # never committed, and nothing of it is left
        assert not [p for p in (tmp_path / "artifacts").rglob("*") if p.is_file()]


async def test_a_success_without_the_archive_it_owes_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An agent that knows nothing of artifacts (an older one) runs the job alone."""

    async def unaware(
        execute: Any, assign: Any, inputs: Any, spool: Any, *args: Any, **kw: Any
    ) -> Finished:
        return Finished(await execute(assign, *args, **kw))

    monkeypatch.setattr(session_module, "run_with_files", unaware)
    async with rig(tmp_path) as r:
        job = await r.run("echo data > f", artifacts=("f",))
        assert job.state is JobState.FAILED
        assert job.reason.startswith("no artifact archive came with the result")
        plain = await r.run("true")
        assert plain.state is JobState.SUCCEEDED
