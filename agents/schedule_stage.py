"""The schedule shell (pure core: streams/schedules.py), part of the tenant-keyed stage.

Schedule commands arrive on the `schedules` topic (key: tenant), which the tenant agent reads together with
the catalog's topics, so a schedule's table entry (key ``tenant/schedule id``) sits in the same partition as
the tenant's catalog it selects from. Firing rides on the tenant stage's ticks: each tick carries the wall
clock instant it was sent at and reaches every partition, and the schedules of that partition's tenants
decide what is due at that instant. The wall clock decides *when*; the nominal times decide *what*
(run and job ids), and the table's cursor makes every occurrence fire at most once.

``onlyIf`` needs each image's last report: a small agent re-keys completed job results (key: digest) as
``ReportSeen`` onto `catalog-updates` (key: tenant), and the tenant agent keeps the newest per image in the
`last-reports` table (key ``tenant/digest``), beside the catalog.

A fired occurrence's jobs leave through the tenant stage's `job_outputs`, the same path (jobs topic, run
plan to the run stage) as every delta-driven window, unless the schedule sets `limits.parallelism` or
`limits.rate_per_second`: then they go to the run stage only, which releases them (agents/run_stage.py). A
run without jobs is planned empty, so it shows up (completed, 0 jobs) instead of not at all. Decisions go to
`schedule-events` for the read models.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import faust

from agents import observe
from agents.pipeline import Pipeline
from agents.shell import Output, apply_guarded, keys, publish, read
from schemas.messages import JobCommand, JobResult, ReportSeen, RunPlanned, ScheduleCommand, Tick
from streams.codec import from_epoch, to_epoch
from streams.guard import decode as unguard
from streams.schedules import PlannedRun, Step, decode, due, encode, on_command, on_tick, table_key
from streams.tenants import TenantCatalog, decode_catalog

JobOutputs = Callable[[Pipeline, list[JobCommand]], list[Output]]


class ScheduleShell:
    def __init__(
        self,
        pipe: Pipeline,
        catalog: Any,
        job_outputs: JobOutputs,
        partition_of: Callable[[str, int], int],
    ) -> None:
        self.pipe = pipe
        self.table = pipe.table("schedules")
        self.reports = pipe.table("last-reports")
        self.catalog = catalog
        self.job_outputs = job_outputs
        self.partition_of = partition_of

    def _catalog(self, tenant: str) -> TenantCatalog | None:
        raw = unguard(read(self.catalog, tenant)).state
        return decode_catalog(raw) if raw else None

    def _last_reports(self, tenant: str, catalog: TenantCatalog | None) -> dict[str, datetime]:
        found: dict[str, datetime] = {}
        for digest in sorted(catalog.images if catalog else ()):
            raw = unguard(read(self.reports, f"{tenant}/{digest}")).state
            if raw:
                found[digest] = from_epoch(int(raw))
        return found

    async def on_report(self, event: faust.EventT[Any], seen: ReportSeen) -> None:
        def fold(state: bytes | None) -> tuple[bytes | None, list[Output]]:
            newest = max(int(state) if state else 0, to_epoch(seen.at))
            return str(newest).encode(), []

        await apply_guarded(self.reports, f"{seen.tenant}/{seen.image_digest}", event, fold)

    def _outputs(self, step: Step, planned_at: datetime) -> list[Output]:
        jobs = [job for run in step.runs if run.limits is None for job in run.jobs]
        outputs = self.job_outputs(self.pipe, jobs)
        for run in step.runs:
            if not run.jobs:
                outputs.append(self.pipe.out("run-inputs", run.run_id, _empty_plan(step, run)))
            elif run.limits is not None:
                outputs.extend(_gated_outputs(self.pipe, run))
        if step.event is not None:
            outputs.append(self.pipe.out("schedule-events", step.event.tenant, step.event))
            # Lag up to the planning tick's instant (event time, so a replay reports what happened then);
            # how long the tick then waited in its partition shows as consumer lag.
            observe.schedule_decisions(step.event, planned_at)
        return outputs

    async def on_command(self, event: faust.EventT[Any], command: ScheduleCommand) -> None:
        def fold(state: bytes | None) -> tuple[bytes | None, list[Output]]:
            current = decode(state) if state else None
            catalog = self._catalog(command.tenant)
            fires = command.action in ("run", "pause", "update")  # these may fire what is due
            reports = self._last_reports(command.tenant, catalog) if fires else {}
            step = on_command(current, command, catalog, reports)
            new_state = encode(step.state) if step.state is not None else state
            return new_state, self._outputs(step, command.at)

        await apply_guarded(self.table, table_key(command.tenant, command.schedule_id), event, fold)

    async def on_tick(self, event: faust.EventT[Any], tick: Tick) -> None:
        partitions = self.pipe.settings.partitions
        for key in sorted(keys(self.table)):
            tenant = key.split("/", 1)[0]
            if self.partition_of(tenant, partitions) != event.message.partition:
                continue
            raw = unguard(read(self.table, key)).state
            if not raw:
                continue
            # Most ticks find nothing due: only then is the table written (and the changelog grown).
            if not due(decode(raw), tick.at).decisions:
                continue

            def fold(state: bytes | None, tenant: str = tenant) -> tuple[bytes | None, list[Output]]:
                if not state:
                    return state, []
                catalog = self._catalog(tenant)
                step = on_tick(decode(state), tick.at, catalog, self._last_reports(tenant, catalog))
                return (encode(step.state) if step.state else state), self._outputs(step, tick.at)

            await apply_guarded(self.table, key, event, fold)


def register_report_feed(pipe: Pipeline) -> None:
    """Completed job results (key: digest) re-keyed by tenant onto `catalog-updates` as ReportSeen."""

    @pipe.app.agent(pipe.source("job-results"), name="report-times")
    async def report_times(stream: faust.StreamT[Any]) -> None:
        async def handle(event: faust.EventT[Any]) -> None:
            decoded = await pipe.decode(event)
            if decoded is None or not isinstance(decoded.model, JobResult):
                return
            result = decoded.model
            if result.status != "completed":
                return
            seen = ReportSeen(tenant=result.tenant, image_digest=result.image_digest, at=result.finished_at)
            await publish([pipe.out("catalog-updates", result.tenant, seen)])

        await pipe.run(stream, "report-times", handle, batched=True)


def _gated_outputs(pipe: Pipeline, run: PlannedRun) -> list[Output]:
    """A run with limits: its job commands and plan go to the run stage only, which releases the jobs to
    `jobs` within the limits (streams/run_gate.py); the commands come first, so the plan finds them."""
    outputs = [pipe.out("run-inputs", run.run_id, job) for job in run.jobs]
    planned = RunPlanned(
        run_id=run.run_id,
        tenant=run.jobs[0].tenant,
        job_ids=sorted(job.job_id for job in run.jobs),
        at=run.nominal,
        limits=run.limits,
    )
    outputs.append(pipe.out("run-inputs", run.run_id, planned))
    observe.jobs_emitted(run.jobs)
    return outputs


def _empty_plan(step: Step, run: PlannedRun) -> RunPlanned:
    tenant = step.event.tenant if step.event else ""
    return RunPlanned(run_id=run.run_id, tenant=tenant, job_ids=[], at=run.nominal)
