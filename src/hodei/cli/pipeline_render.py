"""Pipeline runs as the CLI shows them: pure functions of a run's REST JSON (its "view").

`draw_dag` draws the run's steps in topological order (the `index` order) as a tree, each
with what it needs, its state, duration, job and reason, a matrix step's jobs under it;
`changes` turns two successive views into one line per change (the live view off a
terminal); `run_exit` is the exit status of `hodei pipeline run -f`. Every value shown may
come from the file or the server, so each passes through `clean()`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import typer

from hodei.cli_render import clean, dash, table, truncate, when

View = Mapping[str, Any]

# Exit statuses of `pipeline run -f` (and retry/approve -f): 2 stays bad usage or a refused
# file, 130 an interrupted follow (the run itself goes on).
EXIT_SUCCEEDED = 0
EXIT_FAILED = 1
EXIT_CANCELLED = 3
DONE = frozenset({"succeeded", "failed", "cancelled", "skipped"})
MARKS = {
    "pending": "○",
    "running": "●",
    "succeeded": "✓",
    "failed": "✗",
    "cancelled": "■",
    "skipped": "-",
    "awaiting approval": "?",
}


@dataclass(frozen=True, slots=True)
class Glyphs:
    tee: str
    last: str
    pipe: str
    arrow: str
    marks: bool  # state marks before the state (✓ ✗ ●); off in ASCII


UNICODE = Glyphs("├─ ", "└─ ", "│  ", " ◀─ ", True)
ASCII = Glyphs("|- ", "`- ", "|  ", " <- ", False)


def run_exit(state: object) -> int:
    """0 succeeded, 1 failed, 3 cancelled; a state we do not know counts as failed."""
    if state == "succeeded":
        return EXIT_SUCCEEDED
    if state == "cancelled":
        return EXIT_CANCELLED
    return EXIT_FAILED


def parse_params(values: Sequence[str] | None) -> dict[str, str]:
    """`--param KEY=VALUE` flags; a key twice is a mistake, not "the last one wins"."""
    params: dict[str, str] = {}
    for item in values or ():
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise typer.BadParameter(f"{item[:80]!r} is not KEY=VALUE", param_hint="'--param'")
        if key in params:
            raise typer.BadParameter(f"{key[:80]!r} is given twice", param_hint="'--param'")
        params[key] = value
    return params


def duration(seconds: object) -> str:
    """1.234 -> '1.2s', 75 -> '1m15s', 3725 -> '1h02m'; '-' when unknown."""
    if not isinstance(seconds, int | float) or isinstance(seconds, bool) or seconds < 0:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


def _stamp(value: object) -> float | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        return None


def elapsed(row: View, now: float | None) -> str:
    """A step job's duration; a running one's time so far when `now` is given."""
    if row.get("duration_s") is not None:
        return duration(row.get("duration_s"))
    started = _stamp(row.get("started_at"))
    if now is not None and row.get("status") == "running" and started is not None:
        return duration(max(0.0, now - started))
    return "-"


def _rows(view: View) -> list[Mapping[str, Any]]:
    steps = view.get("steps")
    rows = [row for row in steps if isinstance(row, Mapping)] if isinstance(steps, list) else []
    return sorted(rows, key=_index)


def _index(row: Mapping[str, Any]) -> int:
    index = row.get("index")
    return index if isinstance(index, int) else 0


def _groups(rows: Sequence[Mapping[str, Any]]) -> list[tuple[str, list[Mapping[str, Any]]]]:
    """Rows by step, in the order of each step's first job."""
    groups: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        groups.setdefault(str(row.get("step") or row.get("id")), []).append(row)
    return list(groups.items())


def _awaiting(view: View) -> set[str]:
    names = view.get("awaiting_approval")
    return {str(n) for n in names} if isinstance(names, list) else set()


def _state(status: str, glyphs: Glyphs) -> str:
    mark = MARKS.get(status, "") if glyphs.marks else ""
    return f"{mark} {status}" if mark else status


