"""Pipeline files: the format, every kind of error at its line and column, and the limits."""

from __future__ import annotations

import time

import pytest

from hodei.domain.pipelines import (
    Issue,
    Limits,
    ParamType,
    PipelineError,
    When,
    build_dag,
    check_pipeline,
    parse_pipeline,
)

CONTRACT = """\
name: demo
steps:
  build:
    run: echo building > out.txt
    artifacts: [out.txt]
  test:
    needs: [build]
    run: cat out.txt
"""


def issues(text: str, limits: Limits | None = None) -> list[tuple[int, int, str]]:
    pipeline, found = check_pipeline(text, limits=limits or Limits())
    assert pipeline is None, "expected the file to be refused"
    return [(i.line, i.column, i.message) for i in found]


def only(text: str, limits: Limits | None = None) -> tuple[int, int, str]:
    found = issues(text, limits)
    assert len(found) == 1, found
    return found[0]


def test_the_smallest_form() -> None:
    pipeline = parse_pipeline(CONTRACT)
    assert pipeline.name == "demo"
    assert list(pipeline.steps) == ["build", "test"]
    build, test = pipeline.steps["build"], pipeline.steps["test"]
    assert build.run == "echo building > out.txt"
    assert build.artifacts == ("out.txt",)
    assert test.needs == ("build",)
    assert test.when is When.ON_SUCCESS
    assert (build.line, build.column) == (3, 3)


def test_every_step_field() -> None:
    text = """\
name: full
description: every field
env: {A: "1"}
params:
  who: world
  n: {type: int, default: 3}
  flag: {type: bool, default: true}
  where: {type: choice, options: [eu, us], default: eu, description: region}
  needed: {type: string}
steps:
  a:
    command: /bin/echo
    args: [hello, "${{ params.who }}"]
    labels: {os: linux}
    cpu: 0.5
    memory: 512M
    timeout: 1h30m
    retries: 2
    priority: -5
    env: {B: "${{ env.A }}", PORT: 8080}
    secrets: [TOKEN]
    image: python:3.12
    outputs: [version, sha]
    when: always
    continue_on_error: true
    cache: true
    description: first
  b:
    needs: a
    run: echo ${{ steps.a.outputs.version }}
    cache: {key: "k-${{ params.n }}"}
"""
    pipeline = parse_pipeline(text)
    a, b = pipeline.steps["a"], pipeline.steps["b"]
    assert a.command == "/bin/echo" and a.args == ("hello", "${{ params.who }}")
    assert (a.cpu, a.memory_bytes, a.timeout_s) == (0.5, 512 << 20, 5400)
    assert (a.retries, a.priority, a.image) == (2, -5, "python:3.12")
    assert a.env == {"B": "${{ env.A }}", "PORT": "8080"}  # scalars as written
    assert a.secrets == ("TOKEN",) and a.outputs == ("version", "sha")
    assert a.when is When.ALWAYS and a.continue_on_error
    assert a.cache is not None and a.cache.key is None
    assert b.needs == ("a",) and b.cache is not None and b.cache.key == "k-${{ params.n }}"
    params = pipeline.params
    assert params["who"].default == "world" and params["who"].type is ParamType.STRING
    assert params["n"].default == "3" and params["flag"].default == "true"
    assert params["where"].options == ("eu", "us") and params["where"].description == "region"
    assert params["needed"].required


