"""The demo job `hodei server --demo` runs: a short script with colours and a steady beat."""

from __future__ import annotations

from hodei.domain.jobs import JobSpec

DEMO_SCRIPT = r"""#!/usr/bin/env bash
set -euo pipefail
printf '\033[1;36mHodei Jobs demo\033[0m on %s (job %s)\n' "$(hostname)" "$HODEI_JOB_ID"
for i in 1 2 3 4 5; do
  printf '\033[32mstep %d/5\033[0m working...\n' "$i"
  sleep 0.4
done
printf '\033[1;32mdone\033[0m\n'
"""


def demo_job() -> JobSpec:
    return JobSpec(command=DEMO_SCRIPT, name="demo", queued_by="demo")
