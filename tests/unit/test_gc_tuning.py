"""The long-running processes move their start-up objects out of the collector's sight."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import gc
from hodei.gc_tuning import long_lived_from_here

class Node:
    pass

a, b = Node(), Node()
a.other, b.other = b, a  # a cycle that is already garbage: collected, not kept for good
del a, b
assert gc.get_freeze_count() == 0
long_lived_from_here()
frozen = gc.get_freeze_count()
assert frozen > 1000, frozen  # the imported modules' objects
assert not any(type(o).__name__ == "Node" for o in gc.get_objects())
assert sum(len(gc.get_objects(g)) for g in range(3)) < frozen  # what is left to walk is small
assert gc.get_threshold()[0] == 10_000
print("ok")
"""


def test_start_up_objects_are_frozen_and_garbage_is_freed_first() -> None:
    # In a process of its own: freezing is for good, the test process must not do it.
    out = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60, check=False
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
