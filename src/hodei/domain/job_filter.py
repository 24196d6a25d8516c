"""Which jobs a list (or a live feed of changes) shows: by state, name, labels and pipeline run.

The stores push these filters into their queries (list_jobs); `JobFilter.matches` is the same
rule for one job in memory (the in-memory store, the live feed of `GET /api/v1/jobs/events`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from hodei.domain.jobs import _LABEL_KEY_RE, MAX_LABEL_VALUE, MAX_LABELS, MAX_NAME, Job, JobState
from hodei.domain.jobs import shown as _shown
from hodei.domain.pipelines.runs import valid_run_id
from hodei.errors import ValidationError

# Only ASCII letters fold: the three stores (SQLite's lower(), PostgreSQL's under any locale,
# Python's) agree on those alone, and one rule everywhere beats a better one in some places.
_FOLD_TEXT = {upper: upper + 32 for upper in range(ord("A"), ord("Z") + 1)}


def fold(text: str) -> str:
    """`text` with ASCII letters in lower case (what the name filter compares)."""
    return text.translate(_FOLD_TEXT)


@dataclass(frozen=True, slots=True)
class JobFilter:
    """Every given part must match; an empty filter matches every job."""

    state: JobState | None = None
    name: str | None = None  # a substring of the job's name, ASCII letters in either case
    labels: tuple[tuple[str, str], ...] = ()  # (key, value) pairs, all present on the job
    pipeline: str | None = None  # a run id: the jobs of its steps (ids RUN.INDEX.GENERATION)

    def matches(self, job: Job) -> bool:
        if self.state is not None and job.state is not self.state:
            return False
        if self.name and fold(self.name) not in fold(job.spec.name):
            return False
        if self.pipeline is not None and not job.id.startswith(self.pipeline + "."):
            return False
        labels = job.spec.labels
        return all(labels.get(key) == value for key, value in self.labels)

    @property
    def label_map(self) -> dict[str, str] | None:
        return dict(self.labels) if self.labels else None


def check_labels(labels: Mapping[str, str] | None) -> tuple[tuple[str, str], ...]:
    """The label filter as sorted pairs; ValidationError for a key no job can have (the SQL
    stores put keys in JSON paths: only well-formed ones may get there)."""
    if not labels:
        return ()
    if len(labels) > MAX_LABELS:
        raise ValidationError(f"too many label filters ({len(labels)} > {MAX_LABELS})")
    for key, value in labels.items():
        if not isinstance(key, str) or not _LABEL_KEY_RE.fullmatch(key):
            raise ValidationError(f"invalid label key {_shown(key)}")
        if not isinstance(value, str) or len(value) > MAX_LABEL_VALUE or "\x00" in value:
            raise ValidationError(f"invalid label value for {_shown(key)}")
    return tuple(sorted(labels.items()))


def check_name(name: str | None) -> str | None:
    if not name:
        return None
    if len(name) > MAX_NAME or "\x00" in name:
        raise ValidationError(f"name filter must be at most {MAX_NAME} characters without NUL")
    return name


def check_pipeline(run_id: str | None) -> str | None:
    if not run_id:
        return None
    if not valid_run_id(run_id):
        raise ValidationError(f"invalid pipeline run id {_shown(run_id)} (expected rHEX)")
    return run_id


def parse_labels(pairs: Iterable[str]) -> dict[str, str]:
    """`key=value` strings (a repeated query parameter) to a map; ValidationError for one
    without '=' or a key given twice with different values (no job could match). Empty
    strings are skipped, as an empty `name` or `pipeline` is no filter."""
    out: dict[str, str] = {}
    for pair in pairs:
        if not pair:
            continue
        key, sep, value = pair.partition("=")
        if not sep:
            raise ValidationError(f"label filter {_shown(pair)} must be key=value")
        if out.get(key, value) != value:
            raise ValidationError(f"label {_shown(key)} asked with two values")
        out[key] = value
    return out


def job_filter(
    state: JobState | None = None,
    name: str | None = None,
    labels: Mapping[str, str] | None = None,
    pipeline: str | None = None,
) -> JobFilter:
    """A checked filter; ValidationError for a part no job could have."""
    return JobFilter(
        JobState(state) if state is not None else None,
        check_name(name),
        check_labels(labels),
        check_pipeline(pipeline),
    )
