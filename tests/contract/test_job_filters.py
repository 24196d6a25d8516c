"""The JobStore contract of list_jobs' filters (name, labels, pipeline, with state and paging),
on every store adapter."""

from __future__ import annotations

from typing import Any

import pytest

from hodei.domain.jobs import Job, JobSpec, JobState
from hodei.errors import ValidationError
from hodei.ports import JobStore

Q, A, R = JobState.QUEUED, JobState.ASSIGNED, JobState.RUNNING
RUN = "r0123456789abcdef0"
OTHER_RUN = "r0123456789abcdef1"


def job(job_id: str, name: str = "", **labels: str) -> Job:
    spec = JobSpec(command="echo hi", name=name, labels=labels)
    return Job(id=job_id, spec=spec, created_at=1000.0)


async def ids(store: JobStore, **kwargs: Any) -> list[str]:
    """Every matching id, newest first, read page by page (3 at a time)."""
    out: list[str] = []
    cursor = None
    while True:
        items, cursor = await store.list_jobs(limit=3, cursor=cursor, **kwargs)
        out += [j.id for j in items]
        if cursor is None:
            return out


async def test_name_is_a_substring_in_either_case(store: JobStore) -> None:
    for job_id, name in [
        ("a", "Nightly Build"),
        ("b", "build-docs"),
        ("c", "deploy"),
        ("d", ""),
        ("e", "REBUILD"),
        ("f", "b_u%ild"),  # LIKE's wildcards are plain characters here
    ]:
        await store.create_job(job(job_id, name))
    assert await ids(store, name="build") == ["e", "b", "a"]
    assert await ids(store, name="BUILD") == ["e", "b", "a"]
    assert await ids(store, name="ly b") == ["a"]
    assert await ids(store, name="%") == ["f"]
    assert await ids(store, name="_u%") == ["f"]
    assert await ids(store, name="nothing") == []
    assert len(await ids(store, name="")) == 6  # empty: no filter


async def test_name_folds_ascii_letters_only(store: JobStore) -> None:
    await store.create_job(job("a", "Équipe été"))
    await store.create_job(job("b", "équipe ÉTÉ"))
    assert await ids(store, name="ÉQUIPE") == ["a"]  # É and é differ, Q and q do not
    assert await ids(store, name="été") == ["a"]
    assert await ids(store, name="ÉTÉ") == ["b"]


async def test_labels_must_all_match(store: JobStore) -> None:
    await store.create_job(job("a", team="infra", env="prod"))
    await store.create_job(job("b", team="infra", env="dev"))
    await store.create_job(job("c", team="web", env="prod"))
    await store.create_job(job("d"))
    assert await ids(store, labels={"team": "infra"}) == ["b", "a"]
    assert await ids(store, labels={"team": "infra", "env": "prod"}) == ["a"]
    assert await ids(store, labels={"env": "prod"}) == ["c", "a"]
    assert await ids(store, labels={"team": "Infra"}) == []  # values match exactly
    assert await ids(store, labels={"missing": "x"}) == []
    assert len(await ids(store, labels={})) == 4


async def test_label_keys_and_values_with_path_characters(store: JobStore) -> None:
    quirky = {
        "app.kubernetes.io/name": "api",
        "x-y_z": "say \"hi\" \\ 'now'",
        "esc": "\\u0000 \\\\u0000 \\n",  # backslashes then text that looks like escapes
    }
    await store.create_job(Job(id="a", spec=JobSpec(command="x", labels=quirky), created_at=1.0))
    await store.create_job(job("b", **{"app": "api"}))
    assert await ids(store, labels={"app.kubernetes.io/name": "api"}) == ["a"]
    assert await ids(store, labels={"x-y_z": "say \"hi\" \\ 'now'"}) == ["a"]
    assert await ids(store, labels={"app": "api"}) == ["b"]  # not the key with dots
    assert await ids(store, labels={"esc": quirky["esc"]}) == ["a"]


async def test_pipeline_is_its_steps_jobs_of_every_generation(store: JobStore) -> None:
    for job_id in [f"{RUN}.0.1", f"{RUN}.1.1", "plain", f"{OTHER_RUN}.0.1", f"{RUN}.10.2"]:
        await store.create_job(job(job_id))
    await store.create_job(job(RUN))  # a client's job named like the run is not one of its steps
    await store.create_job(job(f"{RUN}.1.2"))
    assert await ids(store, pipeline=RUN) == [
        f"{RUN}.1.2",
        f"{RUN}.10.2",
        f"{RUN}.1.1",
        f"{RUN}.0.1",
    ]
    assert await ids(store, pipeline=OTHER_RUN) == [f"{OTHER_RUN}.0.1"]
    assert await ids(store, pipeline="r" + "f" * 17) == []


async def test_filters_combine_with_state_and_page(store: JobStore) -> None:
    expected = []
    for n in range(30):
        step = n % 2 == 0
        job_id = f"{RUN}.{n}.1" if step else f"j{n}"
        name = "Build" if n % 3 == 0 else "test"
        labels = {"team": "infra"} if n % 5 != 0 else {"team": "web"}
        await store.create_job(job(job_id, name, **labels))
        if n % 4 == 0:
            await store.transition(job_id, {Q}, A)
        if step and name == "Build" and labels["team"] == "infra" and n % 4 == 0:
            expected.append(job_id)
    got = await ids(store, state=A, name="build", labels={"team": "infra"}, pipeline=RUN)
    assert got == expected[::-1] and len(got) == 2  # n = 12, 24
    assert await ids(store, state=Q, pipeline=RUN) == [
        f"{RUN}.{n}.1" for n in range(28, -1, -2) if n % 4
    ]
    items, cursor = await store.list_jobs(A, 2, None, name="BUILD")
    assert [j.id for j in items] == [f"{RUN}.24.1", f"{RUN}.12.1"] and cursor is not None
    items, cursor = await store.list_jobs(A, 2, cursor, name="BUILD")
    assert [j.id for j in items] == [f"{RUN}.0.1"] and cursor is None
    assert all(j.state is A for j in items)


async def test_a_job_changed_later_is_found_by_its_state_not_its_old_one(store: JobStore) -> None:
    await store.create_job(job("a", "build", team="infra"))
    await store.transition("a", {Q}, A)
    assert await ids(store, state=Q, name="build") == []
    assert await ids(store, state=A, labels={"team": "infra"}) == ["a"]


@pytest.mark.parametrize(
    "kwargs",
    [
        {"labels": {"bad key": "x"}},
        {"labels": {'a"b': "x"}},
        {"labels": {"k": "nul\x00"}},
        {"pipeline": "not-a-run"},
        {"pipeline": f"{RUN}.0.1"},
        {"name": "x" * 201},
        {"name": "nul\x00"},
    ],
)
async def test_a_filter_no_job_could_meet_is_refused(store: JobStore, kwargs: Any) -> None:
    with pytest.raises(ValidationError):
        await store.list_jobs(**kwargs)


async def test_filters_read_jobs_whose_specs_hold_any_character(store: JobStore) -> None:
    spec = JobSpec(command="run \x00 and ünïcode", name="Odd \u2028 one", labels={"k": "v"})
    await store.create_job(Job(id="odd", spec=spec, created_at=1.0))
    await store.create_job(job("plain", "odd", k="v"))
    assert await ids(store, name="ODD", labels={"k": "v"}) == ["plain", "odd"]
    assert await ids(store, name="\u2028") == ["odd"]
