"""Pipeline file -> `Pipeline`, with every problem reported at once, each at its line and column.

`check_pipeline` returns the pipeline (None if anything is wrong) and the issues;
`parse_pipeline` returns the pipeline or raises `PipelineError` holding all of them. The work
is linear in the size of the file: steps, needs edges and expressions are each looked at a
bounded number of times (whether a step needs the one whose outputs it reads is answered from
bitsets over the steps read from, a word per 64 of them), and a suggestion ("did you mean")
is looked for only for the problems shown, at most `max_errors`.

The reading is split by part: `reader` (the top level and the order of the checks), `steps`,
`matrix`, `values` (typed reads and the grammar of names), `graph` (unknown needs, cycles)
and `references` (what each expression may read). The names other modules use are
re-exported here.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from hodei.domain.pipelines.matrix import MATRIX_KEY, MATRIX_RESERVED, MATRIX_VALUE
from hodei.domain.pipelines.model import DEFAULT_LIMITS, Issue, Limits, Pipeline, PipelineError
from hodei.domain.pipelines.reader import PARAM_FIELDS, PIPELINE_FIELDS, PipelineReader
from hodei.domain.pipelines.steps import MAX_ARTIFACTS, MAX_OUTPUTS, MAX_PATH, STEP_FIELDS
from hodei.domain.pipelines.values import (
    ENV_KEY,
    LABEL_KEY,
    MAX_DESCRIPTION,
    OUTPUT_NAME,
    PARAM_NAME,
    PIPELINE_NAME,
    STEP_NAME,
    check_artifact_path,
    settle,
    suggest,
)
from hodei.domain.pipelines.yamltree import TreeError, load_tree

__all__ = [
    "ENV_KEY",
    "LABEL_KEY",
    "MATRIX_KEY",
    "MATRIX_RESERVED",
    "MATRIX_VALUE",
    "MAX_ARTIFACTS",
    "MAX_DESCRIPTION",
    "MAX_OUTPUTS",
    "MAX_PATH",
    "OUTPUT_NAME",
    "PARAM_FIELDS",
    "PARAM_NAME",
    "PIPELINE_FIELDS",
    "PIPELINE_NAME",
    "STEP_FIELDS",
    "STEP_NAME",
    "check_artifact_path",
    "check_pipeline",
    "parse_pipeline",
    "suggest",
]


def parse_pipeline(
    source: str | bytes, *, limits: Limits = DEFAULT_LIMITS, filename: str = "pipeline"
) -> Pipeline:
    """The pipeline in `source`; raise PipelineError listing every problem."""
    pipeline, issues = check_pipeline(source, limits=limits)
    if pipeline is None:
        raise PipelineError(issues, filename)
    return pipeline


def check_pipeline(
    source: str | bytes, *, limits: Limits = DEFAULT_LIMITS
) -> tuple[Pipeline | None, tuple[Issue, ...]]:
    """(the pipeline or None, every problem found in file order)."""
    size = len(source)
    if size > limits.max_bytes or (
        isinstance(source, str) and len(source.encode("utf-8", "surrogatepass")) > limits.max_bytes
    ):
        return None, (Issue(1, 1, f"file too large (more than {limits.max_bytes} bytes)"),)
    if isinstance(source, bytes):
        try:
            text = source.decode("utf-8")
        except UnicodeDecodeError as exc:
            return None, (Issue(1, 1, f"file is not UTF-8 (byte {exc.start})"),)
    else:
        text = source
    with _collector_paused():
        try:
            root = load_tree(text, limits)
        except TreeError as exc:
            return None, (Issue(exc.line, exc.column, exc.message),)
        reader = PipelineReader(limits)
        pipeline = reader.pipeline(root)
        found = reader.issues
        del reader, root  # the tree is freed now, not walked by the collector first
    issues = settle(found, limits.max_errors)
    return (pipeline if not issues else None), issues


_pause_lock = threading.Lock()
_pauses = 0  # readings under way (in any thread) while the collector is paused
_resume = False  # whether the collector was enabled when the first of them began


@contextmanager
def _collector_paused() -> Iterator[None]:
    """The cyclic garbage collector off while a file is read.

    A large file becomes ~10^5 tree nodes and drafts, all acyclic (freed by reference
    counting); the collector's passes over them as they pile up cost as much as building them.
    Counted, so that readings in several threads turn it back on only when the last ends.
    """
    global _pauses, _resume
    with _pause_lock:
        if _pauses == 0:
            _resume = gc.isenabled()
            gc.disable()
        _pauses += 1
    try:
        yield
    finally:
        with _pause_lock:
            _pauses -= 1
            if _pauses == 0 and _resume:
                gc.enable()
