"""Schedules: cron sweeps over a tenant's catalog (pure core; the shell is agents/schedule_stage.py).

A schedule is folded from its commands (create / update / pause / resume / delete / run) into a
``ScheduleState`` keyed ``tenant/schedule id``, in the tenant-keyed partition that also holds the catalog.

Time
----
Fire times come from cronsim (Debian cron semantics) evaluated in the schedule's IANA zone and are handled
as UTC instants everywhere else. Daylight saving time, as Debian cron does it (and as tested):

* a wall time that does not exist (02:30 on Europe/Berlin's spring-forward day) fires once, at the first
  valid instant after the gap (03:00 CEST = 01:00 UTC);
* a wall time that exists twice (02:30 on Europe/Berlin's fall-back day, 01:30 on America/New_York's) fires
  once, at its first occurrence (summer time);
* expressions with ``*`` in the minute or hour field (``*/15 * * * *``, ``30 * * * *``) are not adjusted:
  they fire at every matching instant, so on the fall-back day ``30 * * * *`` fires at 02:30 CEST and again at
  02:30 CET (two distinct UTC instants, two runs).

Firing
------
The wall clock decides *when* (the shell's tick carries ``now``); the nominal (cron) time decides *what*:
the run id is ``sha256(tenant | schedule | trigger | nominal)``, the job ids add the digest. The state's
``cursor`` says every occurrence at or before it has been decided, so a redelivered tick, a restart or a
second worker never fires an occurrence twice, and a replay fires the same runs with the same ids.

Occurrences in ``(cursor, now]`` fired within ``missed.grace_seconds`` of their nominal time are on time;
older ones were missed (the workers were down) and the policy decides:

* ``skip``: missed occurrences are recorded as skipped, none fires;
* ``latest``: the most recent missed occurrence fires, unless an on-time one supersedes it;
* ``all``: the ``max_catchup`` most recent missed occurrences fire (oldest first), older ones are skipped.

A paused schedule decides nothing; ``resume`` moves the cursor to the resume time, so occurrences during the
pause are neither fired nor counted as missed. ``pause`` and ``update`` first decide what was already due at
their time (as a tick would, under the old spec); ``create`` / ``update`` then go on from the command's time.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from cronsim import CronSim
from pydantic import BaseModel, ConfigDict

from schemas.canonical import dumps, format_time, loads
from schemas.cron import zone
from schemas.messages import (
    JobCommand,
    Reason,
    RunLimits,
    ScheduleCommand,
    ScheduleEvent,
    ScheduleOccurrence,
    ScheduleSpec,
    ScheduleStatus,
    Timestamp,
)
from streams.codec import to_epoch
from streams.jobs import PendingJob, make_job
from streams.tenants import ImageMeta, TenantCatalog, select

Trigger = Literal["cron", "manual"]

# One tick examines at most this many occurrences; a longer backlog is worked off over several ticks.
MAX_SCAN = 10_000


# ---------------------------------------------------------------- time


def _utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("naive datetime: pass aware times")
    return value.astimezone(UTC).replace(microsecond=0)


def fire_times(cron: str, tz: str, after: datetime, *, until: datetime | None = None) -> Iterator[datetime]:
    """Fire times (aware UTC, whole seconds) strictly after ``after`` and, with ``until``, at or before it.

    cronsim iterates in naive wall time for Debian-style fixed-time jobs, which forgets which side of a
    fall-back an instant was on; the strictly-after filter keeps an occurrence already passed (the first
    02:30) from coming back when the iteration starts inside the repeated hour.
    """
    start = _utc(after)
    local = start.astimezone(zone(tz))
    for found in CronSim(cron, local):
        instant = _utc(found)
        if instant <= start:
            continue
        if until is not None and instant > until:
            return
        yield instant


def next_fires(cron: str, tz: str, after: datetime, count: int) -> list[datetime]:
    out: list[datetime] = []
    for instant in fire_times(cron, tz, after):
        out.append(instant)
        if len(out) >= count:
            break
    return out


def schedule_run_id(tenant: str, schedule_id: str, nominal: datetime, trigger: str = "cron") -> str:
    text = f"schedule|{tenant}|{schedule_id}|{trigger}|{format_time(nominal)}"
    return "run-" + hashlib.sha256(text.encode()).hexdigest()[:32]


def schedule_job_id(run_id: str, digest: str, kind: str) -> str:
    return hashlib.sha256(f"{run_id}|{digest}|{kind}".encode()).hexdigest()


# ---------------------------------------------------------------- state


class ScheduleState(BaseModel):
    """Table value for one schedule (key ``tenant/schedule id``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    tenant: str
    schedule_id: str
    spec: ScheduleSpec
    status: ScheduleStatus = "active"
    created_at: Timestamp
    updated_at: Timestamp
    cursor: Timestamp  # every occurrence at or before it is decided
    last_fired: Timestamp | None = None
    fired_total: int = 0
    missed_total: int = 0


def table_key(tenant: str, schedule_id: str) -> str:
    return f"{tenant}/{schedule_id}"


def encode(state: ScheduleState) -> bytes:
    return dumps(state)


def decode(data: bytes) -> ScheduleState:
    return ScheduleState.model_validate(loads(data))


def next_fire(state: ScheduleState) -> datetime | None:
    """The next occurrence this schedule will decide (None while paused or deleted)."""
    if state.status != "active":
        return None
    found = next_fires(state.spec.cron, state.spec.timezone, state.cursor, 1)
    return found[0] if found else None


def _grace(spec: ScheduleSpec) -> timedelta:
    return timedelta(seconds=spec.missed.grace_seconds)


# ---------------------------------------------------------------- deciding occurrences


@dataclass(frozen=True, slots=True)
class Decision:
    nominal: datetime
    fire: bool
    why: str  # on-time | missed-latest | missed-catchup | missed-skipped


@dataclass(frozen=True, slots=True)
class Due:
    decisions: list[Decision]
    cursor: datetime  # the new cursor


def due(state: ScheduleState, now: datetime) -> Due:
    """What a tick at ``now`` decides: every occurrence in ``(cursor, now]`` fired or skipped by policy."""
    now = _utc(now)
    if state.status != "active" or now <= state.cursor:
        return Due([], state.cursor)
    spec = state.spec
    found: list[datetime] = []
    capped = False
    for instant in fire_times(spec.cron, spec.timezone, state.cursor, until=now):
        found.append(instant)
        if len(found) >= MAX_SCAN:
            capped = True
            break
    if capped:
        # Only a part of a very long backlog: all of it is older than what the next scans will find.
        return Due([Decision(n, False, "missed-skipped") for n in found], found[-1])
    grace = _grace(spec)
    on_time = [n for n in found if now - n <= grace]
    missed = [n for n in found if now - n > grace]
    fire_missed: set[datetime] = set()
    policy = spec.missed.policy
    if policy == "latest" and missed and not on_time:
        fire_missed = {missed[-1]}
    elif policy == "all":
        fire_missed = set(missed[-spec.missed.max_catchup :])
    decisions = [
        Decision(n, True, "missed-latest" if policy == "latest" else "missed-catchup")
        if n in fire_missed
        else Decision(n, False, "missed-skipped")
        for n in missed
    ]
    decisions.extend(Decision(n, True, "on-time") for n in on_time)
    return Due(decisions, now)


# ---------------------------------------------------------------- selection and jobs


@dataclass(frozen=True, slots=True)
class Selection:
    images: list[ImageMeta]
    selected: int  # matched the selection
    filtered_only_if: int  # of those, dropped by onlyIf
    truncated: int  # of the rest, dropped by limits.max_jobs


def select_images(
    spec: ScheduleSpec,
    catalog: TenantCatalog | None,
    now: datetime,
    last_reports: Mapping[str, datetime] | None = None,
) -> Selection:
    """The catalog's images the schedule covers at ``now``: selection, then onlyIf, then maxJobs.

    ``last_reports``: digest → time of its last report; an image without one always passes onlyIf. Under
    maxJobs the images whose last report is oldest (never first) go first, then by digest.
    """
    matched = select(catalog, spec.selection)
    reports = last_reports or {}
    days = spec.only_if.last_report_older_than_days
    kept = matched
    if days is not None:
        limit = timedelta(days=days)
        kept = [m for m in matched if m.digest not in reports or now - reports[m.digest] > limit]
    max_jobs = spec.limits.max_jobs
    truncated = 0
    if max_jobs is not None and len(kept) > max_jobs:
        never = datetime.min.replace(tzinfo=UTC)
        ordered = sorted(kept, key=lambda m: (reports.get(m.digest, never), m.digest))
        truncated = len(kept) - max_jobs
        kept = sorted(ordered[:max_jobs], key=lambda m: m.digest)
    return Selection(kept, len(matched), len(matched) - len(kept) - truncated, truncated)


def occurrence_jobs(
    tenant: str,
    schedule_id: str,
    spec: ScheduleSpec,
    nominal: datetime,
    trigger: Trigger,
    images: list[ImageMeta],
) -> list[JobCommand]:
    """One job per image, through the same job builder (priority class, SLA deadline) as the delta-driven
    jobs; the ids come from the schedule's occurrence instead of a window, and the kind from its mode."""
    run_id = schedule_run_id(tenant, schedule_id, nominal, trigger)
    local = nominal.astimezone(zone(spec.timezone)).isoformat()
    reason = Reason(source="schedule", id=schedule_id, modified=nominal, detail=f"{trigger} {local}")
    row = (reason.source, reason.id, to_epoch(nominal), reason.detail)
    jobs = []
    for meta in images:
        pending = PendingJob(
            tenant=tenant,
            digest=meta.digest,
            reasons=frozenset({row}),
            severity="none",
            running=meta.running,
            rescan=spec.mode == "content-refresh",
            forced=spec.priority,
            # The schedule's mode decides the kind: the stale-inventory rule of delta jobs (a rescan, and
            # with it an inventory reason that would lift a sweep out of its class) does not apply.
            inventory_observed_at=None,
        )
        job = make_job(pending, nominal, timedelta(0))
        job = job.model_copy(
            update={"job_id": schedule_job_id(run_id, meta.digest, job.kind), "run_id": run_id}
        )
        jobs.append(job)
    return jobs


# ---------------------------------------------------------------- the fold


@dataclass(frozen=True, slots=True)
class PlannedRun:
    run_id: str
    nominal: datetime
    jobs: list[JobCommand]
    limits: RunLimits | None = None  # the run stage releases the jobs within these (streams/run_gate.py)


def run_limits(spec: ScheduleSpec) -> RunLimits | None:
    """The limits the run stage enforces for a run of this schedule; None when the spec sets neither."""
    limits = spec.limits
    if limits.parallelism is None and limits.rate_per_second is None:
        return None
    return RunLimits(parallelism=limits.parallelism, rate_per_second=limits.rate_per_second)


@dataclass(frozen=True, slots=True)
class Step:
    state: ScheduleState | None
    event: ScheduleEvent | None
    runs: list[PlannedRun]


def _event(
    state: ScheduleState, at: datetime, occurrences: list[ScheduleOccurrence], rejected: str = ""
) -> ScheduleEvent:
    return ScheduleEvent(
        tenant=state.tenant,
        schedule_id=state.schedule_id,
        status=state.status,
        spec=state.spec,
        at=at,
        next_fire=next_fire(state),
        decided_until=state.cursor,
        last_fired=state.last_fired,
        fired_total=state.fired_total,
        missed_total=state.missed_total,
        occurrences=occurrences,
        rejected=rejected,
    )


def _fire(
    state: ScheduleState,
    decisions: list[Decision],
    trigger: Trigger,
    now: datetime,
    catalog: TenantCatalog | None,
    last_reports: Mapping[str, datetime] | None,
) -> tuple[list[ScheduleOccurrence], list[PlannedRun]]:
    occurrences: list[ScheduleOccurrence] = []
    runs: list[PlannedRun] = []
    selection = None
    for d in decisions:
        run_id = schedule_run_id(state.tenant, state.schedule_id, d.nominal, trigger)
        if not d.fire:
            occurrences.append(
                ScheduleOccurrence(nominal=d.nominal, trigger=trigger, fired=False, run_id=run_id, why=d.why)
            )
            continue
        # Selected as of the tick (the catalog is what it is now); the same for every run of one tick.
        selection = selection or select_images(state.spec, catalog, now, last_reports)
        jobs = occurrence_jobs(
            state.tenant, state.schedule_id, state.spec, d.nominal, trigger, selection.images
        )
        runs.append(PlannedRun(run_id, d.nominal, jobs, run_limits(state.spec)))
        occurrences.append(
            ScheduleOccurrence(
                nominal=d.nominal,
                trigger=trigger,
                fired=True,
                run_id=run_id,
                why=d.why,
                jobs=len(jobs),
                selected=selection.selected,
                filtered_only_if=selection.filtered_only_if,
                truncated=selection.truncated,
            )
        )
    return occurrences, runs


def _after_firing(
    state: ScheduleState, occurrences: list[ScheduleOccurrence], cursor: datetime
) -> ScheduleState:
    fired = [o.nominal for o in occurrences if o.fired and o.trigger == "cron"]
    last = max([*fired, *([state.last_fired] if state.last_fired else [])], default=None)
    return state.model_copy(
        update={
            "cursor": max(state.cursor, cursor),
            "last_fired": last,
            "fired_total": state.fired_total + sum(1 for o in occurrences if o.fired),
            "missed_total": state.missed_total + sum(1 for o in occurrences if not o.fired),
        }
    )


def on_tick(
    state: ScheduleState,
    now: datetime,
    catalog: TenantCatalog | None,
    last_reports: Mapping[str, datetime] | None = None,
) -> Step:
    """Decide and fire what is due at ``now``. Nothing due: the state is returned unchanged, no event."""
    result = due(state, now)
    if not result.decisions:
        return Step(state, None, [])
    occurrences, runs = _fire(state, result.decisions, "cron", _utc(now), catalog, last_reports)
    new = _after_firing(state, occurrences, result.cursor)
    return Step(new, _event(new, _utc(now), occurrences), runs)


def on_command(
    state: ScheduleState | None,
    command: ScheduleCommand,
    catalog: TenantCatalog | None,
    last_reports: Mapping[str, datetime] | None = None,
) -> Step:
    """Fold one command. A command that cannot apply (update of an unknown schedule, create of an existing
    one) changes nothing and says why in the event's ``rejected``."""
    at = _utc(command.at)
    alive = state is not None and state.status != "deleted"
    action = command.action

    def rejected(why: str) -> Step:
        if state is None:
            ghost = ScheduleState(
                tenant=command.tenant,
                schedule_id=command.schedule_id,
                spec=command.spec or ScheduleSpec(cron="0 0 * * *"),
                status="deleted",
                created_at=at,
                updated_at=at,
                cursor=at,
            )
            return Step(None, _event(ghost, at, [], why), [])
        return Step(state, _event(state, at, [], why), [])

    if action == "create":
        if alive:
            return rejected(f"schedule {command.schedule_id} exists (use update)")
        if command.spec is None:
            return rejected("create needs a spec")
        new = ScheduleState(
            tenant=command.tenant,
            schedule_id=command.schedule_id,
            spec=command.spec,
            created_at=at,
            updated_at=at,
            cursor=at,
        )
        return Step(new, _event(new, at, []), [])
    if state is None or not alive:
        return rejected(f"no schedule {command.schedule_id}")
    if action == "update" and command.spec is None:
        return rejected("update needs a spec")
    if action == "pause" and state.status == "paused":
        return rejected("already paused")
    if action == "resume" and state.status != "paused":
        return rejected("not paused")
    if action == "run":  # a manual occurrence at the command's time, paused or not
        occurrences, runs = _fire(state, [Decision(at, True, "manual")], "manual", at, catalog, last_reports)
        new = _after_firing(state, occurrences, state.cursor)
        return Step(new, _event(new, at, occurrences), runs)
    # What was due before a pause or an update is decided first, as a tick at the command's time would (the
    # old spec's occurrences under the old spec), so no occurrence falls between two rules undecided.
    before = Step(state, None, [])
    if action in ("pause", "update"):
        before = on_tick(state, at, catalog, last_reports)
    current = before.state or state
    occurrences = before.event.occurrences if before.event else []
    change: dict[str, object]
    if action == "update":
        change = {"spec": command.spec, "updated_at": at, "cursor": max(current.cursor, at)}
    elif action == "pause":
        change = {"status": "paused", "updated_at": at}
    elif action == "resume":
        change = {"status": "active", "updated_at": at, "cursor": max(current.cursor, at)}
    else:  # delete
        change = {"status": "deleted", "updated_at": at}
    new = current.model_copy(update=change)
    return Step(new, _event(new, at, occurrences), before.runs)


def preview_missed(state: ScheduleState, now: datetime) -> list[Decision]:
    """What the next tick at ``now`` would decide (``schedules catchup --dry-run``), firing nothing."""
    return due(state, now).decisions
