"""Run state fold (docs/architecture.md §4-5). Pure: every event carries its own event time.

A run's state is *derived* from what the fold has seen, not stepped through a fixed sequence, because the
events come from different topics and partitions and may arrive in any order:

- ``cancelled`` once a cancel request was seen (terminal; running jobs still finish and are counted);
- ``planning`` until the planner says the window closed with N jobs (``RunPlanned``);
- ``completed`` / ``error`` once planned and every job is terminal (``error`` when every job failed);
- ``running`` once any job started or finished; otherwise ``queued``.

Application is idempotent: each job has one status that only moves forward
(queued → running → completed | failed | skipped), so a re-delivered event is a no-op; a result is folded
into the summary only when its job first becomes terminal.

A RunEvent is emitted when the derived state changes, and once more when a cancelled run settles (its
last running job finished), so the final counts of a cancelled run are published. ``jobs_done`` counts
terminal jobs (completed + failed + skipped): it is the progress numerator for ``jobs_total``.

The fold keeps the job commands it saw so ``retry_run`` can re-issue them without another lookup; the
table value therefore grows with the run's size (a few hundred bytes a job).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from datetime import UTC, datetime

from pydantic import Field

from schemas.canonical import dumps, format_time, loads
from schemas.messages import (
    TERMINAL_JOB_STATUSES,
    TERMINAL_RUN_STATES,
    DeltaSummary,
    JobCommand,
    JobResult,
    JobStarted,
    JobStatus,
    Model,
    RunCancelRequested,
    RunEvent,
    RunPlanned,
    RunState,
    Timestamp,
)
from streams.findings import add_to_summary

_JOB_ORDER: dict[str, int] = {"queued": 0, "running": 1, "completed": 2, "failed": 2, "skipped": 2}


RunInput = RunPlanned | JobCommand | JobStarted | JobResult | RunCancelRequested


class RunFold(Model):
    """Table value for one run (key: run id)."""

    run_id: str
    tenant: str
    state: RunState = "planning"
    planned: bool = False
    cancelled: bool = False
    settled: bool = False  # every known job terminal (with planned); tracked to emit a cancelled run's end
    planned_job_ids: list[str] = []
    jobs: dict[str, JobStatus] = {}
    commands: dict[str, JobCommand] = {}
    summary: DeltaSummary = DeltaSummary()
    retry_of: str | None = None
    created_at: Timestamp
    updated_at: Timestamp
    finished_at: Timestamp | None = None


def new_run(run_id: str, tenant: str, at: datetime, retry_of: str | None = None) -> RunFold:
    return RunFold(run_id=run_id, tenant=tenant, created_at=at, updated_at=at, retry_of=retry_of)


def _counts(fold: RunFold) -> tuple[int, int, int, int]:
    """(total, done, failed, skipped)."""
    ids = set(fold.planned_job_ids) | fold.jobs.keys()
    statuses = [fold.jobs.get(i, "queued") for i in ids]
    done = sum(1 for s in statuses if s in TERMINAL_JOB_STATUSES)
    return len(ids), done, statuses.count("failed"), statuses.count("skipped")


def _derive(fold: RunFold) -> tuple[RunState, bool]:
    total, done, failed, _ = _counts(fold)
    settled = fold.planned and done == total
    if fold.cancelled:
        return "cancelled", settled
    if not fold.planned:
        return "planning", settled
    if settled:
        return ("error" if total > 0 and failed == total else "completed"), settled
    if any(s != "queued" for s in fold.jobs.values()):
        return "running", settled
    return "queued", settled


def run_event(fold: RunFold, at: datetime | None = None) -> RunEvent:
    """Snapshot of the run as a RunEvent (also usable for periodic progress reporting)."""
    total, done, failed, skipped = _counts(fold)
    return RunEvent(
        run_id=fold.run_id,
        tenant=fold.tenant,
        state=fold.state,
        at=at or fold.updated_at,
        jobs_total=total,
        jobs_done=done,
        jobs_failed=failed,
        jobs_skipped=skipped,
        summary=fold.summary,
        retry_of=fold.retry_of,
    )


def _whole_seconds(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("naive datetime: pass aware UTC times")
    return value.astimezone(UTC).replace(microsecond=0)


def _event_time(event: RunInput) -> datetime:
    if isinstance(event, JobCommand):
        return event.window_end
    if isinstance(event, JobResult):
        return event.finished_at
    return event.at


def _advance(jobs: Mapping[str, JobStatus], job_id: str, status: JobStatus) -> dict[str, JobStatus] | None:
    """New job map if the status moves forward, else None (duplicate or out-of-order stale event)."""
    current = jobs.get(job_id)
    if current is not None and _JOB_ORDER[status] <= _JOB_ORDER[current]:
        return None
    new = dict(jobs)
    new[job_id] = status
    return new


def apply(fold: RunFold | None, event: RunInput) -> tuple[RunFold, list[RunEvent]]:
    """Fold one event into the run. Returns the new state and the RunEvents to emit (possibly none).

    ``fold=None`` starts a run from its first event, whichever kind it is.
    """
    at = _event_time(event)
    if fold is None:
        # Only the planner knows what a run retries; a job's retry_of names a job, not a run.
        retry_of = event.retry_of if isinstance(event, RunPlanned) else None
        fold = new_run(event.run_id, event.tenant, at, retry_of)
        before: RunState | None = None
    else:
        if event.run_id != fold.run_id:
            raise ValueError(f"event for run {event.run_id} applied to run {fold.run_id}")
        before = fold.state
    was_settled = fold.settled
    update: dict[str, object] = {}

    if isinstance(event, RunPlanned):
        if not fold.planned:
            update = {"planned": True, "planned_job_ids": sorted(set(event.job_ids))}
            if event.retry_of and not fold.retry_of:
                update["retry_of"] = event.retry_of
    elif isinstance(event, RunCancelRequested):
        if not fold.cancelled and fold.state not in TERMINAL_RUN_STATES:
            update = {"cancelled": True}
    elif isinstance(event, JobCommand):
        jobs = _advance(fold.jobs, event.job_id, "queued")
        if jobs is not None or event.job_id not in fold.commands:
            commands = dict(fold.commands)
            commands[event.job_id] = event
            update = {"commands": commands, "jobs": jobs if jobs is not None else fold.jobs}
    elif isinstance(event, JobStarted):
        jobs = _advance(fold.jobs, event.job_id, "running")
        if jobs is not None:
            update = {"jobs": jobs}
    else:
        jobs = _advance(fold.jobs, event.job_id, event.status)
        if jobs is not None:
            update = {"jobs": jobs, "summary": add_to_summary(fold.summary, event)}

    if not update and before is not None:
        return fold, []
    update["updated_at"] = max(fold.updated_at, at)
    fold = fold.model_copy(update=update)
    state, settled = _derive(fold)
    finished_at = fold.finished_at
    if state in TERMINAL_RUN_STATES and finished_at is None:
        finished_at = at
    fold = fold.model_copy(update={"state": state, "settled": settled, "finished_at": finished_at})
    emit = state != before or (settled and not was_settled)
    return fold, ([run_event(fold, at)] if emit else [])


def is_cancelled(fold: RunFold | None, job: JobCommand) -> bool:
    """Whether a worker must skip this job instead of executing it (its run was cancelled before it ran).

    A job already running when the cancel arrived is allowed to finish; the shell only asks this before
    starting, so "not yet terminal and not running" is the skip condition.
    """
    if fold is None or not fold.cancelled:
        return False
    return fold.jobs.get(job.job_id, "queued") == "queued"


def is_terminal(fold: RunFold) -> bool:
    return fold.state in TERMINAL_RUN_STATES


# ---------------------------------------------------------------- retry


class RetryPlan(Model):
    run_id: str
    retry_of: str
    planned: RunPlanned
    commands: list[JobCommand]
    missing: list[str] = Field([], description="jobs to retry whose command the fold never saw")


def retry_run_id(old_run_id: str, at: datetime) -> str:
    """Content id: retrying the same run at the same instant twice yields the same run."""
    return hashlib.sha256(f"retry|{old_run_id}|{format_time(at)}".encode()).hexdigest()


def retry_run(old: RunFold, at: datetime, *, only_unfinished: bool = True) -> RetryPlan:
    """Plan a new run that re-issues the old run's jobs (by default those that did not complete).

    New job ids hash the old job id with the new run id so they never collide with the originals. Each
    new job keeps its class and its SLA span (deadline - window end), restarted from ``at``.
    """
    if not is_terminal(old):
        raise ValueError(f"run {old.run_id} is {old.state}; only a terminal run can be retried")
    at = _whole_seconds(at)
    new_id = retry_run_id(old.run_id, at)
    every = sorted(set(old.planned_job_ids) | old.jobs.keys())
    wanted = [j for j in every if not only_unfinished or old.jobs.get(j) != "completed"]
    if only_unfinished and not wanted:
        wanted = every  # a cleanly completed run retried means "run it again"
    commands: list[JobCommand] = []
    missing: list[str] = []
    for job_id in wanted:
        cmd = old.commands.get(job_id)
        if cmd is None:
            missing.append(job_id)
            continue
        span = cmd.deadline - cmd.window_end
        commands.append(
            cmd.model_copy(
                update={
                    "job_id": hashlib.sha256(f"{job_id}|{new_id}".encode()).hexdigest(),
                    "run_id": new_id,
                    "deadline": at + span,
                    "retry_of": job_id,
                }
            )
        )
    commands.sort(key=lambda c: c.job_id)
    planned = RunPlanned(
        run_id=new_id,
        tenant=old.tenant,
        job_ids=[c.job_id for c in commands],
        at=at,
        retry_of=old.run_id,
    )
    return RetryPlan(run_id=new_id, retry_of=old.run_id, planned=planned, commands=commands, missing=missing)


# ---------------------------------------------------------------- table codec


def encode(fold: RunFold) -> bytes:
    return dumps(fold)


def decode(data: bytes) -> RunFold:
    return RunFold.model_validate(loads(data))
