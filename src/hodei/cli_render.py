"""Human output for the CLI: plain-text tables and detail views.

Everything shown here may come from untrusted input (job names, labels, reasons, hostnames),
so each value passes through `clean()`, which neutralises control characters, escape
sequences and bidi overrides. Log output keeps its ANSI colours, and only those
(`domain.terminal`).
"""

from __future__ import annotations

import shlex
import sys
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any

_MAX_CELL = 60


def write_bytes(data: bytes) -> None:
    """Write bytes to stdout untouched (log output keeps its ANSI colours)."""
    sys.stdout.flush()
    stream = getattr(sys.stdout, "buffer", None)
    if stream is None:
        sys.stdout.write(data.decode("utf-8", "replace"))
        sys.stdout.flush()
        return
    stream.write(data)
    stream.flush()


def encode_text(text: str) -> bytes:
    try:
        return text.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return text.encode("utf-8", "replace")


def write_text(text: str) -> None:
    write_bytes(encode_text(text))


def write_json_verbatim(body: bytes) -> None:
    write_bytes(body if body.endswith(b"\n") else body + b"\n")


def clean(value: object) -> str:
    """One-line, terminal-safe text: control and format characters become visible escapes."""
    if value is None:
        return "-"
    text = value if isinstance(value, str) else str(value)
    out: list[str] = []
    for ch in text:
        if unicodedata.category(ch) in ("Cc", "Cf", "Cs", "Zl", "Zp"):
            code = ord(ch)
            out.append(f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")
        else:
            out.append(ch)
    return "".join(out)


def clean_block(text: str, indent: str = "  ") -> str:
    """Multi-line text (a script): each line cleaned and indented; tabs kept as spaces."""
    lines = text.expandtabs(4).splitlines() or [""]
    return "\n".join(indent + clean(line) for line in lines)


def truncate(text: str, width: int = _MAX_CELL) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """Left-aligned columns separated by two spaces; cells are cleaned and truncated."""
    cells = [[truncate(clean(v)) for v in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))
    lines = [headers, *cells]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(line, widths, strict=True)).rstrip() for line in lines
    )


def when(value: object) -> str:
    """ISO 8601 -> local 'YYYY-MM-DD HH:MM:SS'; anything else is shown cleaned."""
    if not value:
        return "-"
    if isinstance(value, str):
        try:
            stamp = datetime.fromisoformat(value)
        except ValueError:
            return clean(value)
        if stamp.tzinfo is not None:
            stamp = stamp.astimezone()
        return stamp.strftime("%Y-%m-%d %H:%M:%S")
    return clean(value)


def size(value: object) -> str:
    if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
        return "-"
    amount = float(value)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if amount < 1024 or unit == "TiB":
            return f"{amount:.0f}{unit}" if unit == "B" else f"{amount:.1f}{unit}"
        amount /= 1024
    return "-"  # pragma: no cover


def pairs(mapping: object) -> str:
    if not isinstance(mapping, Mapping) or not mapping:
        return "-"
    return ",".join(f"{k}={v}" for k, v in mapping.items())


def dash(value: object) -> object:
    return "-" if value is None or value == "" else value


def seconds(value: object) -> str:
    if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
        return "-"
    return f"{value:g}s"


def jobs_table(items: Sequence[Mapping[str, Any]]) -> str:
    headers = ("ID", "NAME", "STATE", "EXIT", "ATTEMPTS", "WORKER", "CREATED")
    rows = [
        (
            job.get("id"),
            dash(job.get("name")),
            job.get("state"),
            dash(job.get("exit_code")),
            dash(job.get("attempts")),
            dash(job.get("worker_id")),
            when(job.get("created_at")),
        )
        for job in items
    ]
    return table(headers, rows)


def job_detail(job: Mapping[str, Any]) -> str:
    """Every field of a job object, one per line; the command as a block when multi-line."""
    fields: list[tuple[str, object]] = [
        ("id", job.get("id")),
        ("name", dash(job.get("name"))),
        ("state", job.get("state")),
        ("reason", dash(job.get("reason"))),
        ("exit code", dash(job.get("exit_code"))),
        ("attempts", dash(job.get("attempts"))),
        ("max retries", dash(job.get("max_retries"))),
        ("retries used", _spent(job)),
        ("priority", dash(job.get("priority"))),
        ("worker", dash(job.get("worker_id"))),
        ("image", dash(job.get("image"))),
        ("labels", pairs(job.get("labels"))),
        ("cpu", dash(job.get("cpu")) if job.get("cpu") else "-"),
        ("memory", size(job.get("memory_bytes"))),
        ("timeout", seconds(job.get("timeout_s"))),
        ("env", pairs(job.get("env"))),
        ("secrets", ",".join(map(str, job.get("secrets") or [])) or "-"),
        ("queued by", dash(job.get("queued_by"))),
        ("idempotency key", dash(job.get("idempotency_key"))),
        ("created", when(job.get("created_at"))),
        ("started", when(job.get("started_at"))),
        ("finished", when(job.get("finished_at"))),
        *_latest_usage(job.get("attempt_history")),
    ]
    known = {
        "id",
        "name",
        "state",
        "reason",
        "exit_code",
        "attempts",
        "max_retries",
        "retries_used",
        "infra_retries",
        "infra_retries_used",
        "no_infra_retry",
        "priority",
        "worker_id",
        "image",
        "labels",
        "cpu",
        "memory_bytes",
        "timeout_s",
        "env",
        "secrets",
        "queued_by",
        "idempotency_key",
        "attempt_history",
        "created_at",
        "started_at",
        "finished_at",
        "command",
        "arguments",
    }
    fields += [(key, value) for key, value in job.items() if key not in known]
    width = max(len(name) for name, _ in fields)
    lines = [f"{name + ':':<{width + 1}} {clean(value)}" for name, value in fields]
    lines.append(_command(job.get("command"), job.get("arguments")))
    history = job.get("attempt_history")
    if isinstance(history, list) and history:
        lines += ["attempts:", attempts_table(history)]
    return "\n".join(lines)


