"""Job templates: typed parameters (string, int, bool, enum; required, defaults, patterns) and
their substitution into declared places only, never into shell text."""

from __future__ import annotations

import pytest

from hodei.domain.templates import parse_template, render_job, resolve_values
from hodei.errors import ValidationError

TEMPLATE = """
description: back up one database
parameters:
  - {name: db, type: string, required: true, pattern: '[a-z_$();/ `&|-]+'}
  - {name: level, type: enum, values: [full, incremental], default: full}
  - {name: keep, type: int, default: 7}
  - {name: verbose, type: bool, default: false}
job:
  name: backup-${{ params.db }}
  command: backup-tool
  arguments: [--db, "${{ params.db }}", "--level=${{ params.level }}"]
  env: {KEEP_DAYS: "${{ params.keep }}", VERBOSE: "${{ params.verbose }}"}
  labels: {pool: backup}
  timeout: 5m
  memory: 256M
"""


def test_values_typed_and_defaulted() -> None:
    t = parse_template(TEMPLATE)
    assert [p.name for p in t.parameters] == ["db", "level", "keep", "verbose"]
    values = resolve_values(t, {"db": "sales", "keep": "+14", "verbose": "YES"})
    assert values == {"db": "sales", "level": "full", "keep": "14", "verbose": "true"}
    spec = render_job(t, values, {"HODEI_TEMPLATE": "backup@1"})
    assert spec.command == "backup-tool"
    assert spec.arguments == ("--db", "sales", "--level=full")
    assert spec.env == {"KEEP_DAYS": "14", "VERBOSE": "true", "HODEI_TEMPLATE": "backup@1"}
    assert spec.name == "backup-sales" and spec.labels == {"pool": "backup"}
    assert spec.timeout_s == 300 and spec.memory_bytes == 256 << 20


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ({}, "missing required parameter db"),
        ({"db": "x", "keep": "seven"}, "parameter keep: value 'seven' is not an integer"),
        ({"db": "x", "verbose": "maybe"}, "is not a boolean"),
        ({"db": "x", "level": "partial"}, "is not one of full, incremental"),
        ({"db": "X1"}, "does not match the pattern"),
        ({"db": "x", "other": "1"}, "unknown parameter(s) other"),
    ],
)
def test_bad_values(given: dict[str, str], message: str) -> None:
    with pytest.raises(ValidationError) as err:
        resolve_values(parse_template(TEMPLATE), given)
    assert message in err.value.message


@pytest.mark.parametrize("hostile", ["$(rm -rf /)", "; reboot", "`id`", "a b; c && d | e"])
def test_a_hostile_value_stays_one_argument(hostile: str) -> None:
    t = parse_template(TEMPLATE)
    spec = render_job(t, resolve_values(t, {"db": hostile}), {})
    # Exec'd directly (arguments set): the value is one argv element, never shell text.
    assert spec.arguments[1] == hostile and spec.command == "backup-tool"


@pytest.mark.parametrize(
    ("job", "message"),
    [
        ("command: echo ${{ params.x }}", "never in command"),
        ("command: echo\n  secrets: ['${{ params.x }}']", "never in command"),
        ("command: echo\n  arguments: ['${{ params.nope }}']", "unknown parameter nope"),
        ("command: echo\n  arguments: ['${{ params.x']", "must read ${{ params.NAME }}"),
        ("command: echo\n  env: {'${{ params.x }}': v}", "never in command"),
        ("command: echo\n  shell: bash", "unknown key(s) shell"),
        ("arguments: [a]", "job.command: required"),
    ],
)
def test_placeholders_only_in_declared_places(job: str, message: str) -> None:
    text = f"parameters:\n  - {{name: x}}\njob:\n  {job}\n"
    with pytest.raises(ValidationError) as err:
        parse_template(text)
    assert message in err.value.message


@pytest.mark.parametrize(
    ("params", "message"),
    [
        ("- {name: a, type: float}", "unknown type 'float'"),
        ("- {name: a, type: enum}", "an enum needs `values:`"),
        ("- {name: a, required: true, default: x}", "a required parameter has no default"),
        ("- {name: a, type: int, default: x}", "its default 'x' is not an integer"),
        ("- {name: a, pattern: '('}", "invalid pattern"),
        ("- {name: 1a}", "name must be"),
        ("- {name: a}\n  - {name: a}", "declared twice"),
    ],
)
def test_bad_parameters(params: str, message: str) -> None:
    with pytest.raises(ValidationError) as err:
        parse_template(f"parameters:\n  {params}\njob: {{command: echo}}\n")
    assert message in err.value.message


def test_pipeline_template_and_shape_errors() -> None:
    t = parse_template("parameters: [{name: target}]\npipeline: |\n  name: p\n  steps: []\n")
    assert t.kind == "pipeline" and t.pipeline is not None and "name: p" in t.pipeline
    for text, message in [
        ("job: {command: x}\npipeline: y", "exactly one of"),
        ("- a", "must be a mapping"),
        ("job: {command: x}\nextra: 1", "unknown key(s) extra"),
        ("job: [", "not valid YAML"),
    ]:
        with pytest.raises(ValidationError) as err:
            parse_template(text)
        assert message in err.value.message
