"""A job's files beyond its output: input archives unpacked before it starts, its artifact
archive packed once it succeeded, and its outputs file (HODEI_OUTPUTS).

Everything the agent keeps for this lives in its spool, a private temp dir of its own: the
inputs as they arrive (`InputStaging`), archives until the server acks their result, and each
attempt's outputs file, named in the job's environment. The job runs as the agent's user, so
it could reach the spool; what it could do there it can do to itself anyway, and whatever
comes back is checked (the archive's sha256 is computed while it is written, the outputs file
is opened without following links and read up to a bound).

Paths may be patterns (hodei.agent.globs). Packing refuses what would leak or break on the
other side: a path that was not produced (a pattern that matches nothing), a symlink
(anywhere in the tree) that resolves outside the work dir, a special file; it stops as soon
as the archive would pass its size limit. Unpacking checks every member right before it
is written (no absolute names, no '..' out, no links out, no special or sparse files; modes
and owners as tarfile's "data" filter sets them), and uses that filter too where the Python
has it (3.11.4+; the worker image's may not).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import os
import shutil
import stat
import tarfile
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, BinaryIO, cast

from hodei.agent.globs import expand, is_glob
from hodei.domain.jobs import artifact_path_problem
from hodei.domain.masking import mask_all

MAX_OUTPUTS = 1024 * 1024
DEFAULT_MAX_ARTIFACT = 256 * 1024 * 1024  # when the assignment names no limit
_DATA_FILTER: dict[str, Any] = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}


class ArtifactError(Exception):
    """Why an attempt's files cannot be handled; the message is the attempt's failure."""


class Spool:
    """The agent's private temp dir (mode 0700), made on first use, removed by `close`."""

    def __init__(self) -> None:
        self._dir = ""

    def new_path(self, kind: str) -> str:
        """A fresh, unused path in the spool (nothing is created there)."""
        if not self._dir:
            self._dir = tempfile.mkdtemp(prefix="hodei-agent-")
        return os.path.join(self._dir, f"{kind}-{os.urandom(8).hex()}")

    def close(self) -> None:
        if self._dir:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = ""


def remove(path: str) -> None:
    """Remove a file or tree the job may have put at `path` (never following a link)."""
    try:
        os.unlink(path)
    except IsADirectoryError:
        shutil.rmtree(path, ignore_errors=True)
    except OSError:
        pass


# ---- the archive --------------------------------------------------------------------------


@dataclass(slots=True)
class Archive:
    """A packed artifact archive in the spool, kept until its attempt's result is acked."""

    path: str
    sha256: str
    size: int
    _fd: int = -1

    def read(self, offset: int, size: int) -> bytes:
        if self._fd < 0:
            self._fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        return os.pread(self._fd, size, offset)

    def discard(self) -> None:
        if self._fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = -1
        remove(self.path)


class _TooLarge(ArtifactError):
    pass


class _Sink:
    """The file tarfile writes to: hashes and counts every byte, refuses past the limit."""

    def __init__(self, f: BinaryIO, limit: int) -> None:
        self._f = f
        self._limit = limit
        self.hash = hashlib.sha256()
        self.size = 0

    def would_pass(self, more: int) -> None:
        if self.size + more > self._limit:
            raise _TooLarge(
                f"artifacts larger than the limit ({self.size + more} bytes > {self._limit})"
            )

    def write(self, data: bytes) -> int:
        self.would_pass(len(data))
        self._f.write(data)
        self.hash.update(data)
        self.size += len(data)
        return len(data)

    def tell(self) -> int:
        return self.size


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root + os.sep)


