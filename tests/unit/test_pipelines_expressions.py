"""Pipeline expressions: the grammar, validation at parse time, and rendering."""

from __future__ import annotations

import pytest

from hodei.domain.pipelines import (
    Context,
    ExpressionError,
    Ref,
    build_dag,
    check_pipeline,
    parse_pipeline,
    parse_template,
    render,
    render_step,
    resolve_params,
)
from hodei.errors import ValidationError


def test_grammar() -> None:
    assert parse_template("plain") == ("plain",)
    assert parse_template("") == ()
    assert parse_template("a ${{ matrix.python }} b${{params.n}}") == (
        "a ",
        Ref("matrix", "python", text="${{ matrix.python }}"),
        " b",
        Ref("params", "n", text="${{params.n}}"),
    )
    (ref,) = parse_template("${{ steps.build.outputs.version }}")
    assert isinstance(ref, Ref) and (ref.step, ref.name) == ("build", "version")
    assert str(ref) == "steps.build.outputs.version"
    assert parse_template("$${{ not.an.expression }}") == ("${{ not.an.expression }}",)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("${{ matrix.python", "unclosed expression"),
        ("${{ foo.bar }}", "unknown namespace 'foo'"),
        ("${{ matrix }}", "invalid expression"),
        ("${{ matrix.python + 1 }}", "invalid expression"),
        ("${{ __import__('os') }}", "unknown namespace"),
        ("${{ steps.build.version }}", "invalid expression"),
        ("${{ env.A.B }}", "invalid expression"),
        ("${{ }}", "invalid expression"),
    ],
)
def test_bad_expressions(text: str, message: str) -> None:
    with pytest.raises(ExpressionError, match=message):
        parse_template(text)


def test_render_is_substitution_only() -> None:
    context = Context({"py": "3.12"}, {"n": "${{ params.n }}"}, {"A": "x"}, {"b": {"v": "1"}})
    assert (
        render("py${{ matrix.py }} ${{ env.A }} ${{ steps.b.outputs.v }}", context) == "py3.12 x 1"
    )
    # A value that looks like an expression is never expanded again.
    assert render("${{ params.n }}", context) == "${{ params.n }}"
    assert render("${{ steps.b.outputs.missing }}|${{ steps.zz.outputs.v }}", context) == "|"
    with pytest.raises(ValidationError, match=r"no value for matrix\.os"):
        render("${{ matrix.os }}", context)


def issues(text: str) -> list[tuple[int, int, str]]:
    pipeline, found = check_pipeline(text)
    assert pipeline is None
    return [(i.line, i.column, i.message) for i in found]


def test_references_are_checked_at_parse_time() -> None:
    text = """\
name: x
params:
  who: world
env:
  TOP: ${{ params.who }}
  BAD: ${{ matrix.os }}
steps:
  build:
    outputs: [version]
    run: echo
  lint:
    run: echo
    outputs: [report]
  test:
    needs: [build]
    matrix: {python: ["3.11"]}
    env: {LOCAL: "${{ env.TOP }}", LOOP: "${{ env.LOCAL }}"}
    run: echo ${{ matrix.pyhton }} ${{ params.whom }} ${{ env.NOPE }}
    labels: {v: "${{ steps.lint.outputs.report }}"}
    image: "${{ steps.build.outputs.versoin }}"
    artifacts: ["${{ steps.test.outputs.x }}"]
  later:
    needs: [test]
    run: echo ${{ steps.build.outputs.version }} ${{ steps.test.outputs.x }} ${{ matrix.a }}
    cache: {key: "${{ steps.nope.outputs.x }}"}
"""
    assert issues(text) == sorted(
        [
            (6, 8, "${{ matrix.os }}: the pipeline's env may only use params"),
            (17, 42, "${{ env.LOCAL }}: 'LOCAL' is not set in the pipeline's env"),
            (
                18,
                10,
                "${{ matrix.pyhton }}: 'pyhton' is not a key of the matrix of step 'test' "
                "(did you mean 'python'?)",
            ),
            (18, 10, "${{ params.whom }}: no param 'whom' is declared (did you mean 'who'?)"),
            (18, 10, "${{ env.NOPE }}: 'NOPE' is not set in the pipeline's env or the step's env"),
            (
                19,
                17,
                "${{ steps.lint.outputs.report }}: step 'test' does not need 'lint' "
                "(add it to needs)",
            ),
            (
                20,
                12,
                "${{ steps.build.outputs.versoin }}: step 'build' declares no output "
                "'versoin' (did you mean 'version'?)",
            ),
            (21, 17, "${{ steps.test.outputs.x }}: a step cannot read its own outputs"),
            (
                24,
                10,
                "${{ steps.test.outputs.x }}: step 'test' has a matrix, so which job's "
                "output is meant is ambiguous",
            ),
            (24, 10, "${{ matrix.a }}: step 'later' has no matrix"),
            (25, 18, "${{ steps.nope.outputs.x }}: no step 'nope'"),
        ]
    )


