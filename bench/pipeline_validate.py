"""Time to parse and validate a generated pipeline of 10,000 steps (and to build its DAG).

    python bench/pipeline_validate.py [steps]

Each step needs the one before it and one ten before that, so the file has about two needs
edges a step, an expression every tenth step, and a 4-job matrix every hundredth.
"""

from __future__ import annotations

import sys
import time

from hodei.domain.pipelines import Limits, build_dag, parse_pipeline


def generate(steps: int) -> str:
    lines = ["name: bench", "params:", "  greeting: hello", "steps:"]
    for i in range(steps):
        lines.append(f"  s{i}:")
        needs = [f"s{j}" for j in (i - 1, i - 10) if j >= 0]
        if needs:
            lines.append(f"    needs: [{', '.join(needs)}]")
        if i % 100 == 50:
            lines.append("    matrix: {py: ['3.11', '3.12'], os: [linux, mac]}")
            lines.append("    run: echo ${{ matrix.py }} ${{ matrix.os }}")
        elif i % 10 == 0:
            lines.append("    run: echo ${{ params.greeting }}")
        else:
            lines.append(f"    run: echo step {i}")
    return "\n".join(lines) + "\n"


def main() -> None:
    steps = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    text = generate(steps)
    limits = Limits(max_steps=steps, max_jobs=steps * 4)
    started = time.perf_counter()
    pipeline = parse_pipeline(text, limits=limits)
    parsed = time.perf_counter()
    dag = build_dag(pipeline)
    built = time.perf_counter()
    print(
        f"{steps} steps, {len(text) / 1024:.0f} KiB, {len(dag.all_jobs())} jobs: "
        f"parse + validate {(parsed - started) * 1000:.0f} ms, DAG {(built - parsed) * 1000:.0f} ms"
    )


if __name__ == "__main__":
    main()
