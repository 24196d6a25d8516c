"""Time to parse and validate a generated pipeline of 10,000 steps (and to build its DAG).

    python bench/pipeline_validate.py [steps] [--scaling]

Two shapes of the same size: deep (each step needs the one before it and the one ten before
that: one chain through the whole file) and wide (each step needs one of the first ten:
ten roots, everything else side by side). Both have about two needs edges a step (deep) or
one (wide), an expression every tenth step, a step reading another's output every
fiftieth, and a 4-job matrix every hundredth. Each figure is the best of a few runs, as the
machine may be busy. --scaling also times 1,000 and 20,000 steps: the time must grow
linearly with the file.
"""

from __future__ import annotations

import sys
import time

from hodei.domain.pipelines import Limits, build_dag, parse_pipeline

TARGET_MS = 100  # parse + validate of 10,000 steps
RUNS = 5


def generate(steps: int, shape: str = "deep") -> str:
    lines = ["name: bench", "params:", "  greeting: hello", "steps:"]
    for i in range(steps):
        lines.append(f"  s{i}:")
        if shape == "deep":
            needs = [f"s{j}" for j in (i - 1, i - 10) if j >= 0]
        else:
            needs = [f"s{i % 10}"] if i >= 10 else []
        if needs:
            lines.append(f"    needs: [{', '.join(needs)}]")
        if i % 100 == 50:
            lines.append("    matrix: {py: ['3.11', '3.12'], os: [linux, mac]}")
            lines.append("    run: echo ${{ matrix.py }} ${{ matrix.os }}")
        elif i % 50 == 20:  # reads the output of a step it needs (deep: through 10 others)
            source = "s10" if shape == "deep" else f"s{i % 10}"
            lines.append(f"    run: echo ${{{{ steps.{source}.outputs.version }}}}")
        elif i % 10 == 0:
            lines.append("    run: echo ${{ params.greeting }}")
            if i < 20:
                lines.append("    outputs: [version]")
        else:
            lines.append(f"    run: echo step {i}")
    return "\n".join(lines) + "\n"


def measure(steps: int, shape: str) -> tuple[float, float, int, int]:
    """(best parse + validate ms, best DAG ms, KiB, jobs)."""
    text = generate(steps, shape)
    limits = Limits(max_bytes=max(len(text), 1 << 20), max_steps=steps, max_jobs=steps * 4)
    parse_ms = dag_ms = float("inf")
    jobs = 0
    for _ in range(RUNS):
        started = time.perf_counter()
        pipeline = parse_pipeline(text, limits=limits)
        parsed = time.perf_counter()
        dag = build_dag(pipeline)
        built = time.perf_counter()
        parse_ms = min(parse_ms, (parsed - started) * 1000)
        dag_ms = min(dag_ms, (built - parsed) * 1000)
        jobs = len(dag.all_jobs())
    return parse_ms, dag_ms, len(text) // 1024, jobs


def main() -> None:
    args = [arg for arg in sys.argv[1:] if not arg.startswith("--")]
    steps = int(args[0]) if args else 10_000
    sizes = [1_000, steps, 2 * steps] if "--scaling" in sys.argv else [steps]
    print(f"target: parse + validate of 10000 steps in under {TARGET_MS} ms (best of {RUNS} runs)")
    for shape in ("deep", "wide"):
        for size in sizes:
            parse_ms, dag_ms, kib, jobs = measure(size, shape)
            per_step = parse_ms * 1000 / size
            print(
                f"{shape}: {size} steps, {kib} KiB, {jobs} jobs: parse + validate "
                f"{parse_ms:.0f} ms ({per_step:.1f} us a step), DAG {dag_ms:.0f} ms"
            )


if __name__ == "__main__":
    main()