def test_bytes_input_and_timeouts_as_numbers() -> None:
    pipeline = parse_pipeline(b"name: x\nsteps:\n  a: {run: echo, timeout: 90, memory: 1024}\n")
    assert pipeline.steps["a"].timeout_s == 90 and pipeline.steps["a"].memory_bytes == 1024


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "name: x\nsteps:\n  a:\n    run: echo\n    nedds: [b]\n",
            (5, 5, "unknown field 'nedds' in step 'a' (did you mean 'needs'?)"),
        ),
        (
            "name: x\nstep:\n  a: {run: echo}\nsteps:\n  a: {run: echo}\n",
            (2, 1, "unknown field 'step' in the pipeline (did you mean 'steps'?)"),
        ),
        (
            "name: x\nsteps:\n  a:\n    run: [echo]\n",
            (4, 10, "run of step 'a' must be a string, not a list"),
        ),
        (
            "name: x\nsteps:\n  a:\n    run: echo\n    retries: lots\n",
            (5, 14, "retries of step 'a' must be a whole number, not the string 'lots'"),
        ),
        (
            "name: x\nsteps:\n  a:\n    run: echo\n    retries: 101\n",
            (5, 14, "retries of step 'a' must be between 0 and 100"),
        ),
        (
            "name: x\nsteps:\n  a:\n    run: echo\n    continue_on_error: maybe\n",
            (5, 24, "continue_on_error of step 'a' must be true or false, not the string 'maybe'"),
        ),
        (
            "name: x\nsteps:\n  a:\n    run: echo\n    cpu: 2000\n",
            (5, 10, "cpu of step 'a' must be between 0 and 1024 cores"),
        ),
        (
            "name: x\nsteps:\n  a:\n    run: echo\n    memory: lots\n",
            (5, 13, "memory of step 'a': invalid size 'lots' (use e.g. 512M, 2G)"),
        ),
        (
            "name: x\nsteps:\n  a:\n    run: echo\n    timeout: 10x\n",
            (5, 14, "timeout of step 'a': invalid duration '10x' (use e.g. 30s, 5m, 1h30m)"),
        ),
        (
            "name: x\nsteps:\n  a:\n    run: echo\n    timeout: 60d\n",
            (5, 14, "timeout of step 'a' must be between 0 and 30 days"),
        ),
        (
            "name: x\nsteps:\n  a:\n    run: echo\n    when: on_sucess\n",
            (
                5,
                11,
                "unknown when 'on_sucess' of step 'a' (on_success, on_failure, always or "
                "manual) (did you mean 'on_success'?)",
            ),
        ),
        (
            "name: x\nsteps:\n  a:\n    run: echo\n    command: echo\n",
            (5, 5, "step 'a' has both run and command (use one)"),
        ),
        ("name: x\nsteps:\n  a:\n    env: {}\n", (3, 3, "step 'a' has neither run nor command")),
        (
            "name: x\nsteps:\n  a:\n    run: echo\n    args: [x]\n",
            (5, 5, "args of step 'a' need command (run takes a command line)"),
        ),
        (
            "name: x\nsteps:\n  a:\n    run: echo\n    env: {1BAD: x}\n",
            (5, 11, "invalid key '1BAD' in env of step 'a'"),
        ),
        (
            "name: x\nsteps:\n  a:\n    run: echo\n    secrets: [bad-name]\n",
            (5, 15, "invalid name 'bad-name' in secrets of step 'a'"),
        ),
        (
            "name: x\nsteps:\n  a:\n    run: echo\n    outputs: [v, v]\n",
            (5, 18, "'v' is listed twice in outputs of step 'a'"),
        ),
        ("name: x\nsteps:\n  a:\n    run:\n", (4, 9, "run of step 'a' must not be empty")),
        (
            "name: 'a b'\nsteps:\n  a: {run: echo}\n",
            (1, 7, "invalid pipeline name 'a b' (use 1-64 letters, digits, '.', '_' or '-')"),
        ),
        ("steps:\n  a: {run: echo}\n", (1, 1, "the pipeline has no name")),
        ("name: x\n", (1, 1, "the pipeline has no steps")),
        ("name: x\nsteps: {}\n", (2, 8, "steps must not be empty")),
        (
            "name: x\nsteps: [a]\n",
            (2, 8, "steps must be a mapping of step names to steps, not a list"),
        ),
        ("- a\n", (1, 1, "the pipeline must be a mapping, not a list")),
        ("", (1, 1, "file is empty (a pipeline needs name and steps)")),
        (
            "name: x\nsteps:\n  a: {run: echo, cache: 3}\n",
            (
                3,
                25,
                "cache of step 'a' must be true, false or a mapping with key, not the number 3",
            ),
        ),
        (
            "name: x\nparams:\n  p: {type: float}\nsteps:\n  a: {run: echo}\n",
            (3, 13, "unknown type 'float' of param 'p' (string, int, bool or choice)"),
        ),
        (
            "name: x\nparams:\n  p: {type: choice}\nsteps:\n  a: {run: echo}\n",
            (3, 6, "param 'p' is a choice and needs options"),
        ),
        (
            "name: x\nparams:\n  p: {type: choice, options: [a, b], default: c}\nsteps:\n"
            "  a: {run: echo}\n",
            (3, 47, "the default of param 'p' must be one of its options"),
        ),
        (
            "name: x\nparams:\n  p: {type: int, default: x}\nsteps:\n  a: {run: echo}\n",
            (3, 27, "the default of param 'p' must be a whole number, not the string 'x'"),
        ),
        (
            "name: x\nparams:\n  p: {type: int, options: [1]}\nsteps:\n  a: {run: echo}\n",
            (3, 18, "options are for choice params only (param 'p' is int)"),
        ),
    ],
)
def test_each_error_at_its_line_and_column(text: str, expected: tuple[int, int, str]) -> None:
    assert only(text) == expected


