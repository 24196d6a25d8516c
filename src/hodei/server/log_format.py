"""`--log-format json`: the server's own log as one JSON object a line (time, level, logger,
message; `job_id` and `worker_id` where known; the traceback as `exc_info`).

Where known: given as `extra={"job_id": ...}` to the logging call, else found in the message
(a generated job id, a step's or a schedule fire's job id; `worker <id>` with a provider's
`<name>-<hex>` id), so the server's existing lines carry them without a change.
"""

from __future__ import annotations

import logging
import re
from datetime import UTC, datetime

import orjson

_JOB = re.compile(
    r"(?<![0-9A-Za-z._-])("
    r"[0-9a-f]{17}"  # a generated id: ms (hex) and 24 random bits
    r"|r[0-9a-f]{17}\.\d{1,6}\.\d{1,6}"  # a pipeline step's job
    r"|s[0-9a-f]{12}-n?\d{1,16}"  # a schedule fire's job
    r")(?![0-9A-Za-z._-])"
)
_WORKER = re.compile(r"\bworker ([A-Za-z0-9][A-Za-z0-9_.]*-[0-9a-f]{4,})\b")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": message,
        }
        job_id = getattr(record, "job_id", None)
        if job_id is None and (found := _JOB.search(message)):
            job_id = found.group(1)
        if job_id is not None:
            entry["job_id"] = str(job_id)
        worker_id = getattr(record, "worker_id", None)
        if worker_id is None and (found := _WORKER.search(message)):
            worker_id = found.group(1)
        if worker_id is not None:
            entry["worker_id"] = str(worker_id)
        if record.exc_info:
            entry["exc_info"] = self.formatException(record.exc_info)
        return orjson.dumps(entry).decode()


def configure(level: str, fmt: str) -> None:
    """The root logger: `fmt` "text" (the classic lines) or "json"."""
    handler = logging.StreamHandler()
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=level.upper(), handlers=[handler])
