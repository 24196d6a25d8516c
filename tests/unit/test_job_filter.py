"""The job filter of lists and live feeds (domain.job_filter), and the spec-text fragments the
SQL stores test before reading a spec's JSON (they must be in the text of every match)."""

from __future__ import annotations

import pytest

from hodei.adapters.store.common import encode_spec, label_fragment, spec_fragment
from hodei.domain.job_filter import fold, job_filter, parse_labels
from hodei.domain.jobs import Job, JobSpec, JobState
from hodei.errors import ValidationError

RUN = "r0123456789abcdef0"


def job(job_id: str = "j", name: str = "", state: JobState = JobState.QUEUED, **labels: str) -> Job:
    return Job(id=job_id, spec=JobSpec(command="x", name=name, labels=labels), state=state)


def test_an_empty_filter_matches_every_job() -> None:
    assert job_filter().matches(job())
    assert job_filter(name="", labels={}, pipeline="").matches(job())


def test_each_part_must_match() -> None:
    wanted = job_filter(JobState.RUNNING, "Build", {"team": "infra"}, RUN)
    ok = job(f"{RUN}.3.1", "nightly BUILD", JobState.RUNNING, team="infra", extra="1")
    assert wanted.matches(ok)
    assert not wanted.matches(job(f"{RUN}.3.1", "nightly BUILD", JobState.QUEUED, team="infra"))
    assert not wanted.matches(job(f"{RUN}.3.1", "deploy", JobState.RUNNING, team="infra"))
    assert not wanted.matches(job(f"{RUN}.3.1", "build", JobState.RUNNING, team="web"))
    assert not wanted.matches(job("other.3.1", "build", JobState.RUNNING, team="infra"))
    assert not wanted.matches(job(RUN, "build", JobState.RUNNING, team="infra"))


def test_fold_changes_ascii_letters_only() -> None:
    assert fold("ÉTÉ Abc-Z") == "ÉtÉ abc-z"


def test_labels_from_query_pairs() -> None:
    assert parse_labels(["a=1", "b=x=y", "c=", "a=1", ""]) == {"a": "1", "b": "x=y", "c": ""}
    for bad in (["novalue"], ["a=1", "a=2"]):
        with pytest.raises(ValidationError):
            parse_labels(bad)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"labels": {"": "x"}},
        {"labels": {"-lead": "x"}},
        {"labels": {f"k{n}": "v" for n in range(65)}},
        {"labels": {"k": "v" * 1025}},
        {"pipeline": "R0123456789ABCDEF0"},
        {"name": "a" * 201},
    ],
)
def test_bad_filters_are_refused(kwargs: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        job_filter(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "name",
    ["Plain", 'quo"te \\ back', "tab\there\nnew", "ünï\u2028cödé", "\x01\x1f ctl", "A" * 200],
)
def test_a_spec_holds_the_fragments_of_its_name_and_labels(name: str) -> None:
    labels = {"app.kubernetes.io/name": name, "x": "1"}
    text = encode_spec(JobSpec(command="run", name=name, labels=labels, env={"E": name}))
    for start, end in [(0, len(name)), (1, len(name) - 1), (len(name) // 2, len(name))]:
        part = name[start:end]
        assert spec_fragment(fold(part)) in fold(text)  # the quick test of the name filter
    for key, value in labels.items():
        assert label_fragment(key, value) in text