def test_duplicate_keys_and_duplicate_step_names() -> None:
    text = "name: x\nsteps:\n  a:\n    run: echo\n    run: again\n  a:\n    run: echo\n"
    assert issues(text) == [
        (5, 5, "duplicate key 'run' in step 'a' (first at line 4)"),
        (6, 3, "duplicate step name 'a' (first at line 3)"),
    ]
    assert only("name: x\nname: y\nsteps:\n  a: {run: echo}\n") == (
        2,
        1,
        "duplicate key 'name' in the pipeline (first at line 1)",
    )


@pytest.mark.parametrize("name", ["a;b", "a b", "$(x)", "-a", "_a", "a" * 65, "a.b", "a`b`"])
def test_step_names_without_shell_metacharacters(name: str) -> None:
    line, column, message = only(f"name: x\nsteps:\n  '{name}':\n    run: echo\n")
    assert (line, column) == (3, 3)
    assert message.startswith("invalid step name")


def test_unknown_needs_with_a_suggestion() -> None:
    text = "name: x\nsteps:\n  build: {run: echo}\n  test:\n    needs: [biuld, nope]\n    run: x\n"
    assert issues(text) == [
        (5, 13, "step 'test' needs unknown step 'biuld' (did you mean 'build'?)"),
        (5, 20, "step 'test' needs unknown step 'nope'"),
    ]


def test_cycles_are_named_in_order() -> None:
    text = """\
name: x
steps:
  build:
    needs: [test]
    run: echo
  test:
    needs: [build]
    run: echo
  self:
    needs: [self]
    run: echo
  a: {needs: [c], run: echo}
  b: {needs: [a], run: echo}
  c: {needs: [b], run: echo}
"""
    assert issues(text) == [
        (7, 13, "cycle in needs: build -> test -> build"),
        (10, 13, "cycle in needs: self -> self"),
        (13, 15, "cycle in needs: a -> b -> c -> a"),
    ]


def test_artifact_paths() -> None:
    text = """\
name: x
steps:
  a:
    run: echo
    artifacts: [out.txt, "dist/**/*.whl", ../up, /etc/passwd, "a/../../b", "C:\\\\x", "~/x", ""]
"""
    found = issues(text)
    assert [message for _, _, message in found] == [
        "artifact path '../up' must not contain '..'",
        "artifact path '/etc/passwd' must be relative to the work directory",
        "artifact path 'a/../../b' must not contain '..'",
        "artifact path 'C:\\\\x' must be relative to the work directory",
        "artifact path '~/x' must be relative to the work directory",
        "an artifact of step 'a' must not be empty",
    ]
    assert found[0][:2] == (5, 43)
    ok = parse_pipeline("name: x\nsteps:\n  a: {run: echo, artifacts: ['dist/**/*.whl', 'a b']}\n")
    assert ok.steps["a"].artifacts == ("dist/**/*.whl", "a b")


def test_every_error_is_reported_at_once() -> None:
    text = """\
name: demo
steps:
  build:
    run: x
    nedds: [test]
    timeout: 10x
  test:
    needs: [build, nope]
    run: ${{ foo.bar }}
    artifacts: [../x]
  'a;b':
    run: y
"""
    with pytest.raises(PipelineError) as caught:
        parse_pipeline(text, filename="ci.yaml")
    error = caught.value
    assert [(i.line, i.column) for i in error.issues] == [
        (5, 5),
        (6, 14),
        (8, 20),
        (9, 10),
        (10, 17),
        (11, 3),
    ]
    lines = str(error).splitlines()
    assert lines[0] == "ci.yaml: 6 errors"
    assert lines[1] == "ci.yaml:5:5: unknown field 'nedds' in step 'build' (did you mean 'needs'?)"
    assert error.status == 400  # a ValidationError


def test_the_number_of_errors_is_bounded() -> None:
    steps = "".join(f"  s{i}: {{run: echo, bad: 1}}\n" for i in range(50))
    found = issues("name: x\nsteps:\n" + steps, Limits(max_errors=10))
    assert len(found) == 11 and found[-1][2] == "... and 40 more"


def test_invalid_yaml() -> None:
    line, _, message = only("name: x\nsteps:\n  a: {run: echo\n")
    assert message.startswith("invalid YAML") and line == 4
    assert only("name: x\n---\nname: y\n")[2] == "a pipeline file holds one YAML document only"
    assert only("name: !!python/object:os.system x\n")[2].startswith("YAML tag")
    assert only("name: x\nsteps: !!set {a}\n")[2].startswith("YAML tag")
    assert issues(b"name: \xff\n")[0][2] == "file is not UTF-8 (byte 6)"


