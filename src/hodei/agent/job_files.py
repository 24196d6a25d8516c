"""Running one attempt with its files: inputs unpacked before it starts, its outputs file read
and its artifacts packed after it ends (hodei.agent.artifacts does each of these).

This wraps whatever executor the session runs (hodei.agent.runner.run_job, or a benchmark's),
so the runner itself knows nothing of it. An attempt with inputs or artifacts runs in a work
dir made here (passed as the assignment's working_dir, removed afterwards); one with neither
runs exactly as before, except for HODEI_OUTPUTS in its environment.
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace

from hodei.agent.artifacts import (
    DEFAULT_MAX_ARTIFACT,
    Archive,
    ArtifactError,
    Spool,
    StagedInput,
    pack,
    read_outputs,
    remove,
    unpack,
)
from hodei.agent.runner import Executor, Grace, JobOutcome, OnOutput
from hodei.domain.masking import mask_all
from hodei.domain.work import NOT_RUN, Assignment

OUTPUTS_ENV = "HODEI_OUTPUTS"
# The exit code of an attempt whose inputs could not be set up: it never ran, but it is not
# NOT_RUN either (that would queue it again, forever, for an input that stays missing).
SETUP_FAILED = 125


@dataclass(slots=True)
class Finished:
    """How an attempt ended, with what it leaves for the server."""

    outcome: JobOutcome
    outputs: bytes = b""
    archive: Archive | None = None


def succeeded(outcome: JobOutcome) -> bool:
    return (
        outcome.exit_code == 0
        and not (outcome.signal or outcome.cancelled or outcome.timed_out)
        and not outcome.error
    )


def _say(on_output: OnOutput, message: str) -> None:
    """A note in the attempt's log (its output is masked there; the message is ours)."""
    on_output(f"hodei: {message}\n".encode())


def _failed(outcome: JobOutcome, error: str) -> JobOutcome:
    """The outcome with `error` set: the attempt fails with that reason, its exit code kept."""
    return replace(outcome, error=error)


async def run_with_files(
    execute: Executor,
    assign: Assignment,
    inputs: list[StagedInput],
    spool: Spool,
    on_output: OnOutput,
    cancel: asyncio.Event,
    *,
    grace: Grace,
    on_started: Callable[[int], None] | None,
) -> Finished:
    """Run `assign` with `execute`, its `inputs` unpacked first, and say how it ended with
    what it leaves: see the module docstring."""
    secrets = list(assign.secrets.values())

    def masked(text: str) -> str:
        return mask_all(text.encode(), secrets).decode("utf-8", "replace") if secrets else text

    if inputs and cancel.is_set():  # cancelled before its inputs came whole: never started
        for item in inputs:
            item.discard()
        return Finished(JobOutcome(exit_code=NOT_RUN, cancelled=True))
    outputs_path = spool.new_path("outputs")
    run = replace(assign, env={**assign.env, OUTPUTS_ENV: outputs_path})
    own_dir = ""
    try:
        if assign.artifacts or inputs:
            if not assign.working_dir:
                own_dir = tempfile.mkdtemp(prefix="hodei-job-")
            run = replace(run, working_dir=assign.working_dir or own_dir)
        if inputs:
            try:
                await asyncio.to_thread(unpack, inputs, run.working_dir)
            except ArtifactError as exc:
                error = masked(str(exc))
                _say(on_output, error)
                return Finished(JobOutcome(exit_code=SETUP_FAILED, error=error))
        outcome = await execute(run, on_output, cancel, grace=grace, on_started=on_started)
        finished = await _collect(assign, run.working_dir, outcome, outputs_path, spool, masked)
        if finished.outcome.error and finished.outcome.error != outcome.error:
            _say(on_output, finished.outcome.error)
        return finished
    finally:
        for item in inputs:
            item.discard()
        remove(outputs_path)
        if own_dir:
            await asyncio.to_thread(shutil.rmtree, own_dir, True)


async def _collect(
    assign: Assignment,
    workdir: str,
    outcome: JobOutcome,
    outputs_path: str,
    spool: Spool,
    masked: Callable[[str], str],
) -> Finished:
    """What the ended attempt leaves: its outputs, and its archive if it succeeded."""
    try:
        outputs = read_outputs(outputs_path, assign.secrets.values())
    except ArtifactError as exc:
        return Finished(_failed(outcome, outcome.error or str(exc)))
    if not assign.artifacts or not succeeded(outcome):
        return Finished(outcome, outputs)
    limit = assign.max_artifact_bytes or DEFAULT_MAX_ARTIFACT
    try:
        archive = await asyncio.to_thread(
            pack, workdir, assign.artifacts, limit, spool.new_path("artifact")
        )
    except ArtifactError as exc:
        return Finished(_failed(outcome, masked(str(exc))), outputs)
    return Finished(outcome, outputs, archive)
