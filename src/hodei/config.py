"""Typed settings, built once (from flags and environment) in the composition root."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from hodei.errors import ValidationError


def default_home() -> Path:
    return Path(os.environ.get("HODEI_HOME") or Path.home() / ".hodei")


def split_addr(addr: str, default_port: int) -> tuple[str, int]:
    """'127.0.0.1:8080' / '[::1]:8080' / 'localhost' -> (host, port)."""
    host, sep, port = addr.rpartition(":")
    if not sep or "]" in port:
        host, port = addr, str(default_port)
    host = host.strip("[]") or "127.0.0.1"
    try:
        number = int(port)
    except ValueError:
        raise ValidationError(f"invalid address {addr!r}: port must be a number") from None
    if not 0 <= number <= 65535:
        raise ValidationError(f"invalid address {addr!r}: port out of range")
    return host, number


@dataclass(slots=True)
class ServerSettings:
    home: Path = field(default_factory=default_home)
    database_url: str = ""  # empty: sqlite:///<home>/hodei.db
    provider: str = "local"
    http_addr: str = "127.0.0.1:8080"
    grpc_addr: str = "127.0.0.1:50051"
    worker_image: str = "hodei-worker:latest"
    max_workers: int = 4  # local provider: agents running at once
    worker_slots: int = 1  # jobs each provisioned agent runs at once
    worker_idle_s: float = 30.0  # idle provisioned workers stop after this long
    cancel_grace_s: float = 5.0  # SIGTERM -> SIGKILL
    scheduling_policy: str = "spread"  # or "binpack"
    priority_aging_s: float = 60.0  # waiting this long is worth one priority point (0: off)
    retry_backoff_s: float = 1.0  # first retry waits this long, then twice as long each time
    worker_grace_s: float = 30.0  # a dropped worker may reconnect this long before it is lost
    heartbeat_interval_s: float = 5.0
    otp_ttl_s: float = 600.0
    demo: bool = False

    @property
    def sqlite_path(self) -> Path:
        url = self.database_url
        if not url:
            return self.home / "hodei.db"
        if url.startswith("sqlite:///"):
            return Path(url.removeprefix("sqlite:///"))
        raise ValidationError(
            f"unsupported HODEI_DATABASE_URL {url!r}: use sqlite:///path "
            "(PostgreSQL support is not built yet)"
        )

    @property
    def log_dir(self) -> Path:
        return self.home / "logs"

    def validate(self) -> ServerSettings:
        split_addr(self.http_addr, 8080)
        split_addr(self.grpc_addr, 50051)
        if self.provider != "local":
            raise ValidationError(
                f"unknown or unavailable provider {self.provider!r} (available: local)"
            )
        if self.max_workers < 0 or self.worker_slots < 1:
            raise ValidationError("max workers must be >= 0 and worker slots >= 1")
        if not 0.05 <= self.heartbeat_interval_s <= 3600:
            raise ValidationError("heartbeat interval must be between 50ms and 1h")
        if self.scheduling_policy not in ("spread", "binpack"):
            raise ValidationError("scheduling policy must be spread or binpack")
        if not 0 <= self.retry_backoff_s <= 3600:
            raise ValidationError("retry backoff must be between 0 and 1h")
        if self.priority_aging_s < 0:
            raise ValidationError("priority aging must not be negative")
        if not 0 <= self.worker_grace_s <= 86400:
            raise ValidationError("worker grace must be between 0 and 1 day")
        if not 0 <= self.cancel_grace_s <= 3600:
            raise ValidationError("cancel grace must be between 0 and 1h")
        _ = self.sqlite_path
        return self