# Whose fault an attempt that did not succeed was, in words (the attempt's `failure`).
FAILURE_WORDS = {
    "job": "the job's own",
    "not_run": "never started",
    "worker_lost": "platform: worker lost",
    "server_restart": "platform: server restarted",
    "server_lost": "platform: server gone",
    "store": "platform: store failed",
    "agent": "platform: agent failed",
}


def _spent(job: Mapping[str, Any]) -> str:
    """Retries spent: the job's own (of max_retries) and the platform's (of infra_retries)."""
    own = f"{dash(job.get('retries_used'))} of {dash(job.get('max_retries'))}"
    if job.get("no_infra_retry"):
        return f"{own}; platform faults are not retried (no_infra_retry)"
    used, bound = dash(job.get("infra_retries_used")), dash(job.get("infra_retries"))
    return f"{own}; after platform faults {used} of {bound}"


def cpu_time(value: object) -> str:
    """CPU seconds as measured ("-" when not)."""
    if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
        return "-"
    return f"{value:.2f}s"


def _io(read: object, written: object) -> str:
    if not isinstance(read, int) or not isinstance(written, int):
        return "-"
    return f"{size(read) if read else '0B'}/{size(written) if written else '0B'}"


def _latest_usage(history: object) -> list[tuple[str, object]]:
    """CPU time and peak memory of the latest attempt that has them (none: no lines)."""
    if not isinstance(history, list):
        return []
    for a in reversed(history):
        if isinstance(a, Mapping) and a.get("cpu_seconds") is not None:
            number = a.get("number")
            return [
                (f"cpu time (attempt {number})", cpu_time(a.get("cpu_seconds"))),
                (f"peak memory (attempt {number})", size(a.get("peak_memory_bytes"))),
            ]
    return []


def attempts_table(items: Sequence[Mapping[str, Any]]) -> str:
    """One row per attempt: how each dispatch of the job ended, and what it used."""
    rows = [
        (
            a.get("number"),
            a.get("state"),
            dash(a.get("exit_code")),
            dash(a.get("worker_id")),
            when(a.get("started_at")),
            when(a.get("finished_at")),
            cpu_time(a.get("cpu_seconds")),
            size(a.get("peak_memory_bytes")),
            _io(a.get("read_bytes"), a.get("written_bytes")),
            FAILURE_WORDS.get(str(a.get("failure")), "-") if a.get("failure") else "-",
            a.get("reason") or "-",
        )
        for a in items
        if isinstance(a, Mapping)
    ]
    headers = (
        "ATTEMPT",
        "STATE",
        "EXIT",
        "WORKER",
        "STARTED",
        "FINISHED",
        "CPU",
        "PEAK MEM",
        "READ/WRITTEN",
        "FAULT",
        "REASON",
    )
    return table(headers, rows)


def _command(command: object, arguments: object) -> str:
    text = command if isinstance(command, str) else ""
    args = [str(a) for a in arguments] if isinstance(arguments, list) else []
    if "\n" in text.strip():
        return "command:\n" + clean_block(text)
    if not args:
        return "command: " + clean(text)
    return "command: " + clean(" ".join(shlex.quote(part) for part in [text, *args]))


def workers_table(items: Sequence[Mapping[str, Any]]) -> str:
    headers = (
        "ID",
        "STATE",
        "HOST",
        "PROVIDER",
        "IMAGE",
        "SLOTS",
        "CPU%",
        "MEMORY",
        "LABELS",
        "HEARTBEAT",
    )
    rows = []
    for worker in items:
        capacity = worker.get("capacity") or {}
        usage = worker.get("usage") or {}
        running = worker.get("running_jobs") or []
        slots = capacity.get("slots")
        cpu = usage.get("cpu_percent")
        rows.append(
            (
                worker.get("id"),
                worker.get("state"),
                dash(worker.get("hostname")),
                dash(worker.get("provider")),
                dash(worker.get("image")),
                f"{len(running)}/{slots if slots is not None else '?'}",
                f"{cpu:.0f}" if isinstance(cpu, int | float) else "-",
                f"{size(usage.get('memory_bytes'))}/{size(capacity.get('memory_bytes'))}",
                pairs(worker.get("labels")),
                when(worker.get("last_heartbeat")),
            )
        )
    return table(headers, rows)


def secrets_table(items: Sequence[Mapping[str, Any]]) -> str:
    return table(("NAME", "UPDATED"), [(s.get("name"), when(s.get("updated_at"))) for s in items])
