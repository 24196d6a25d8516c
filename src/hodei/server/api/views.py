"""How jobs, workers, tokens, audit entries and certificates look from outside: the REST JSON
and the gRPC messages."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from hodei._proto.hodei.v1 import jobs_pb2
from hodei.domain.access import AuditEntry, TokenRecord
from hodei.domain.attempts import Attempt
from hodei.domain.jobs import Job
from hodei.server.core.workers import WorkerSession

if TYPE_CHECKING:  # only with --tls is it loaded (cryptography's x509 costs memory)
    from hodei.security.pki_files import CertRecord


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def job_to_dict(job: Job, reason: str | None = None) -> dict[str, Any]:
    spec = job.spec
    return {
        "id": job.id,
        "name": spec.name,
        "state": job.state.value,
        "exit_code": job.exit_code,
        "attempts": job.attempts,
        "labels": spec.labels,
        "priority": spec.priority,
        "worker_id": job.worker_id,
        "created_at": iso(job.created_at),
        "started_at": iso(job.started_at),
        "finished_at": iso(job.finished_at),
        "command": spec.command,
        "arguments": list(spec.arguments),
        "env": spec.env,
        "secrets": list(spec.secrets),
        "cpu": spec.cpu,
        "memory_bytes": spec.memory_bytes,
        "timeout_s": spec.timeout_s,
        "max_retries": spec.max_retries,
        "infra_retries": spec.infra_retries,
        "no_infra_retry": spec.no_infra_retry,
        "image": spec.image,  # null: the provider's worker image
        "retries_used": job.retries_used,  # requeues after the job's own failures
        "infra_retries_used": job.infra_retries_used,  # requeues after platform faults
        "reason": reason if reason is not None else job.reason,
        "queued_by": spec.queued_by,
        "idempotency_key": job.idempotency_key,
        "retry_at": iso(job.not_before),  # a retry waiting out its backoff: not placed before
    }


def attempt_to_dict(attempt: Attempt) -> dict[str, Any]:
    return {
        "number": attempt.number,
        "state": attempt.state.value,
        "worker_id": attempt.worker_id,
        "exit_code": attempt.exit_code,
        "assigned_at": iso(attempt.assigned_at),
        "started_at": iso(attempt.started_at),
        "finished_at": iso(attempt.finished_at),
        "reason": attempt.reason,
        # Why it did not succeed: "job" (its own doing), "not_run", or a platform fault
        # ("worker_lost", "server_restart", "server_lost", "store", "agent"); null while it runs.
        "failure": attempt.failure.value if attempt.failure else None,
        # What it used, as its agent measured it; null until it ended, or when not measured
        # (bytes read and written: null where they could not be read).
        "cpu_seconds": attempt.cpu_seconds,
        "peak_memory_bytes": attempt.peak_memory_bytes,
        "read_bytes": attempt.read_bytes,
        "written_bytes": attempt.written_bytes,
    }


def attempt_to_proto(attempt: Attempt) -> jobs_pb2.Attempt:
    return jobs_pb2.Attempt(
        number=attempt.number,
        state=attempt.state.value,
        worker_id=attempt.worker_id or "",
        exit_code=attempt.exit_code or 0,
        has_exit_code=attempt.exit_code is not None,
        assigned_at=iso(attempt.assigned_at) or "",
        started_at=iso(attempt.started_at) or "",
        finished_at=iso(attempt.finished_at) or "",
        reason=attempt.reason,
        failure=attempt.failure.value if attempt.failure else "",
        has_usage=attempt.cpu_seconds is not None and attempt.peak_memory_bytes is not None,
        cpu_seconds=attempt.cpu_seconds or 0.0,
        peak_memory_bytes=attempt.peak_memory_bytes or 0,
        has_io=attempt.read_bytes is not None and attempt.written_bytes is not None,
        read_bytes=attempt.read_bytes or 0,
        written_bytes=attempt.written_bytes or 0,
    )


def job_to_proto(job: Job, reason: str | None = None) -> jobs_pb2.Job:
    spec = job.spec
    return jobs_pb2.Job(
        id=job.id,
        name=spec.name,
        state=job.state.value,
        exit_code=job.exit_code or 0,
        has_exit_code=job.exit_code is not None,
        attempts=job.attempts,
        labels=spec.labels,
        priority=spec.priority,
        worker_id=job.worker_id or "",
        created_at=iso(job.created_at) or "",
        started_at=iso(job.started_at) or "",
        finished_at=iso(job.finished_at) or "",
        command=spec.command,
        arguments=list(spec.arguments),
        reason=reason if reason is not None else job.reason,
        queued_by=spec.queued_by,
        idempotency_key=job.idempotency_key or "",
        max_retries=spec.max_retries,
        infra_retries=spec.infra_retries or 0,
        no_infra_retry=spec.no_infra_retry,
        image=spec.image or "",
        retries_used=job.retries_used,
        infra_retries_used=job.infra_retries_used,
    )


def worker_state(session: WorkerSession) -> str:
    """reconnecting (its stream dropped; it may come back within the grace period), busy
    (holds jobs), draining (takes no more: shutting down, or its stream is gone), or idle."""
    if session.closed and session.grace_timer is not None:
        return "reconnecting"
    if session.jobs:
        return "busy"
    return "draining" if not session.view.accepting else "idle"


def worker_to_dict(session: WorkerSession) -> dict[str, Any]:
    view = session.view
    usage = session.usage
    return {
        "id": session.id,
        "state": worker_state(session),
        "accepting": view.accepting,  # takes new jobs (a busy worker may be draining too)
        "hostname": session.hostname,
        "provider": session.provider,
        "labels": view.labels,
        "image": view.image,  # the job image it runs in; null: the worker image
        "capacity": {"cpus": view.cpus, "memory_bytes": view.memory_bytes, "slots": view.slots},
        # What the scheduler counts as taken: the jobs held, and the resources they asked.
        "reserved": {
            "cpus": view.reserved_cpu,
            "memory_bytes": view.reserved_memory,
            "slots": view.running,
        },
        # From the last heartbeat.
        "usage": {
            "cpu_percent": round(usage.cpu_percent, 1),
            "memory_bytes": usage.memory_bytes,
            "memory_total_bytes": usage.memory_total_bytes,
        },
        "running_jobs": sorted(session.jobs),
        "connected_at": iso(session.connected_at),
        "last_heartbeat": iso(session.last_heartbeat),
        "disconnected_at": iso(session.disconnected_at),
        "reconnect_by": iso(session.reconnect_by) if session.grace_timer is not None else None,
    }


def launching_to_dict(
    worker_id: str, provider: str, error: str = "", image: str | None = None
) -> dict[str, Any]:
    return {
        "id": worker_id,
        "state": "provisioning",
        "hostname": "",
        "provider": provider,
        "labels": {},
        "image": image,
        "accepting": False,
        "capacity": {"cpus": 0, "memory_bytes": 0, "slots": 0},
        "reserved": {"cpus": 0, "memory_bytes": 0, "slots": 0},
        "usage": {"cpu_percent": 0, "memory_bytes": 0, "memory_total_bytes": 0},
        "running_jobs": [],
        "connected_at": None,
        "last_heartbeat": None,
        "disconnected_at": None,
        "reconnect_by": None,
        "error": error,
    }


def token_to_dict(token: TokenRecord) -> dict[str, Any]:
    return {
        "id": token.id,
        "name": token.name,
        "role": token.role.value,
        "created_at": iso(token.created_at),
        "revoked_at": iso(token.revoked_at),
    }


def audit_to_dict(entry: AuditEntry) -> dict[str, Any]:
    return {
        "seq": entry.seq,
        "at": iso(entry.at),
        "actor": entry.actor,
        "action": entry.action,
        "target": entry.target,
        "detail": entry.detail,
    }


def cert_to_dict(record: CertRecord, now: float) -> dict[str, Any]:
    return {
        "serial": record.serial,
        "worker_id": record.worker_id,
        "state": record.state(now),
        "issued_at": iso(record.issued_at),
        "not_after": iso(record.not_after),
        "revoked_at": iso(record.revoked_at) if record.revoked_at is not None else None,
    }