def test_outputs_of_transitive_needs_are_allowed() -> None:
    text = """\
name: x
steps:
  a: {run: echo, outputs: [v]}
  b: {run: echo, needs: [a]}
  c: {run: "echo ${{ steps.a.outputs.v }}", needs: [b]}
"""
    assert parse_pipeline(text).steps["c"].run == "echo ${{ steps.a.outputs.v }}"


def test_expressions_only_where_they_are_rendered() -> None:
    text = "name: x\nsteps:\n  a: {run: echo, matrix: {os: ['${{ params.x }}']}}\n"
    assert issues(text) == [
        (3, 32, "a value of matrix key 'os' of step 'a' cannot hold expressions")
    ]


def test_render_step_and_params() -> None:
    text = """\
name: demo
params:
  target: {type: choice, options: [staging, prod], default: staging}
  n: {type: int, default: 1}
  debug: {type: bool, default: false}
  who: {type: string}
env:
  TARGET: ${{ params.target }}
steps:
  build: {run: echo, outputs: [version]}
  test:
    needs: [build]
    matrix: {python: [3.10, "3.12"]}
    env: {WHERE: "${{ env.TARGET }}-${{ matrix.python }}"}
    command: run-tests
    args: ["--py=${{ matrix.python }}", "${{ env.WHERE }}", "${{ params.n }}"]
    labels: {py: "${{ matrix.python }}"}
    image: "python:${{ matrix.python }}"
    artifacts: ["out/${{ matrix.python }}/*.xml"]
    cache: {key: "deps-${{ matrix.python }}-${{ steps.build.outputs.version }}"}
"""
    pipeline = parse_pipeline(text)
    with pytest.raises(ValidationError) as caught:
        resolve_params(pipeline, {"n": "x", "debug": "maybe", "target": "dev", "extra": "1"})
    message = caught.value.message
    for part in (
        "unknown param 'extra'",
        "param 'who' is required",
        "param 'n' must be a whole number",
        "param 'debug' must be true or false",
        "param 'target' must be one of staging, prod",
    ):
        assert part in message
    params = resolve_params(pipeline, {"who": "me", "n": 7, "debug": True, "target": "prod"})
    assert params == {"target": "prod", "n": "7", "debug": "true", "who": "me"}
    assert resolve_params(pipeline, {"who": "me", "debug": "no"})["debug"] == "false"
    job = build_dag(pipeline).jobs["test"][0]
    assert job.id == "test[python=3.10]"  # written as 3.10, kept as 3.10
    rendered = render_step(pipeline, job, params, {"build": {"version": "2.0"}})
    assert rendered.command == "run-tests"
    assert rendered.arguments == ("--py=3.10", "prod-3.10", "7")
    assert rendered.env == {"TARGET": "prod", "WHERE": "prod-3.10"}
    assert rendered.labels == {"py": "3.10"}
    assert rendered.image == "python:3.10"
    assert rendered.artifacts == ("out/3.10/*.xml",)
    assert rendered.cache_key == "deps-3.10-2.0"


def test_rendered_artifact_paths_are_checked_again() -> None:
    text = """\
name: x
steps:
  a: {run: echo, outputs: [dir]}
  b: {run: echo, needs: [a], artifacts: ["${{ steps.a.outputs.dir }}/x"]}
"""
    pipeline = parse_pipeline(text)
    job = build_dag(pipeline).jobs["b"][0]
    assert render_step(pipeline, job, {}, {"a": {"dir": "dist"}}).artifacts == ("dist/x",)
    with pytest.raises(ValidationError, match=r"must not contain '\.\.'"):
        render_step(pipeline, job, {}, {"a": {"dir": ".."}})
    with pytest.raises(ValidationError, match="must be relative"):
        render_step(pipeline, job, {}, {"a": {"dir": "/etc"}})
