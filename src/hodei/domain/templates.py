"""Job templates: a job spec or a pipeline file with typed parameters.

A template file (YAML):

    description: nightly backup of one database
    parameters:
      - {name: db, type: string, required: true, pattern: '^[a-z_]+$'}
      - {name: level, type: enum, values: [full, incremental], default: full}
      - {name: keep, type: int, default: 7}
      - {name: verbose, type: bool, default: false}
    job:
      command: backup-tool
      arguments: [--db, "${{ params.db }}", "--level=${{ params.level }}"]
      env: {KEEP_DAYS: "${{ params.keep }}"}
      labels: {pool: backup}

or `pipeline: |` with a pipeline file's text, whose own `params` receive the values.

Values go only into declared places: a job's arguments, env values, label values and name.
Each such string is a separate value handed to the job as data (an argument of an exec, an
environment variable), never pasted into shell text: `command` may not hold a placeholder, so
a value such as `$(rm -rf /)` or `; reboot` reaches the program as those characters.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, fields
from enum import StrEnum
from typing import Any

import yaml

from hodei.domain.jobs import JobSpec, parse_duration, parse_size, shown, validate_spec
from hodei.errors import ValidationError

__all__ = [
    "ParamType",
    "Parameter",
    "Template",
    "TemplateRecord",
    "parse_template",
    "render_job",
    "resolve_values",
]

MAX_TEMPLATE_BYTES = 256 * 1024
MAX_PARAMETERS = 64
MAX_VALUE = 4096
_PARAM_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_PLACEHOLDER = re.compile(r"\$\{\{\s*params\.([A-Za-z_][A-Za-z0-9_]*)\s*\}\}")
_ANY_PLACEHOLDER = re.compile(r"\$\{\{")
_JOB_KEYS = frozenset(
    {
        "command", "arguments", "name", "env", "labels", "secrets", "cpu", "memory",
        "timeout", "max_retries", "priority", "image", "artifacts",
    }
)  # fmt: skip
_TOP_KEYS = frozenset({"description", "parameters", "job", "pipeline", "name"})
_TRUE, _FALSE = ("true", "yes", "on", "1"), ("false", "no", "off", "0")


class ParamType(StrEnum):
    STRING = "string"
    INT = "int"
    BOOL = "bool"
    ENUM = "enum"


@dataclass(frozen=True, slots=True)
class Parameter:
    name: str
    type: ParamType = ParamType.STRING
    required: bool = False
    default: str | None = None  # as text, checked against the type
    pattern: str | None = None  # a full match is required (string and int values)
    values: tuple[str, ...] = ()  # enum
    description: str = ""


@dataclass(frozen=True, slots=True)
class Template:
    description: str
    parameters: tuple[Parameter, ...]
    job: Mapping[str, Any] | None  # the job section, as read (kind job)
    pipeline: str | None  # the pipeline file's text (kind pipeline)

    @property
    def kind(self) -> str:
        return "job" if self.job is not None else "pipeline"


@dataclass(frozen=True, slots=True)
class TemplateRecord:
    """One stored version of a template (versions are kept: 1, 2, 3...)."""

    name: str
    version: int
    source: str  # the template file's text
    kind: str  # job | pipeline
    description: str = ""
    created_at: float = 0.0
    created_by: str = ""


def _fail(where: str, problem: str) -> ValidationError:
    return ValidationError(f"template: {where}: {problem}")


def parse_template(text: str) -> Template:
    """Read and check a template file; ValidationError naming the place of each problem."""
    if len(text.encode()) > MAX_TEMPLATE_BYTES:
        raise ValidationError(f"template larger than {MAX_TEMPLATE_BYTES} bytes")
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValidationError(f"template is not valid YAML: {exc}") from None
    if not isinstance(doc, dict):
        raise ValidationError("template must be a mapping with `job:` or `pipeline:`")
    unknown = sorted(str(k) for k in doc if k not in _TOP_KEYS)
    if unknown:
        raise _fail("top level", f"unknown key(s) {', '.join(unknown)}")
    if ("job" in doc) == ("pipeline" in doc):
        raise _fail("top level", "give exactly one of `job:` or `pipeline:`")
    description = doc.get("description") or ""
    if not isinstance(description, str):
        raise _fail("description", "must be a string")
    parameters = _read_parameters(doc.get("parameters") or [])
    declared = {p.name for p in parameters}
    if "job" in doc:
        job = doc["job"]
        if not isinstance(job, dict):
            raise _fail("job", "must be a mapping")
        _check_job(job, declared)
        return Template(description, parameters, job, None)
    pipeline = doc["pipeline"]
    if not isinstance(pipeline, str):
        raise _fail("pipeline", "must be the pipeline file's text (use `pipeline: |`)")
    return Template(description, parameters, None, pipeline)


def _read_parameters(raw: object) -> tuple[Parameter, ...]:
    if not isinstance(raw, list):
        raise _fail("parameters", "must be a list")
    if len(raw) > MAX_PARAMETERS:
        raise _fail("parameters", f"at most {MAX_PARAMETERS}")
    out: list[Parameter] = []
    seen: set[str] = set()
    for index, item in enumerate(raw):
        where = f"parameters[{index}]"
        if not isinstance(item, dict):
            raise _fail(where, "must be a mapping with name and type")
        extra = sorted(str(k) for k in item if k not in {
            "name", "type", "required", "default", "pattern", "values", "description"})  # fmt: skip
        if extra:
            raise _fail(where, f"unknown key(s) {', '.join(extra)}")
        name = item.get("name")
        if not isinstance(name, str) or not _PARAM_NAME.fullmatch(name):
            raise _fail(where, "name must be letters, digits and _, not starting with a digit")
        if name in seen:
            raise _fail(where, f"parameter {name} declared twice")
        seen.add(name)
        where = f"parameter {name}"
        try:
            kind = ParamType(str(item.get("type", "string")))
        except ValueError:
            raise _fail(where, f"unknown type {shown(item.get('type'))} "
                        "(string, int, bool or enum)") from None  # fmt: skip
        values: tuple[str, ...] = ()
        if kind is ParamType.ENUM:
            raw_values = item.get("values")
            if not isinstance(raw_values, list) or not raw_values:
                raise _fail(where, "an enum needs `values:`, a non-empty list")
            values = tuple(_scalar(v) for v in raw_values)
        elif "values" in item:
            raise _fail(where, "`values:` is for enum parameters only")
        pattern = item.get("pattern")
        if pattern is not None:
            if not isinstance(pattern, str) or kind not in (ParamType.STRING, ParamType.INT):
                raise _fail(where, "`pattern:` is a string, for string and int parameters")
            try:
                re.compile(pattern)
            except re.error as exc:
                raise _fail(where, f"invalid pattern: {exc}") from None
        required = item.get("required", False)
        if not isinstance(required, bool):
            raise _fail(where, "`required:` is true or false")
        default = None if item.get("default") is None else _scalar(item["default"])
        if required and default is not None:
            raise _fail(where, "a required parameter has no default")
        param = Parameter(name, kind, required, None, pattern, values,
                          str(item.get("description") or ""))  # fmt: skip
        if default is not None:
            default = check_value(param, default, "its default")
        out.append(Parameter(name, kind, required, default, pattern, values, param.description))
    return tuple(out)


def _scalar(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | str) or (isinstance(value, float) and math.isfinite(value)):
        return str(value)
    raise ValidationError(f"template: {shown(value)} is not a string, number or boolean")


def check_value(param: Parameter, value: str, what: str = "value") -> str:
    """The canonical text of a value of `param`; ValidationError saying what is wrong."""
    label = f"parameter {param.name}: {what} {shown(value)}"
    if len(value) > MAX_VALUE:
        raise ValidationError(f"parameter {param.name}: value longer than {MAX_VALUE}")
    if "\x00" in value:
        raise ValidationError(f"parameter {param.name}: value holds a NUL character")
    if param.type is ParamType.INT:
        if not re.fullmatch(r"[+-]?\d{1,18}", value.strip()):
            raise ValidationError(f"{label} is not an integer")
        value = str(int(value))
    elif param.type is ParamType.BOOL:
        lowered = value.strip().lower()
        if lowered not in _TRUE + _FALSE:
            raise ValidationError(f"{label} is not a boolean (true or false)")
        value = "true" if lowered in _TRUE else "false"
    elif param.type is ParamType.ENUM and value not in param.values:
        raise ValidationError(f"{label} is not one of {', '.join(param.values)}")
    if param.pattern is not None and not re.fullmatch(param.pattern, value):
        raise ValidationError(f"{label} does not match the pattern {param.pattern!r}")
    return value


def resolve_values(template: Template, given: Mapping[str, str]) -> dict[str, str]:
    """Every parameter's value: given, else its default; ValidationError for an unknown name,
    a missing required one, or a value that does not fit its type, enum or pattern."""
    declared = {p.name: p for p in template.parameters}
    unknown = sorted(set(given) - set(declared))
    if unknown:
        known = ", ".join(declared) or "none"
        raise ValidationError(f"unknown parameter(s) {', '.join(unknown)} (declared: {known})")
    out: dict[str, str] = {}
    for param in template.parameters:
        if param.name in given:
            out[param.name] = check_value(param, given[param.name])
        elif param.default is not None:
            out[param.name] = param.default
        elif param.required:
            raise ValidationError(f"missing required parameter {param.name}")
        else:
            out[param.name] = ""
    return out


def _placeholders(text: str) -> list[str]:
    return _PLACEHOLDER.findall(text)


def _check_text(where: str, value: object, declared: set[str], allowed: bool) -> None:
    if not isinstance(value, str):
        return
    if not allowed and _ANY_PLACEHOLDER.search(value):
        raise _fail(where, "parameters may be used only in arguments, env values, label "
                    "values and name (never in command, which a shell may read)")  # fmt: skip
    rest = _PLACEHOLDER.sub("", value)
    if _ANY_PLACEHOLDER.search(rest):
        raise _fail(where, "a placeholder must read ${{ params.NAME }}")
    for name in _placeholders(value):
        if name not in declared:
            raise _fail(where, f"unknown parameter {name} (declare it under parameters)")


def _check_job(job: Mapping[Any, Any], declared: set[str]) -> None:
    unknown = sorted(str(k) for k in job if k not in _JOB_KEYS)
    if unknown:
        raise _fail("job", f"unknown key(s) {', '.join(unknown)}")
    if not isinstance(job.get("command"), str) or not job["command"].strip():
        raise _fail("job.command", "required, a string")
    for key, value in job.items():
        where = f"job.{key}"
        if key == "arguments":
            if not isinstance(value, list):
                raise _fail(where, "must be a list of strings")
            for i, arg in enumerate(value):
                _check_text(f"{where}[{i}]", _scalar(arg), declared, True)
        elif key in ("env", "labels"):
            if not isinstance(value, dict):
                raise _fail(where, "must be a mapping of strings")
            for k, v in value.items():
                _check_text(f"{where} key {k}", str(k), declared, False)
                _check_text(f"{where}.{k}", _scalar(v), declared, True)
        elif key == "name":
            _check_text(where, value, declared, True)
        elif isinstance(value, list):
            for i, item in enumerate(value):
                _check_text(f"{where}[{i}]", item, declared, False)
        else:
            _check_text(where, value, declared, False)


def _fill(text: str, values: Mapping[str, str]) -> str:
    return _PLACEHOLDER.sub(lambda m: values[m.group(1)], text)


def render_job(template: Template, values: Mapping[str, str], env: Mapping[str, str]) -> JobSpec:
    """The job spec of a job template with resolved `values` (resolve_values), plus `env`
    (what the caller records in it, such as the template's name and version)."""
    job = template.job
    if job is None:
        raise ValidationError("this template is a pipeline, not a job")
    spec_fields = {f.name for f in fields(JobSpec)}
    kwargs: dict[str, Any] = {"command": str(job["command"])}
    if "arguments" in job:
        kwargs["arguments"] = tuple(_fill(_scalar(a), values) for a in job["arguments"])
    if "name" in job:
        kwargs["name"] = _fill(str(job["name"]), values)
    kwargs["env"] = {str(k): _fill(_scalar(v), values) for k, v in (job.get("env") or {}).items()}
    kwargs["env"].update(env)
    if "labels" in job:
        kwargs["labels"] = {str(k): _fill(_scalar(v), values) for k, v in job["labels"].items()}
    if "secrets" in job:
        kwargs["secrets"] = tuple(str(s) for s in job["secrets"] or ())
    if "artifacts" in job:
        kwargs["artifacts"] = tuple(str(s) for s in job["artifacts"] or ())
    for key, convert in (("cpu", float), ("max_retries", int), ("priority", int)):
        if key in job:
            kwargs[key] = _number(key, job[key], convert)
    if "memory" in job:
        memory = job["memory"]
        kwargs["memory_bytes"] = memory if isinstance(memory, int) else parse_size(str(memory))
    if "timeout" in job:
        timeout = job["timeout"]
        kwargs["timeout_s"] = float(timeout) if isinstance(timeout, int | float) else (
            parse_duration(str(timeout)))  # fmt: skip
    if "image" in job:
        if "image" not in spec_fields:
            raise _fail("job.image", "this server does not run jobs in images")
        kwargs["image"] = str(job["image"])
    return validate_spec(JobSpec(**kwargs))


def _number(key: str, value: object, convert: type[int] | type[float]) -> int | float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _fail(f"job.{key}", "must be a number")
    return convert(value)
