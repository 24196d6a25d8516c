"""`--log-format json`: one object a line, ids found where the message names them."""

from __future__ import annotations

import json
import logging
import sys

from hodei.server.log_format import JsonFormatter


def record(message: str, *args: object, **extra: object) -> logging.LogRecord:
    rec = logging.LogRecord(
        "hodei.server.core.reports", logging.WARNING, "x.py", 1, message, args, None
    )
    for key, value in extra.items():
        setattr(rec, key, value)
    return rec


def test_a_line_is_one_object_with_the_ids_it_names() -> None:
    line = JsonFormatter().format(
        record(
            "worker %s: result of %s refused\nsecond line", "local-0a1b2c3d", "0190b7a1c2d3e4f5a"
        )
    )
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["level"] == "WARNING" and entry["logger"] == "hodei.server.core.reports"
    assert entry["message"].endswith("refused\nsecond line")
    assert entry["job_id"] == "0190b7a1c2d3e4f5a" and entry["worker_id"] == "local-0a1b2c3d"
    assert entry["time"].endswith("+00:00")
    step = json.loads(JsonFormatter().format(record("log of r0190b7a1c2d3e4f5a.2.1 attempt 1")))
    assert step["job_id"] == "r0190b7a1c2d3e4f5a.2.1" and "worker_id" not in step


def test_given_ids_win_and_a_traceback_is_kept() -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        rec = record("the job store refused", job_id="custom-id", worker_id="w1")
        rec.exc_info = sys.exc_info()
    entry = json.loads(JsonFormatter().format(rec))
    assert entry["job_id"] == "custom-id" and entry["worker_id"] == "w1"
    assert "ValueError: boom" in entry["exc_info"]
    plain = json.loads(JsonFormatter().format(record("the job store opened")))
    assert "job_id" not in plain and "worker_id" not in plain