@dataclass(slots=True)
class _Packer:
    root: str  # the work dir, resolved
    tar: tarfile.TarFile
    sink: _Sink
    names: set[str] = field(default_factory=set)

    def add_path(self, given: str) -> None:
        problem = artifact_path_problem(given)
        if problem is not None:
            raise ArtifactError(problem)
        if not is_glob(given):
            self._add_named(given, os.path.normpath(given))
            return
        matches = expand(self.root, given)
        if not matches:
            raise ArtifactError(f"artifact {given} was not produced (nothing matches it)")
        for name in matches:
            self._add_named(given, name)

    def _add_named(self, given: str, name: str) -> None:
        full = os.path.join(self.root, name)
        try:
            st = os.lstat(full)
        except FileNotFoundError:
            raise ArtifactError(f"artifact {given} was not produced") from None
        except OSError as exc:
            raise ArtifactError(f"artifact {given} cannot be read: {exc.strerror}") from None
        if not _inside(os.path.realpath(os.path.dirname(full)), self.root):
            raise ArtifactError(f"artifact {given} is outside the work directory (a symlink)")
        self._add(given, name, full, st)

    def _add(self, given: str, name: str, full: str, st: os.stat_result) -> None:
        # Depth first, by name: the same tree always gives the same archive.
        stack = [(name, full, st)]
        while stack:
            name, full, st = stack.pop()
            if name not in self.names and name != ".":  # the work dir itself is no member
                self.names.add(name)
                self._member(given, name, full, st)
            if stat.S_ISDIR(st.st_mode):
                try:
                    entries = sorted(os.scandir(full), key=lambda e: e.name, reverse=True)
                except OSError as exc:
                    raise ArtifactError(f"artifact {given}: {name} cannot be read: {exc}") from None
                for entry in entries:
                    child = entry.name if name == "." else os.path.join(name, entry.name)
                    stack.append((child, entry.path, entry.stat(follow_symlinks=False)))

    def _member(self, given: str, name: str, full: str, st: os.stat_result) -> None:
        info = tarfile.TarInfo(name)
        info.mtime = int(st.st_mtime)
        info.mode = stat.S_IMODE(st.st_mode) & 0o755
        if stat.S_ISDIR(st.st_mode):
            info.type = tarfile.DIRTYPE
            self._put(info)
        elif stat.S_ISLNK(st.st_mode):
            info.type = tarfile.SYMTYPE
            info.linkname = self._link_target(given, name, full)
            self._put(info)
        elif stat.S_ISREG(st.st_mode):
            self._file(given, name, full, info)
        else:
            raise ArtifactError(
                f"artifact {given}: {name} is not a regular file, directory or symlink"
            )

    def _link_target(self, given: str, name: str, full: str) -> str:
        target = os.readlink(full)
        resolved = os.path.realpath(full)
        if not _inside(resolved, self.root):
            raise ArtifactError(
                f"artifact {given}: symlink {name} points outside the work directory"
            )
        if os.path.isabs(target):  # inside, but absolute: made relative to work anywhere
            return os.path.relpath(resolved, os.path.realpath(os.path.dirname(full)))
        return target

    def _file(self, given: str, name: str, full: str, info: tarfile.TarInfo) -> None:
        try:
            # No link followed and no FIFO waited on: what was checked is what is read.
            fd = os.open(full, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
        except OSError as exc:
            raise ArtifactError(
                f"artifact {given}: {name} cannot be read: {exc.strerror}"
            ) from None
        with os.fdopen(fd, "rb") as f:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode):
                raise ArtifactError(f"artifact {given}: {name} is not a regular file")
            info.size = st.st_size
            # Refused before its bytes are read when it cannot fit (header + padded data).
            self.sink.would_pass(tarfile.BLOCKSIZE + -(-st.st_size // 512) * 512)
            self.tar.addfile(info, f)

    def _put(self, info: tarfile.TarInfo) -> None:
        self.tar.addfile(info)


def pack(workdir: str, paths: Sequence[str], limit: int, dest: str) -> Archive:
    """Pack `paths` (relative to `workdir`) into one tar at `dest`; ArtifactError says why
    not (nothing is left at `dest` then). Blocking: run it in a thread."""
    root = os.path.realpath(workdir)
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        with os.fdopen(fd, "wb", buffering=256 * 1024) as f:
            sink = _Sink(f, limit)
            sink_file = cast(BinaryIO, sink)  # it has what tarfile writes with
            with tarfile.open(fileobj=sink_file, mode="w", format=tarfile.PAX_FORMAT) as tar:
                packer = _Packer(root, tar, sink)
                for path in paths:
                    packer.add_path(path)
    except BaseException as exc:
        remove(dest)
        if isinstance(exc, OSError):
            raise ArtifactError(f"artifacts cannot be packed: {exc.strerror or exc}") from exc
        raise
    return Archive(dest, sink.hash.hexdigest(), sink.size)


# ---- inputs -------------------------------------------------------------------------------


@dataclass(slots=True)
class StagedInput:
    """One input archive of an assignment: what the server said it is, and what came."""

    key: str
    sha256: str  # expected; empty: the server has no such archive
    size: int
    path: str = ""  # the received bytes, in the spool ("" when none came)
    received_sha256: str = ""
    received_size: int = 0
    complete: bool = False
    problem: str = ""  # why what came cannot be used

    def discard(self) -> None:
        if self.path:
            remove(self.path)


@dataclass(slots=True)
class _Incoming:
    path: str
    fd: int
    hash: Any = field(default_factory=hashlib.sha256)
    size: int = 0
    complete: bool = False
    problem: str = ""

    def close(self) -> None:
        if self.fd >= 0:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = -1


class InputStaging:
    """Input archives (ArtifactData) as they arrive, until the AssignJob after them claims
    them; by HWP's order, one that the next AssignJob with inputs does not claim is stale."""

    def __init__(self, spool: Spool) -> None:
        self._spool = spool
        self._incoming: dict[str, _Incoming] = {}

    def receive(self, key: str, offset: int, data: bytes, last: bool) -> None:
        entry = self._incoming.get(key)
        if offset == 0 or entry is None:
            if entry is not None:  # sent again from the start (a new stream)
                self._drop(key)
            path = self._spool.new_path("input")
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
            entry = self._incoming[key] = _Incoming(path, os.open(path, flags, 0o600))
            if offset != 0:
                entry.problem = "its first piece is missing"
        if entry.problem or entry.complete:
            return
        if offset != entry.size:
            entry.problem = f"a piece at offset {offset} came after {entry.size} bytes"
            return
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(entry.fd, view) :]
        except OSError as exc:
            entry.problem = f"it cannot be stored: {exc.strerror}"
            return
        entry.hash.update(data)
        entry.size += len(data)
        if last:
            entry.complete = True
            entry.close()

    def claim(self, wanted: Iterable[tuple[str, str, int]]) -> list[StagedInput]:
        """The inputs (key, sha256, size) of an AssignJob, with what came for each; whatever
        else is staged is discarded."""
        staged = []
        for key, sha256, size in wanted:
            item = StagedInput(key, sha256, size)
            entry = self._incoming.pop(key, None)
            if entry is not None:
                entry.close()
                item.path, item.received_size = entry.path, entry.size
                item.received_sha256 = entry.hash.hexdigest()
                item.complete, item.problem = entry.complete, entry.problem
            staged.append(item)
        self.clear()
        return staged

    def clear(self) -> None:
        for key in list(self._incoming):
            self._drop(key)

    def _drop(self, key: str) -> None:
        entry = self._incoming.pop(key)
        entry.close()
        remove(entry.path)


def _checked_member(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo:
    """The member as it may be written into `dest` (the "data" filter's rules, checked
    against the tree as it is now), or ArtifactError."""
    name = member.name
    if os.path.isabs(name) or name.startswith("/"):
        raise ArtifactError(f"{name!r} is an absolute path")
    if not _inside(os.path.realpath(os.path.join(dest, name)), dest):
        raise ArtifactError(f"{name!r} is outside the work directory")
    changes: dict[str, Any] = {"uid": os.geteuid(), "gid": os.getegid(), "uname": "", "gname": ""}
    if member.type in (tarfile.REGTYPE, tarfile.AREGTYPE) and member.sparse is None:
        mode = member.mode & 0o755
        changes["mode"] = (mode if mode & 0o100 else mode & ~0o111) | 0o600
    elif member.isdir():
        changes["mode"] = 0o755
    elif member.issym() or member.islnk():
        if os.path.isabs(member.linkname):
            raise ArtifactError(f"link {name!r} has an absolute target")
        base = os.path.dirname(name) if member.issym() else ""
        target = os.path.realpath(os.path.join(dest, base, member.linkname))
        if not _inside(target, dest):
            raise ArtifactError(f"link {name!r} points outside the work directory")
        changes["mode"] = 0o777 if member.issym() else 0o600
    else:
        raise ArtifactError(f"{name!r} is not a regular file, directory or link")
    checked = copy.copy(member)  # TarInfo.replace is 3.11.4+
    for attr, value in changes.items():
        setattr(checked, attr, value)
    return checked


def _unpack_one(item: StagedInput, dest: str) -> None:
    if not item.sha256:
        raise ArtifactError(f"input artifact {item.key} is missing (expired?)")
    if item.problem or not item.complete or not item.path:
        why = item.problem or "it did not arrive whole"
        raise ArtifactError(f"input artifact {item.key} is incomplete ({why})")
    if item.received_size != item.size or item.received_sha256 != item.sha256:
        raise ArtifactError(
            f"input artifact {item.key} is corrupt ({item.received_size} bytes with sha256 "
            f"{item.received_sha256}, expected {item.size} bytes with sha256 {item.sha256})"
        )
    try:
        with tarfile.open(item.path, mode="r:") as tar:
            for member in tar:
                if os.path.normpath(member.name) != ".":  # the work dir keeps its own mode
                    tar.extract(_checked_member(member, dest), dest, **_DATA_FILTER)
    except ArtifactError as exc:
        raise ArtifactError(f"input artifact {item.key} cannot be unpacked: {exc}") from None
    except (tarfile.TarError, OSError) as exc:
        raise ArtifactError(f"input artifact {item.key} cannot be unpacked: {exc}") from None


def unpack(inputs: Sequence[StagedInput], workdir: str) -> None:
    """Check and unpack each input into `workdir`, in order; ArtifactError at the first that
    cannot be. Blocking: run it in a thread."""
    dest = os.path.realpath(workdir)
    for item in inputs:
        _unpack_one(item, dest)


# ---- outputs ------------------------------------------------------------------------------


def read_outputs(path: str, secrets: Iterable[str]) -> bytes:
    """The job's outputs file (empty when it wrote none); ArtifactError when it cannot be
    sent: too large, not a plain file, or holding a secret's value (in any form the masker
    knows)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return b""
    except OSError as exc:
        raise ArtifactError(f"the outputs file cannot be read: {exc.strerror}") from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ArtifactError("the outputs file is not a regular file")
        data = f.read(MAX_OUTPUTS + 1)
    if len(data) > MAX_OUTPUTS:
        size = max(st.st_size, len(data))
        raise ArtifactError(f"outputs larger than the limit ({size} bytes > {MAX_OUTPUTS})")
    values = [s for s in secrets if s]
    if data and values and mask_all(data, values) != data:
        raise ArtifactError("outputs contain a secret's value")
    return data
