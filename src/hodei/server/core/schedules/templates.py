"""The template use cases both APIs share (create a version, read, list, delete, run), and
`Launcher`, which starts what a template, a job spec or a pipeline file asks for under an id
its caller chose (a schedule's fire), so that a second try is refused by the store."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace

from hodei.domain.jobs import Job, JobSpec
from hodei.domain.pipelines.runs import PipelineRun
from hodei.domain.schedules.model import validate_name
from hodei.domain.templates import (
    Template,
    TemplateRecord,
    parse_template,
    render_job,
    resolve_values,
)
from hodei.errors import ConflictError
from hodei.ports import JobStore
from hodei.server.core.orchestrator import Orchestrator
from hodei.server.core.pipelines import Pipelines
from hodei.server.security.audit import Auditor

__all__ = ["Launched", "Launcher", "Templates"]


@dataclass(frozen=True, slots=True)
class Launched:
    job: Job | None = None
    run: PipelineRun | None = None
    template_version: int = 0


class Launcher:
    """Starts a job (Orchestrator.submit) or a pipeline run (Pipelines.run)."""

    def __init__(self, orchestrator: Orchestrator, pipelines: Pipelines) -> None:
        self.orch = orchestrator
        self.pipelines = pipelines

    async def job(self, spec: JobSpec, env: Mapping[str, str], job_id: str | None) -> Job:
        """ConflictError if `job_id` (a fire's id) exists: it was started already."""
        spec = replace(spec, env={**spec.env, **env})
        job, _ = await self.orch.submit_once(spec, job_id, fire=job_id is not None)
        return job

    async def pipeline(
        self, source: str, params: Mapping[str, str], by: str, run_id: str | None
    ) -> PipelineRun:
        run, _ = await self.pipelines.run(source, params, queued_by=by, run_id=run_id)
        return run

    async def template(
        self,
        record: TemplateRecord,
        given: Mapping[str, str],
        env: Mapping[str, str],
        by: str,
        *,
        job_id: str | None = None,
        run_id: str | None = None,
    ) -> Launched:
        """Check the values against the template's parameters, then start it; the job's env
        records the template and its version (HODEI_TEMPLATE, HODEI_TEMPLATE_VERSION)."""
        template = parse_template(record.source)
        values = resolve_values(template, given)
        if template.pipeline is not None:
            run = await self.pipeline(template.pipeline, values, by, run_id)
            return Launched(run=run, template_version=record.version)
        marks = {
            "HODEI_TEMPLATE": record.name,
            "HODEI_TEMPLATE_VERSION": str(record.version),
            **env,
        }
        spec = render_job(template, values, marks)
        if by and not spec.queued_by:
            spec = replace(spec, queued_by=by)
        return Launched(job=await self.job(spec, {}, job_id), template_version=record.version)


class Templates:
    def __init__(
        self,
        store: JobStore,
        launcher: Launcher,
        auditor: Auditor,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.store = store
        self.launcher = launcher
        self.auditor = auditor
        self._clock = clock

    async def create(self, name: str, source: str, by: str) -> TemplateRecord:
        """Store the file as the template's next version (1 for a new one); ValidationError
        naming what is wrong in it, before anything is stored."""
        validate_name(name, "template")
        template: Template = parse_template(source)
        for _ in range(5):
            versions = await self.store.template_versions(name)
            number = versions[0].version + 1 if versions else 1
            record = TemplateRecord(
                name, number, source, template.kind, template.description, self._clock(), by
            )
            try:
                stored = await self.store.add_template(record)
            except ConflictError:
                continue  # another version was added meanwhile
            await self.auditor.record(by, "template.create", name, f"version {number}")
            return stored
        raise ConflictError(f"template {name} keeps changing; try again")

    async def get(self, name: str, version: int | None = None) -> TemplateRecord:
        return await self.store.get_template(name, version)

    async def listing(self) -> list[TemplateRecord]:
        return await self.store.list_templates()

    async def versions(self, name: str) -> list[TemplateRecord]:
        return await self.store.template_versions(name)

    async def delete(self, name: str, by: str) -> None:
        await self.store.delete_template(name)
        await self.auditor.record(by, "template.delete", name)

    async def run(
        self, name: str, params: Mapping[str, str], by: str, version: int | None = None
    ) -> Launched:
        record = await self.store.get_template(name, version)
        launched = await self.launcher.template(record, params, {}, by)
        started = launched.job.id if launched.job else launched.run.id if launched.run else ""
        await self.auditor.record(by, "template.run", name, f"version {record.version}: {started}")
        return launched