def test_yaml_bomb_is_refused_fast() -> None:
    bomb = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for i in range(1, 12):
        prev = chr(ord("a") + i - 1)
        cur = chr(ord("a") + i)
        bomb.append(f"{cur}: &{cur} [{','.join(['*' + prev] * 9)}]")
    started = time.perf_counter()
    assert only("\n".join(bomb) + "\n") == (1, 4, "YAML anchors (&name) are not allowed")
    assert only("a: *x\n")[2] == "YAML aliases (*name) are not allowed"
    print(f"YAML bomb refused in {(time.perf_counter() - started) * 1000:.1f} ms")


def test_size_depth_and_node_limits() -> None:
    huge = "name: x\nsteps:\n  a:\n    run: " + "x" * (10 * 1024 * 1024) + "\n"
    started = time.perf_counter()
    assert only(huge) == (1, 1, "file too large (more than 1048576 bytes)")
    assert only(huge.encode()) == (1, 1, "file too large (more than 1048576 bytes)")
    print(f"10 MB file refused in {(time.perf_counter() - started) * 1000:.1f} ms")
    assert only("a: " + "é" * 600_000)[2].startswith("file too large")  # counted in bytes
    deep = "a: " + "[" * 40 + "]" * 40 + "\n"
    assert only(deep) == (1, 35, "nested too deeply (more than 32 levels)")
    deeper = "[" * 200_000 + "]" * 200_000
    assert "nest" in only(deeper)[2]  # refused by the parser or by the depth bound
    many = "a: [" + ",".join(["1"] * 1000) + "]\n"
    assert only(many, Limits(max_nodes=500))[2] == "too many YAML nodes (more than 500)"


def test_step_and_job_limits() -> None:
    steps = "".join(f"  s{i}: {{run: echo}}\n" for i in range(1001))
    assert only("name: x\nsteps:\n" + steps) == (3, 3, "too many steps (1001 > 1000)")
    matrix = "{a: [1,2,3,4,5,6,7,8], b: [1,2,3,4,5,6,7,8], c: [1,2,3,4,5]}"
    assert only(f"name: x\nsteps:\n  t:\n    run: echo\n    matrix: {matrix}\n") == (
        5,
        13,
        "the matrix of step 't' expands to 320 jobs (more than 256)",
    )
    jobs = "".join(
        f"  s{i}: {{run: echo, matrix: {{a: [1,2,3,4,5,6,7,8,9,10]}}}}\n" for i in range(3)
    )
    assert only("name: x\nsteps:\n" + jobs, Limits(max_jobs=25)) == (
        3,
        3,
        "the pipeline expands to 30 jobs (more than 25)",
    )


def test_ten_thousand_steps() -> None:
    lines = ["name: big", "steps:"]
    for i in range(10_000):
        needs = f", needs: [s{i - 1}]" if i else ""
        lines.append(f"  s{i}: {{run: echo {i}{needs}}}")
    text = "\n".join(lines) + "\n"
    started = time.perf_counter()
    pipeline = parse_pipeline(text, limits=Limits(max_steps=10_000))
    parsed = time.perf_counter()
    dag = build_dag(pipeline)
    print(
        f"10,000 steps: parse + validate {(parsed - started) * 1000:.0f} ms, "
        f"DAG {(time.perf_counter() - parsed) * 1000:.0f} ms"
    )
    assert dag.order[0] == "s0" and dag.order[-1] == "s9999" and len(dag.all_jobs()) == 10_000
    # The same chain closed into a cycle: found, and named, without recursion.
    closed = text.replace("s0: {run: echo 0}", "s0: {run: echo 0, needs: [s9999]}")
    ((_, _, message),) = issues(closed, Limits(max_steps=10_000))
    assert message.startswith("cycle in needs: s0 -> s1 -> s2")
    assert message.endswith("s9998 -> s9999 -> s0 (10000 steps)")


def test_issue_ordering() -> None:
    assert sorted([Issue(2, 1, "b"), Issue(1, 5, "a")])[0] == Issue(1, 5, "a")
    assert str(Issue(3, 4, "bad")) == "3:4: bad"


def test_a_literal_image_is_checked_where_it_is_written() -> None:
    text = "name: x\nsteps:\n  a:\n    run: make\n    image: Node:20\n"
    line, column, message = only(text)
    assert (line, column) == (5, 12)
    assert message.startswith("image of step 'a': invalid image 'Node:20'")
    # One with an expression can only be checked once it is rendered (at the step's start).
    rendered_later = "image: 'node:${{ matrix.v }}', matrix: {v: [20]}"
    pipeline, found = check_pipeline(f"name: x\nsteps:\n  a: {{run: make, {rendered_later}}}\n")
    assert pipeline is not None and not found
