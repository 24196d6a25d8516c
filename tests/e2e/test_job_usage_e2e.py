"""What a job used, as a user sees it: `hodei show JOB` prints its CPU time and peak memory,
and the REST attempt carries them. Lower bounds only."""

from __future__ import annotations

import json
import re
import sys

import pytest
from harness import RunningServer

pytestmark = pytest.mark.e2e

BURN = (
    "import time\n"
    "block = b'x' * (64 << 20)\n"
    "while time.process_time() < 0.3:\n"
    "    pass\n"
    "print(len(block))\n"
)


def _mib(text: str) -> float:
    number, unit = re.fullmatch(r"([\d.]+)(B|KiB|MiB|GiB|TiB)", text).groups()  # type: ignore[union-attr]
    scale = {"B": 1 / (1 << 20), "KiB": 1 / 1024, "MiB": 1, "GiB": 1024, "TiB": 1 << 20}
    return float(number) * scale[unit]


def test_show_prints_the_cpu_time_and_peak_memory_of_a_job(server: RunningServer) -> None:
    out = server.hodei("submit", "--name", "burn", "--", sys.executable, "-c", BURN)
    assert out.returncode == 0, out.stderr.decode()
    job_id = out.stdout.decode().strip()
    server.wait_state(job_id, {"succeeded"})

    shown = server.hodei("show", job_id)
    assert shown.returncode == 0, shown.stderr.decode()
    lines = shown.stdout.decode().splitlines()
    fields = dict(line.split(": ", 1) for line in lines if ": " in line)
    cpu = fields["cpu time (attempt 1)"].strip()
    peak = fields["peak memory (attempt 1)"].strip()
    assert cpu.endswith("s") and float(cpu[:-1]) > 0.1
    assert _mib(peak) >= 50
    table = lines[lines.index("attempts:") + 1 :]
    header = table[0].split()
    assert header[6:9] == ["CPU", "PEAK", "MEM"]
    row = table[1].split()
    assert row[:3] == ["1", "succeeded", "0"]
    # STARTED and FINISHED are two words each: CPU is two columns further in a row.
    assert float(row[header.index("CPU") + 2].rstrip("s")) > 0.1

    (attempt,) = json.loads(server.hodei("show", job_id, "-o", "json").stdout)["attempt_history"]
    assert attempt["cpu_seconds"] > 0.1 and attempt["peak_memory_bytes"] >= 50 << 20
    assert isinstance(attempt["read_bytes"], int) and isinstance(attempt["written_bytes"], int)
