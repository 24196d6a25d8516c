"""Pipeline files at scale: large valid files and large bad ones are read in about linear time,
with the same messages as a direct reading would give (suggestions, order, the cut)."""

from __future__ import annotations

import difflib
import gc
import itertools
import random

from hodei.domain.pipelines import Limits, check_pipeline, parse_pipeline
from hodei.domain.pipelines.parse import suggest


def checked(text: str, limits: Limits) -> tuple[tuple[tuple[int, int, str], ...], bool]:
    """(the issues as tuples, whether a pipeline came out). How long it takes is measured by
    bench/pipeline_validate.py, not here."""
    pipeline, found = check_pipeline(text, limits=limits)
    return tuple((i.line, i.column, i.message) for i in found), pipeline is not None


def test_suggestions_are_difflibs() -> None:
    rng = random.Random(0)
    letters = "abcstep01_-"
    for _ in range(3000):
        candidates = [
            "".join(rng.choice(letters) for _ in range(rng.randint(0, 9)))
            for _ in range(rng.choice([0, 3, 17, 60, 300]))
        ]
        word = "".join(rng.choice(letters) for _ in range(rng.randint(0, 9)))
        close = difflib.get_close_matches(word, candidates, n=1, cutoff=0.6)
        assert suggest(word, candidates) == (f" (did you mean {close[0]!r}?)" if close else "")


def test_a_chain_reading_its_first_steps_output() -> None:
    lines = ["name: chain", "steps:", "  s0: {run: echo, outputs: [v]}"]
    for i in range(1, 10_000):
        lines.append(f"  s{i}: {{needs: [s{i - 1}], run: 'echo ${{{{ steps.s0.outputs.v }}}}'}}")
    lines.append("  loose: {run: 'echo ${{ steps.s0.outputs.v }}'}")
    limits = Limits(max_steps=10_001, max_jobs=10_001)
    found, _ = checked("\n".join(lines) + "\n", limits)
    message = "${{ steps.s0.outputs.v }}: step 'loose' does not need 's0' (add it to needs)"
    assert found == ((10_003, 16, message),)


def test_many_unknown_needs() -> None:
    steps = "".join(f"  step{i}: {{needs: [stepx{i}], run: echo}}\n" for i in range(1000))
    found, _ = checked("name: x\nsteps:\n" + steps, Limits())
    assert len(found) == 201
    assert found[0] == (3, 19, "step 'step0' needs unknown step 'stepx0' (did you mean 'step0'?)")
    assert found[-1] == (202, 21, "... and 800 more")


def test_suggestions_keep_the_order_of_whole_messages() -> None:
    text = (
        "name: x\nparams: {aa: '1', bb: '2'}\nsteps:\n  s:\n"
        "    run: echo ${{ params.b }} ${{ params.a }} ${{ params.c }} ${{ params.aa }}\n"
    )
    found, _ = checked(text, Limits(max_errors=2))
    assert found == (
        (5, 10, "${{ params.a }}: no param 'a' is declared (did you mean 'aa'?)"),
        (5, 10, "${{ params.b }}: no param 'b' is declared (did you mean 'bb'?)"),
        (5, 10, "... and 1 more"),
    )


def test_many_exclude_entries() -> None:
    axes = ", ".join(f"a{i}: [x, y]" for i in range(16))
    excluded = ", ".join(f"{{a{i % 4}: x, a{i % 4 + 1}: y}}" for i in range(3000))
    text = f"name: x\nsteps:\n  t:\n    run: echo\n    matrix: {{{axes}, exclude: [{excluded}]}}\n"
    found, _ = checked(text, Limits())
    # Kept: the combinations where no a_i (i < 4) is x with a_i+1 y.
    kept = sum(
        1
        for combo in itertools.product("xy", repeat=16)
        if not any(combo[i] == "x" and combo[i + 1] == "y" for i in range(4))
    )
    assert found == ((5, 13, f"the matrix of step 't' expands to {kept} jobs (more than 256)"),)


def test_exclusions_keep_the_combinations_in_order() -> None:
    text = """\
name: x
steps:
  t:
    run: echo
    matrix:
      os: [linux, mac, win]
      py: ['3.11', '3.12']
      arch: [x86, arm]
      exclude: [{os: mac, arch: arm}, {py: '3.11', os: win}, {os: mac, arch: arm, py: '3.12'}]
"""
    matrix = parse_pipeline(text).steps["t"].matrix
    assert matrix is not None
    expected = [
        combo
        for combo in itertools.product(["linux", "mac", "win"], ["3.11", "3.12"], ["x86", "arm"])
        if not (combo[0] == "mac" and combo[2] == "arm")
        and not (combo[1] == "3.11" and combo[0] == "win")
    ]
    assert [tuple(value for _, value in combo) for combo in matrix.combinations] == expected


def test_the_collector_is_left_as_it_was() -> None:
    text = "name: x\nsteps:\n  a: {run: echo}\n"
    assert gc.isenabled()
    check_pipeline(text)
    check_pipeline("a: [\n")
    assert gc.isenabled()
    gc.disable()
    try:
        check_pipeline(text)
        assert not gc.isenabled()
    finally:
        gc.enable()