def _summary(rows: Sequence[Mapping[str, Any]]) -> str:
    """A matrix step's jobs by status: '2 succeeded, 1 failed'."""
    counts: dict[str, int] = {}
    for row in rows:
        status = str(row.get("status"))
        counts[status] = counts.get(status, 0) + 1
    order = ("running", "failed", "cancelled", "pending", "skipped", "succeeded")
    known = [s for s in order if s in counts] + sorted(set(counts) - set(order))
    return ", ".join(f"{counts[s]} {s}" for s in known)


def _label(name: str, first: Mapping[str, Any], glyphs: Glyphs) -> str:
    needs = first.get("needs")
    label = clean(name)
    if isinstance(needs, list) and needs:
        label += glyphs.arrow + ", ".join(clean(n) for n in needs)
    if first.get("when") == "manual":
        label += " (manual)"
    return label


def _matrix(row: Mapping[str, Any]) -> str:
    matrix = row.get("matrix")
    if isinstance(matrix, Mapping) and matrix:
        return "[" + ",".join(f"{k}={v}" for k, v in matrix.items()) + "]"
    return str(row.get("id"))


def draw_dag(view: View, now: float | None = None, glyphs: Glyphs = UNICODE) -> list[str]:
    """The run's steps in topological order, one line each (a matrix step: one line, then a
    line per job), aligned in columns: step and needs, state, duration, job id, reason."""
    awaiting = _awaiting(view)
    groups = _groups(_rows(view))
    lines: list[tuple[str, str, str, str, str]] = []
    for number, (name, rows) in enumerate(groups):
        last = number == len(groups) - 1
        branch, under = (glyphs.last, "   ") if last else (glyphs.tee, glyphs.pipe)
        label = branch + _label(name, rows[0], glyphs)
        matrix = len(rows) > 1 or bool(rows[0].get("matrix"))
        if name in awaiting:
            state = _state("awaiting approval", glyphs)
        elif matrix:
            state = _summary(rows)
        else:
            state = _state(str(rows[0].get("status")), glyphs)
        if not matrix:
            row = rows[0]
            lines.append((label, state, elapsed(row, now), _job(row), _reason(row)))
            continue
        lines.append((label, state, "", "", ""))
        for index, row in enumerate(rows):
            twig = glyphs.last if index == len(rows) - 1 else glyphs.tee
            lines.append(
                (
                    under + twig + clean(_matrix(row)),
                    _state(str(row.get("status")), glyphs),
                    elapsed(row, now),
                    _job(row),
                    _reason(row),
                )
            )
    return _columns(lines)


def _job(row: Mapping[str, Any]) -> str:
    return clean(dash(row.get("job_id")))


def _reason(row: Mapping[str, Any]) -> str:
    return truncate(clean(row.get("reason") or ""), 100)


def _columns(lines: Sequence[tuple[str, str, str, str, str]]) -> list[str]:
    cells = [(truncate(a), b, c, d, e) for a, b, c, d, e in lines]
    widths = [max((len(line[i]) for line in cells), default=0) for i in range(4)]
    out = []
    for label, state, took, job, reason in cells:
        text = (
            f"{label.ljust(widths[0])}  {state.ljust(widths[1])}  {took.rjust(widths[2])}  "
            f"{job.ljust(widths[3])}  {reason}"
        )
        out.append(text.rstrip())
    return out


def header(view: View) -> str:
    """'pipeline demo, run r...: failed (test failed: exited with code 1)'."""
    text = f"pipeline {clean(view.get('name'))}, run {clean(view.get('id'))}: "
    text += clean(view.get("state"))
    if view.get("reason"):
        text += f" ({clean(view.get('reason'))})"
    if view.get("generation"):
        text += f", retry {clean(view.get('generation'))}"
    return text


def approve_hint(run_id: object, step: object) -> str:
    return f"hodei pipeline approve {clean(run_id)} {clean(step)}"


