"""Generated job ids: unique even when many are made within one millisecond."""

from __future__ import annotations

import os

from hodei.domain.jobs import new_job_id, validate_job_id


def test_ids_made_in_a_burst_never_repeat_and_stay_valid() -> None:
    ids = [new_job_id() for _ in range(100_000)]  # far more than one per millisecond
    assert len(set(ids)) == len(ids)
    assert all(validate_job_id(i) == i and len(i) == 17 for i in ids[:100])


def test_a_forked_child_does_not_repeat_its_parents_ids() -> None:
    new_job_id()  # the parent has random bytes in hand
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.write(write, "".join(new_job_id()[11:] for _ in range(50)).encode())
        os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    child = os.read(read, 10_000).decode()
    os.close(read)
    parent = "".join(new_job_id()[11:] for _ in range(50))
    assert child and child != parent
