"""The figures table (both systems, their ratio, the project's targets), the JSON, and
the one-line summaries printed as each workload ends."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

Results = dict[str, dict[str, Any]]  # workload -> {"hodei": {...}, "celery": {...}}


@dataclass
class Row:
    workload: str
    metric: str
    unit: str
    better: str  # "higher" or "lower"
    hodei: float | None
    celery: float | None
    target: str = ""
    met: bool | None = None
    partial: bool = False  # a throughput of the jobs that ended before the time limit

    @property
    def ratio(self) -> float | None:
        """Hodei / Celery."""
        if self.hodei is None or self.celery is None or self.celery == 0:
            return None
        return self.hodei / self.celery


def _get(data: dict[str, Any] | None, *path: str) -> float | None:
    cur: Any = data or {}
    for key in path:
        if not isinstance(cur, dict) or key not in cur:
            return None
        cur = cur[key]
    if isinstance(cur, bool):
        return 1.0 if cur else 0.0
    if isinstance(cur, int | float) and not math.isnan(cur):
        return float(cur)
    return None


Check = Callable[[float], bool]


def _row(
    results: Results,
    workload: str,
    metric: str,
    unit: str,
    better: str,
    hodei_path: tuple[str, ...],
    celery_path: tuple[str, ...] | None = None,
    target: tuple[str, Check] | None = None,
) -> Row:
    section = results.get(workload.split()[0], {})
    hodei = _get(section.get("hodei"), *hodei_path)
    celery = (
        _get(section.get("celery"), *(celery_path or hodei_path)) if celery_path != () else None
    )
    row = Row(workload, metric, unit, better, hodei, celery)
    if "per_s" in hodei_path[-1]:
        row.partial = any(
            isinstance(side, dict) and side.get("completed") is False
            for side in (section.get("hodei"), section.get("celery"))
        )
    if target is not None:
        row.target = target[0]
        row.met = target[1](hodei) if hodei is not None else None
    return row


def build_rows(results: Results) -> list[Row]:
    r = results
    return [
        _row(
            r,
            "W1",
            "shell jobs `true`, end to end",
            "jobs/s",
            "higher",
            ("jobs_per_s",),
            target=(">= 1500", lambda v: v >= 1500),
        ),
        _row(r, "W1", "submit rate (REST / apply_async)", "jobs/s", "higher", ("submit_per_s",)),
        _row(
            r,
            "W2",
            "no-op jobs through the control plane",
            "jobs/s",
            "higher",
            ("jobs_per_s",),
            target=(">= 10000", lambda v: v >= 10_000),
        ),
        _row(r, "W2", "submit rate (REST / apply_async)", "jobs/s", "higher", ("submit_per_s",)),
        _row(
            r,
            "W2",
            "no-op jobs, submitted 500 per POST /api/v1/jobs/batch (Celery: same as above)",
            "jobs/s",
            "higher",
            ("batch_submit", "jobs_per_s"),
            ("jobs_per_s",),
            target=(">= 10000", lambda v: v >= 10_000),
        ),
        _row(
            r,
            "W3",
            "submit -> start p50",
            "ms",
            "lower",
            ("submit_to_start_ms", "p50"),
            target=("< 2", lambda v: v < 2),
        ),
        _row(r, "W3", "submit -> start p99", "ms", "lower", ("submit_to_start_ms", "p99")),
        _row(r, "W3", "submit -> done p50", "ms", "lower", ("submit_to_done_ms", "p50")),
        _row(r, "W3", "submit -> done p99", "ms", "lower", ("submit_to_done_ms", "p99")),
        _row(
            r,
            "W3",
            "  of which submit -> accepted (created_at) p50",
            "ms",
            "lower",
            ("submit_to_created_ms", "p50"),
            (),
        ),
        _row(
            r,
            "W3",
            "  of which accepted -> started p50",
            "ms",
            "lower",
            ("created_to_start_ms", "p50"),
            (),
        ),
        _row(
            r,
            "W3",
            "  same with the no-op executor (control plane only) p50",
            "ms",
            "lower",
            ("noop_executor", "submit_to_start_ms", "p50"),
            (),
        ),
        _row(
            r,
            "W3",
            "submit -> client notified p50",
            "ms",
            "lower",
            ("submit_to_client_notified_ms", "p50"),
        ),
        _row(
            r,
            "W4",
            "log line -> SSE client p50 (idle)",
            "ms",
            "lower",
            ("idle", "latency_ms", "p50"),
            (),
        ),
        _row(
            r,
            "W4",
            "log line -> SSE client p99 (idle)",
            "ms",
            "lower",
            ("idle", "latency_ms", "p99"),
            (),
            target=("< 10", lambda v: v < 10),
        ),
        _row(
            r,
            "W4",
            "log line -> SSE client p50 (under W1 load)",
            "ms",
            "lower",
            ("loaded", "latency_ms", "p50"),
            (),
        ),
        _row(
            r,
            "W4",
            "log line -> SSE client p99 (under W1 load)",
            "ms",
            "lower",
            ("loaded", "latency_ms", "p99"),
            (),
            target=("< 25", lambda v: v < 25),
        ),
        _row(r, "W4", "log firehose end to end", "MB/s", "higher", ("firehose", "mb_per_s"), ()),
        _row(
            r,
            "W4",
            "firehose: every byte, in order (1 = yes)",
            "",
            "higher",
            ("firehose", "intact_in_order"),
            (),
        ),
        _row(
            r,
            "W5",
            "server ready (spawn -> ready line)",
            "s",
            "lower",
            ("server_ready_s",),
            ("worker_ready_s",),
            target=("< 1", lambda v: v < 1),
        ),
        _row(
            r,
            "W5",
            "server RSS idle",
            "MB",
            "lower",
            ("server_idle_rss_mb",),
            ("worker_idle_rss_mb",),
            target=("< 80", lambda v: v < 80),
        ),
        _row(
            r,
            "W5",
            "server RSS after W1",
            "MB",
            "lower",
            ("server_rss_after_w1_mb",),
            ("worker_rss_after_w1_mb",),
        ),
        _row(
            r,
            "W5",
            "agent RSS idle (static `hodei agent`)",
            "MB",
            "lower",
            ("agent_idle_rss_mb",),
            (),
        ),
        _row(
            r, "W5", "agent RSS after W1 (largest)", "MB", "lower", ("agent_rss_after_w1_mb",), ()
        ),
        _row(r, "W5", "whole system RSS after W1", "MB", "lower", ("system_rss_after_w1_mb",)),
        _row(
            r,
            "W5",
            "agent connect (spawn -> in /workers, as local workers start) p50",
            "ms",
            "lower",
            ("agent_connect_ms", "p50"),
            (),
            target=("< 300", lambda v: v < 300),
        ),
        _row(
            r,
            "W5",
            "agent connect through the `hodei agent` CLI (static workers) p50",
            "ms",
            "lower",
            ("agent_connect_cli_ms", "p50"),
            (),
        ),
        _row(r, "W5", "agent executable size", "MB", "lower", ("agent_executable_mb",)),
        _row(
            r,
            "W5",
            "agent executable connect (spawn -> in /workers) p50",
            "ms",
            "lower",
            ("agent_connect_executable_ms", "p50"),
            (),
        ),
        _row(
            r,
            "W5",
            "agent executable in a busybox image (docker run -> in /workers) p50",
            "ms",
            "lower",
            ("agent_connect_in_image_ms", "p50"),
            (),
        ),
        _row(
            r,
            "W6",
            "pipeline steps as flat jobs (no DAG): run time",
            "s",
            "lower",
            ("flat", "run_s"),
            (),
        ),
        _row(
            r,
            "W6",
            "pipeline, wide fan-out: overhead per step",
            "ms",
            "lower",
            ("wide", "overhead_ms_per_step"),
            (),
        ),
        _row(
            r,
            "W6",
            "pipeline, 10 chains of 100: overhead per step",
            "ms",
            "lower",
            ("deep", "overhead_ms_per_step"),
            (),
        ),
        _row(
            r,
            "W6",
            "pipeline, one 100-step chain: step end -> next start p50",
            "ms",
            "lower",
            ("chain", "handoff", "p50"),
            (),
            target=("< 5", lambda v: v < 5),
        ),
        _row(
            r,
            "W6",
            "pipeline, one 100-step chain: step end -> next start p99",
            "ms",
            "lower",
            ("chain", "handoff", "p99"),
            (),
        ),
        _row(
            r,
            "W6",
            "pipeline validation, 10,000 steps",
            "ms",
            "lower",
            ("validate_10k_ms",),
            (),
            target=("< 100", lambda v: v < 100),
        ),
    ]


def _fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "n/a"
    if unit == "":
        return "yes" if value >= 1 else "NO"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.2f}"


def format_table(rows: list[Row]) -> str:
    head = ("", "metric", "unit", "Hodei", "Celery", "Hodei/Celery", "target", "met")
    body = []
    for row in rows:
        ratio = row.ratio
        met = "" if row.met is None else ("yes" if row.met else "NO")
        body.append(
            (
                row.workload,
                row.metric + (" (*)" if row.partial else ""),
                row.unit,
                _fmt(row.hodei, row.unit),
                _fmt(row.celery, row.unit),
                "n/a" if ratio is None else f"{ratio:.2f}x ({row.better} is better)",
                row.target,
                met,
            )
        )
    widths = [max(len(str(line[i])) for line in (head, *body)) for i in range(len(head))]
    out = []
    for n, line in enumerate((head, *body)):
        out.append("  ".join(str(cell).ljust(widths[i]) for i, cell in enumerate(line)))
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    if any(row.partial for row in rows):
        out.append(
            "(*) a system did not finish within the workload's time limit: its figure is the "
            "rate of the jobs that ended in time"
        )
    return "\n".join(out)


def rows_json(rows: list[Row]) -> list[dict[str, Any]]:
    return [{**asdict(row), "ratio_hodei_over_celery": row.ratio} for row in rows]


def brief(result: dict[str, Any]) -> str:
    """A one-line progress summary of a workload's result (either system's)."""
    if "error" in result:
        return f"ERROR {result['error']}"
    parts = []
    for key, value in result.items():
        if isinstance(value, float):
            parts.append(f"{key}={value:.2f}")
        elif isinstance(value, dict) and "p50" in value:
            parts.append(f"{key} p50={value['p50']:.2f} p99={value['p99']:.2f}")
        elif isinstance(value, int | bool | str) and key not in ("timestamps_from",):
            parts.append(f"{key}={value}")
    return ", ".join(parts)
