"""FileArtifactStore: artifact archives and outputs of job attempts as files.

Layout under the root, per attempt: `<job_id>/<attempt>.tar` (the archive),
`<job_id>/<attempt>.json` (its sidecar: sha256, size, created_at) and `<job_id>/<attempt>.outputs`.

An archive is received into a hidden temp file in its job's directory, checked, fsync'd, and
only then renamed into place, its sidecar last: the sidecar is what makes an archive visible,
so a crash at any point leaves either the old state or the new one, never half an archive
(a temp file left by a crash is removed by `expire`). Outputs are written the same way.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import time
from pathlib import Path

from hodei.errors import StoreError
from hodei.ports import ArtifactInfo

_TMP_PREFIX = "."  # temp files are hidden: no reader ever takes one for an archive


def _check_job_id(job_id: str) -> str:
    # The id becomes a directory name: refuse anything that could escape the root.
    if (
        not isinstance(job_id, str)
        or job_id in ("", ".")
        or job_id.startswith(_TMP_PREFIX)
        or ".." in job_id
        or any(c in job_id for c in ("/", "\\", "\x00"))
    ):
        raise ValueError(f"invalid job id for an artifact path: {job_id!r}")
    return job_id


def _check_attempt(attempt: int) -> int:
    if isinstance(attempt, bool) or not isinstance(attempt, int) or attempt < 0:
        raise ValueError(f"invalid attempt number: {attempt!r}")
    return attempt


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _store_error(what: str, exc: OSError) -> StoreError:
    return StoreError(f"cannot {what}: {exc.strerror or exc}")


class _FileUpload:
    """One archive being received: see ArtifactUpload. Not thread-safe (one writer)."""

    def __init__(self, store: FileArtifactStore, job_id: str, attempt: int, max_bytes: int):
        self._store = store
        self._job_id = job_id
        self._attempt = attempt
        self._max = max_bytes
        self._dir = store.job_dir(job_id)
        self._tmp = self._dir / f"{_TMP_PREFIX}{attempt}.tar.{secrets.token_hex(4)}.tmp"
        self._hash = hashlib.sha256()
        self._written = 0
        try:
            store.make_job_dir(self._dir)
            flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
            self._fd: int | None = os.open(self._tmp, flags, 0o600)
        except OSError as exc:
            raise _store_error(f"start artifact {job_id}/{attempt}", exc) from exc

    def write(self, offset: int, data: bytes) -> None:
        if self._fd is None:
            raise ValueError("the upload is over")
        if offset != self._written:
            if offset != 0:
                raise ValueError(f"offset {offset} is not the {self._written} bytes written")
            self._restart()
        if self._written + len(data) > self._max:
            raise ValueError(
                f"artifact larger than the limit ({self._written + len(data)} bytes > {self._max})"
            )
        try:
            _write_all(self._fd, data)
        except OSError as exc:
            raise _store_error(f"write artifact {self._job_id}/{self._attempt}", exc) from exc
        self._hash.update(data)
        self._written += len(data)

    def _restart(self) -> None:
        assert self._fd is not None
        try:
            os.ftruncate(self._fd, 0)
            os.lseek(self._fd, 0, os.SEEK_SET)
        except OSError as exc:
            raise _store_error(f"restart artifact {self._job_id}/{self._attempt}", exc) from exc
        self._hash = hashlib.sha256()
        self._written = 0

    def commit(self, sha256: str, size: int) -> ArtifactInfo:
        if self._fd is None:
            raise ValueError("the upload is over")
        digest = self._hash.hexdigest()
        if size != self._written or sha256.lower() != digest:
            self.abort()
            raise ValueError(
                f"artifact {self._job_id}/{self._attempt} does not match: {self._written} "
                f"bytes with sha256 {digest}, expected {size} bytes with sha256 {sha256}"
            )
        info = ArtifactInfo(self._job_id, self._attempt, digest, size, time.time())
        try:
            os.fsync(self._fd)
            os.close(self._fd)
            self._fd = None
            self._store.publish(self._tmp, info)
        except OSError as exc:
            self.abort()
            raise _store_error(f"keep artifact {self._job_id}/{self._attempt}", exc) from exc
        return info

    def abort(self) -> None:
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
        with contextlib.suppress(OSError):
            self._tmp.unlink()


class FileArtifactStore:
    """ArtifactStore on a directory tree (see the module docstring). Safe to use from
    several threads: each upload has its own temp file, and every file appears by rename."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def job_dir(self, job_id: str) -> Path:
        return self.root / _check_job_id(job_id)

    def _path(self, job_id: str, attempt: int, suffix: str) -> Path:
        return self.job_dir(job_id) / f"{_check_attempt(attempt)}{suffix}"

    def make_job_dir(self, path: Path) -> None:
        if path.is_dir():
            return
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        path.mkdir(exist_ok=True, mode=0o700)
        _fsync_dir(self.root)  # the new directory's entry is durable before anything in it

    # ---- archives ----------------------------------------------------------------------------

    def begin(self, job_id: str, attempt: int, max_bytes: int) -> _FileUpload:
        _check_job_id(job_id)
        _check_attempt(attempt)
        return _FileUpload(self, job_id, attempt, max_bytes)

    def publish(self, tmp: Path, info: ArtifactInfo) -> None:
        """Put a complete, fsync'd archive in place with its sidecar (OSError)."""
        tar = self._path(info.job_id, info.attempt, ".tar")
        sidecar = self._path(info.job_id, info.attempt, ".json")
        text = json.dumps({"sha256": info.sha256, "size": info.size, "created_at": info.created_at})
        side_tmp = self._write_tmp(tar.parent, f"{info.attempt}.json", text.encode())
        try:
            # The old sidecar goes first: between the renames there is no archive, rather
            # than an old sidecar describing a new archive.
            with contextlib.suppress(FileNotFoundError):
                sidecar.unlink()
            os.replace(tmp, tar)
            os.replace(side_tmp, sidecar)
        finally:
            with contextlib.suppress(OSError):
                side_tmp.unlink()
        _fsync_dir(tar.parent)

    def _write_tmp(self, directory: Path, name: str, data: bytes) -> Path:
        """A durable hidden copy of `data` in `directory`, to be renamed into place."""
        tmp = directory / f"{_TMP_PREFIX}{name}.{secrets.token_hex(4)}.tmp"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
        try:
            _write_all(fd, data)
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise
        os.close(fd)
        return tmp

    def info(self, job_id: str, attempt: int) -> ArtifactInfo | None:
        try:
            meta = json.loads(self._path(job_id, attempt, ".json").read_bytes())
            sha256, size, created_at = meta["sha256"], meta["size"], meta["created_at"]
            if self._path(job_id, attempt, ".tar").stat().st_size != size:
                return None  # not the archive its sidecar describes
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return ArtifactInfo(job_id, attempt, str(sha256), int(size), float(created_at))

    def latest(self, job_id: str) -> ArtifactInfo | None:
        try:
            names = os.listdir(self.job_dir(job_id))
        except OSError:
            return None
        attempts = sorted(
            (int(n[:-5]) for n in names if n.endswith(".json") and n[:-5].isdigit()), reverse=True
        )
        for attempt in attempts:
            info = self.info(job_id, attempt)
            if info is not None:
                return info
        return None

    def read(self, job_id: str, attempt: int, offset: int = 0, limit: int = -1) -> bytes:
        """Bytes of the committed archive from `offset`, at most `limit` (-1: all); empty
        when there is none."""
        if offset < 0:
            raise ValueError(f"offset must not be negative: {offset}")
        if limit == 0 or self.info(job_id, attempt) is None:
            return b""
        path = self._path(job_id, attempt, ".tar")
        try:
            with path.open("rb") as f:
                f.seek(offset)
                return f.read(limit if limit > 0 else -1)
        except FileNotFoundError:
            return b""
        except OSError as exc:
            raise _store_error(f"read artifact {job_id}/{attempt}", exc) from exc

    # ---- outputs -----------------------------------------------------------------------------

    def put_outputs(self, job_id: str, attempt: int, data: bytes) -> None:
        path = self._path(job_id, attempt, ".outputs")
        try:
            self.make_job_dir(path.parent)
            tmp = self._write_tmp(path.parent, path.name, data)
            try:
                os.replace(tmp, path)
            finally:
                with contextlib.suppress(OSError):
                    tmp.unlink()
            _fsync_dir(path.parent)
        except OSError as exc:
            raise _store_error(f"store outputs of {job_id}/{attempt}", exc) from exc

    def outputs(self, job_id: str, attempt: int) -> bytes | None:
        try:
            return self._path(job_id, attempt, ".outputs").read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise _store_error(f"read outputs of {job_id}/{attempt}", exc) from exc

    # ---- retention ---------------------------------------------------------------------------

    def expire(self, before: float) -> int:
        """Delete archives and outputs created before `before` (and temp files a crash left
        behind, by their age); returns how many archives."""
        removed = 0
        try:
            jobs = list(os.scandir(self.root))
        except FileNotFoundError:
            return 0
        for job in jobs:
            if not job.is_dir(follow_symlinks=False) or job.name.startswith(_TMP_PREFIX):
                continue
            removed += self._expire_job(Path(job.path), before)
            with contextlib.suppress(OSError):
                os.rmdir(job.path)  # only once empty
        return removed

    def _expire_job(self, directory: Path, before: float) -> int:
        removed = 0
        for entry in list(os.scandir(directory)):
            name, path = entry.name, Path(entry.path)
            stem, _, suffix = name.partition(".")
            if name.startswith(_TMP_PREFIX) or suffix == "outputs":
                with contextlib.suppress(OSError):
                    if entry.stat(follow_symlinks=False).st_mtime < before:
                        path.unlink()
            elif suffix == "json" and stem.isdigit():
                info = self.info(directory.name, int(stem))
                if info is not None and info.created_at >= before:
                    continue
                if info is None:  # a sidecar without its archive: judged by its own age
                    with contextlib.suppress(OSError):
                        if entry.stat().st_mtime >= before:
                            continue
                with contextlib.suppress(OSError):
                    path.unlink()  # the sidecar first: the archive is gone from then on
                with contextlib.suppress(FileNotFoundError):
                    (directory / f"{stem}.tar").unlink()
                removed += info is not None
            elif suffix == "tar" and not (directory / f"{stem}.json").exists():
                with contextlib.suppress(OSError):  # a sidecar lost: never visible, only space
                    if entry.stat().st_mtime < before:
                        path.unlink()
        return removed