def approval_lines(view: View) -> list[str]:
    return [
        f"{clean(name)} awaits approval: {approve_hint(view.get('id'), name)}"
        for name in sorted(_awaiting(view))
    ]


def show_run(view: View, now: float | None = None, glyphs: Glyphs = UNICODE) -> str:
    """`hodei pipeline show`: the header, the DAG and how to approve what waits."""
    lines = [header(view), *draw_dag(view, now, glyphs)]
    return "\n".join([*lines, *approval_lines(view)])


def frame(view: View, now: float | None, glyphs: Glyphs = UNICODE) -> list[str]:
    """What the live view on a terminal shows: the same as `show`."""
    return [header(view), *draw_dag(view, now, glyphs), *approval_lines(view)]


# --- one line per change, for a live view that is not a terminal -------------------------


def _key(row: Mapping[str, Any]) -> tuple[object, ...]:
    return (row.get("status"), row.get("job_id"), row.get("reason"), row.get("generation"))


def step_line(row: Mapping[str, Any]) -> str:
    """'test: failed in 0.4s (job r....1.0): exited with code 1'."""
    text = f"{clean(row.get('id'))}: {clean(row.get('status'))}"
    if row.get("duration_s") is not None:
        text += f" in {duration(row.get('duration_s'))}"
    if row.get("job_id"):
        text += f" (job {clean(row.get('job_id'))})"
    if row.get("reason"):
        text += f": {clean(row.get('reason'))}"
    return text


def changes(before: View | None, after: View) -> list[str]:
    """A line per step job whose status, job or reason changed, per manual step that now
    waits for approval, and one when the run starts waiting or running again; a job still
    pending when first seen is not worth a line."""
    lines: list[str] = []
    if before is not None and before.get("state") != after.get("state"):
        state = after.get("state")
        if state in ("waiting", "running"):
            lines.append(f"run {clean(after.get('id'))}: {clean(state)}")
    seen = {row.get("id"): row for row in _rows(before)} if before is not None else {}
    for row in _rows(after):
        prev = seen.get(row.get("id"))
        if prev is None and row.get("status") == "pending":
            continue
        if prev is None or _key(prev) != _key(row):
            lines.append(step_line(row))
    was = _awaiting(before) if before is not None else set()
    lines += [
        f"{clean(name)}: awaiting approval: {approve_hint(after.get('id'), name)}"
        for name in sorted(_awaiting(after) - was)
    ]
    return lines


def newly_failed(before: View | None, after: View) -> list[Mapping[str, Any]]:
    """Step jobs that failed since `before` and ran a job (whose log tells why)."""
    seen = {row.get("id"): row for row in _rows(before)} if before is not None else {}
    failed = []
    for row in _rows(after):
        if row.get("status") != "failed" or not row.get("job_id"):
            continue
        prev = seen.get(row.get("id"))
        if prev is None or _key(prev)[:2] != ("failed", row.get("job_id")):
            failed.append(row)
    return failed


def tail_lines(data: bytes, count: int = 40) -> bytes:
    """The last `count` lines of a log (a last line without its newline counts)."""
    lines = data.splitlines(keepends=True)
    return b"".join(lines[-count:]) if count > 0 else b""


# --- the list ---------------------------------------------------------------------------


def steps_done(run: Mapping[str, Any]) -> str:
    counts = run.get("counts")
    if not isinstance(counts, Mapping):
        return "-"
    numbers = {k: v for k, v in counts.items() if isinstance(v, int) and not isinstance(v, bool)}
    done = sum(v for k, v in numbers.items() if k in DONE)
    return f"{done}/{sum(numbers.values())}"


def runs_table(items: Sequence[Mapping[str, Any]]) -> str:
    headers = ("ID", "NAME", "STATE", "STEPS", "CREATED", "REASON")
    rows = [
        (
            run.get("id"),
            run.get("name"),
            run.get("state"),
            steps_done(run),
            when(run.get("created_at")),
            dash(run.get("reason")),
        )
        for run in items
    ]
    return table(headers, rows)
