"""The server's PKI on disk, under HODEI_HOME/pki/:

    ca.key  ca.crt           the CA (key mode 0600)
    server.key  server.crt   the server's TLS certificate, signed by the CA (key mode 0600)
    certs.json               agent certificates issued, with their revocations

The registry is small JSON rewritten atomically (temp file + rename) on every change, so a crash
never leaves it half-written and a revocation survives a restart. Certificates expired for more
than RETAIN_EXPIRED_S are dropped from it: an expired certificate is refused by TLS anyway.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from cryptography import x509

from hodei.errors import ConflictError, HodeiError, NotFoundError
from hodei.security import pki

RETAIN_EXPIRED_S = 7 * 86400.0


class PkiError(HodeiError):
    """The PKI files are missing or unreadable."""

    status = 503


@dataclass(frozen=True, slots=True)
class PkiPaths:
    root: Path

    @classmethod
    def of_home(cls, home: Path) -> PkiPaths:
        return cls(home / "pki")

    @property
    def ca_key(self) -> Path:
        return self.root / "ca.key"

    @property
    def ca_cert(self) -> Path:
        return self.root / "ca.crt"

    @property
    def server_key(self) -> Path:
        return self.root / "server.key"

    @property
    def server_cert(self) -> Path:
        return self.root / "server.crt"

    @property
    def registry(self) -> Path:
        return self.root / "certs.json"

    def exists(self) -> bool:
        return self.ca_key.exists() and self.ca_cert.exists()


def _write(path: Path, data: bytes, mode: int) -> None:
    """Write atomically with `mode` from the start (a key is never readable by others)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.chmod(tmp, mode)  # the umask may have narrowed it; never widened beyond `mode`
    os.replace(tmp, path)


def init_pki(paths: PkiPaths, sans: Sequence[str], *, force: bool = False) -> None:
    """Create the CA and a server certificate for `sans`; ConflictError if a CA exists."""
    if paths.exists() and not force:
        raise ConflictError(
            f"a CA already exists in {paths.root} (use --force to replace it; every agent "
            "certificate it issued stops working)"
        )
    paths.root.mkdir(parents=True, exist_ok=True, mode=0o700)
    now = time.time()
    ca_key, ca_cert = pki.make_ca("Hodei Jobs CA", now)
    server_key, server_cert = pki.make_server_cert(ca_key, ca_cert, sans, now)
    _write(paths.ca_key, pki.key_to_pem(ca_key), 0o600)
    _write(paths.ca_cert, pki.cert_to_pem(ca_cert), 0o644)
    _write(paths.server_key, pki.key_to_pem(server_key), 0o600)
    _write(paths.server_cert, pki.cert_to_pem(server_cert), 0o644)
    # A new CA makes every earlier agent certificate meaningless: start a fresh registry.
    paths.registry.unlink(missing_ok=True)


def reissue_server_cert(paths: PkiPaths, sans: Sequence[str]) -> None:
    """A new server certificate for other names, signed by the existing CA."""
    ca_key, ca_cert = load_ca(paths)
    key, cert = pki.make_server_cert(ca_key, ca_cert, sans, time.time())
    _write(paths.server_key, pki.key_to_pem(key), 0o600)
    _write(paths.server_cert, pki.cert_to_pem(cert), 0o644)


def load_ca(paths: PkiPaths) -> tuple[pki.PrivateKey, x509.Certificate]:
    try:
        key = pki.key_from_pem(paths.ca_key.read_bytes())
        cert = pki.cert_from_pem(paths.ca_cert.read_bytes())
    except FileNotFoundError:
        raise PkiError(f"no CA in {paths.root}: run `hodei pki init` first") from None
    except (OSError, ValueError, HodeiError) as exc:
        raise PkiError(f"cannot read the CA in {paths.root}: {exc}") from None
    return key, cert


def server_cert_names(paths: PkiPaths) -> set[str]:
    """The host names and addresses the current server certificate is valid for."""
    return pki.cert_names(pki.cert_from_pem(paths.server_cert.read_bytes()))


@dataclass(slots=True)
class CertRecord:
    serial: str
    worker_id: str
    not_before: float
    not_after: float
    issued_at: float
    revoked_at: float | None = None
    labels: dict[str, str] = field(default_factory=dict)  # the enrollment grant's labels

    def state(self, now: float) -> str:
        if self.revoked_at is not None:
            return "revoked"
        return "expired" if self.not_after <= now else "valid"


class CertRegistry:
    """Issued agent certificates and their revocations, persisted in certs.json."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._records: dict[str, CertRecord] = {}
        self._now = time.time

    def load(self) -> CertRegistry:
        try:
            raw = json.loads(self._path.read_bytes())
        except FileNotFoundError:
            return self
        except (OSError, ValueError) as exc:
            raise PkiError(f"cannot read {self._path}: {exc}") from None
        try:
            for item in raw.get("certs", []):
                record = CertRecord(**item)
                self._records[record.serial] = record
        except (TypeError, AttributeError) as exc:
            raise PkiError(f"{self._path} is malformed: {exc}") from None
        return self

    def _save(self) -> None:
        cutoff = self._now() - RETAIN_EXPIRED_S
        for serial in [s for s, r in self._records.items() if r.not_after < cutoff]:
            del self._records[serial]
        body = {"certs": [asdict(r) for r in self._records.values()]}
        _write(self._path, json.dumps(body, indent=1).encode(), 0o600)

    def add(self, info: pki.CertInfo, labels: dict[str, str]) -> CertRecord:
        record = CertRecord(
            serial=info.serial,
            worker_id=info.worker_id,
            not_before=info.not_before,
            not_after=info.not_after,
            issued_at=self._now(),
            labels=dict(labels),
        )
        self._records[record.serial] = record
        self._save()
        return record

    def get(self, serial: str) -> CertRecord | None:
        return self._records.get(serial)

    def records(self) -> list[CertRecord]:
        return sorted(self._records.values(), key=lambda r: r.issued_at)

    def of_worker(self, worker_id: str) -> list[CertRecord]:
        return [r for r in self.records() if r.worker_id == worker_id]

    def is_revoked(self, serial: str) -> bool:
        record = self._records.get(serial)
        return record is not None and record.revoked_at is not None

    def valid_until(self, worker_id: str) -> float:
        """The latest expiry among the worker's unrevoked certificates (0: none)."""
        ends = [r.not_after for r in self.of_worker(worker_id) if r.revoked_at is None]
        return max(ends, default=0.0)

    def revoke(self, target: str) -> list[CertRecord]:
        """Revoke every certificate of worker `target`, or the one with serial `target`."""
        target = target.strip()
        chosen = self.of_worker(target)
        if not chosen:
            record = self._records.get(target.lower().removeprefix("0x").replace(":", ""))
            chosen = [record] if record is not None else []
        if not chosen:
            raise NotFoundError(f"no certificate issued to worker or with serial {target!r}")
        now = self._now()
        changed = []
        for record in chosen:
            if record.revoked_at is None:
                record.revoked_at = now
            changed.append(record)
        self._save()
        return changed
