"""Coalescing impacts into job commands (docs/architecture.md §3-4).

Several impacts on one image in one window become one ``PendingJob``; every field merges commutatively
(set union, max, or), so the order impacts arrive in cannot change the job. ``make_job`` then derives the
ids from content: ``job_id = sha256(tenant | window start | digest | kind)``, ``run_id = "run-" +
sha256(tenant | window start)[:32]``.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from schemas.canonical import format_time
from schemas.messages import (
    PRIORITY_RANK,
    SEVERITY_RANK,
    Impact,
    JobCommand,
    PriorityClass,
    Reason,
    Severity,
)
from streams.codec import from_epoch, to_epoch
from streams.sla import DEFAULT_SLA, classify, deadline


@dataclass(frozen=True, slots=True)
class JobConfig:
    sla: Mapping[str, timedelta] = field(default_factory=lambda: DEFAULT_SLA)
    # An inventory older than this at window end is re-scanned, not only re-evaluated. None: never.
    max_inventory_age: timedelta | None = timedelta(days=7)


DEFAULT_CONFIG = JobConfig()

# (source, id, modified epoch or None, detail): hashable, sortable, order-free.
ReasonRow = tuple[str, str, int | None, str]


@dataclass(frozen=True, slots=True)
class PendingJob:
    tenant: str
    digest: str
    reasons: frozenset[ReasonRow] = frozenset()
    severity: Severity = "unknown"
    kev: bool = False
    running: bool = False
    rescan: bool = False
    forced: PriorityClass | None = None
    policy_revision: int | None = None
    inventory_observed_at: int | None = None
    retry_of: str | None = None  # run id a retry recheck asked to retry; the smallest wins (commutative)
    impacts: int = field(default=0, compare=False)


def reason_order(row: ReasonRow) -> tuple[str, str, int, str]:
    """The order of a job's reasons (and of a pending job's stored rows)."""
    return (row[0], row[1], row[2] if row[2] is not None else -1, row[3])


def sorted_reasons(rows: Iterable[ReasonRow]) -> list[ReasonRow]:
    """`rows` in `reason_order`. Tuples compare in C without a key function, and give the same order
    whenever they can be compared: they cannot only where one row's time is None and another's with the
    same source and id is not, and Timsort's result depends only on the comparisons it makes."""
    rows = list(rows)
    try:
        return sorted(rows)  # type: ignore[type-var]
    except TypeError:
        return sorted(rows, key=reason_order)


def _row(reason: Reason) -> ReasonRow:
    return (reason.source, reason.id, to_epoch(reason.modified) if reason.modified else None, reason.detail)


def _max_opt(a: int | None, b: int | None) -> int | None:
    if a is None:
        return b
    if b is None:
        return a
    return max(a, b)


def merge_impact(pending: PendingJob | None, impact: Impact) -> PendingJob:
    pending = pending or PendingJob(impact.tenant, impact.image_digest, severity="none")
    severity = pending.severity
    if SEVERITY_RANK[impact.severity] > SEVERITY_RANK[severity]:
        severity = impact.severity
    forced = pending.forced
    if impact.priority is not None and (
        forced is None or PRIORITY_RANK[impact.priority] > PRIORITY_RANK[forced]
    ):
        forced = impact.priority
    observed = to_epoch(impact.inventory_observed_at) if impact.inventory_observed_at else None
    return PendingJob(
        tenant=pending.tenant,
        digest=pending.digest,
        reasons=pending.reasons | {_row(r) for r in impact.reasons},
        severity=severity,
        kev=pending.kev or impact.kev,
        running=pending.running or impact.running,
        rescan=pending.rescan or impact.kind == "rescan",
        forced=forced,
        policy_revision=_max_opt(pending.policy_revision, impact.policy_revision),
        # The newest inventory seen wins: a fresh SBOM makes an earlier staleness moot.
        inventory_observed_at=_max_opt(pending.inventory_observed_at, observed),
        retry_of=_min_opt(pending.retry_of, impact.retry_of),
        impacts=pending.impacts + 1,
    )


def _min_opt(a: str | None, b: str | None) -> str | None:
    if a is None:
        return b
    if b is None:
        return a
    return min(a, b)


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def job_id_for(tenant: str, window_start: datetime, digest: str, kind: str) -> str:
    return _sha(f"{tenant}|{format_time(window_start)}|{digest}|{kind}")


def run_id_for(tenant: str, window_start: datetime) -> str:
    return "run-" + _sha(f"{tenant}|{format_time(window_start)}")[:32]


def make_job(
    pending: PendingJob, window_start: datetime, window: timedelta, config: JobConfig = DEFAULT_CONFIG
) -> JobCommand:
    window_end = window_start + window
    rows = set(pending.reasons)
    rescan = pending.rescan
    if (
        config.max_inventory_age is not None
        and pending.inventory_observed_at is not None
        and window_end - from_epoch(pending.inventory_observed_at) > config.max_inventory_age
    ):
        rescan = True
        observed = format_time(from_epoch(pending.inventory_observed_at))
        rows.add(("inventory", "stale", None, f"inventory observed {observed}, older than the maximum age"))
    kind = "rescan" if rescan else "reevaluate"
    priority = classify(
        severity=pending.severity,
        kev=pending.kev,
        running=pending.running,
        sources={r[0] for r in rows},
        forced=pending.forced,
    )
    # Plain dicts, validated in one call with the command: a model per reason and input cost a Python
    # __init__ each (three quarters of this function, at a thousand jobs a second at W = 1 s).
    reasons = [
        {"source": s, "id": i, "modified": from_epoch(m) if m is not None else None, "detail": d}
        for s, i, m, d in sorted_reasons(rows)
    ]
    advisories = sorted({(r[1], r[2]) for r in rows if r[0] == "advisory" and r[2] is not None})
    inputs = {
        "advisories": [{"id": i, "modified": from_epoch(m)} for i, m in advisories],
        "vex": sorted({r[1] for r in rows if r[0] == "vex"}),
        "policy_revision": pending.policy_revision,
    }
    return JobCommand.model_validate(
        {
            "job_id": job_id_for(pending.tenant, window_start, pending.digest, kind),
            "run_id": run_id_for(pending.tenant, window_start),
            "tenant": pending.tenant,
            "image_digest": pending.digest,
            "kind": kind,
            "priority": priority,
            "window_start": window_start,
            "window_end": window_end,
            "deadline": deadline(window_end, priority, config.sla),
            "reasons": reasons,
            "inputs": inputs,
            "retry_of": pending.retry_of,
        }
    )


def run_retry_of(jobs: Iterable[JobCommand]) -> str | None:
    """The run a planned run retries: the (smallest) ``retry_of`` its window's jobs carry, or None.

    A window may mix a retry recheck's images with other impacts; the run still retries the old run.
    """
    found = sorted({j.retry_of for j in jobs if j.retry_of})
    return found[0] if found else None


def encode_pending(p: PendingJob) -> list[object]:
    return [
        p.tenant,
        p.digest,
        sorted_reasons(p.reasons),  # tuples: orjson writes them as arrays
        p.severity,
        p.kev,
        p.running,
        p.rescan,
        p.forced,
        p.policy_revision,
        p.inventory_observed_at,
        p.impacts,
        p.retry_of,
    ]


def decode_reasons(rows: Iterable[list[object]]) -> frozenset[ReasonRow]:
    """Reason rows as stored (JSON lists) back to the tuples a fold compares."""
    return frozenset((r[0], r[1], r[2], r[3]) for r in rows)  # type: ignore[misc]


def decode_pending(row: list[object]) -> PendingJob:
    # Rows written before retry_of existed have 11 entries.
    tenant, digest, reasons, severity, kev, running, rescan, forced, revision, observed, impacts = row[:11]
    retry_of = row[11] if len(row) > 11 else None
    assert isinstance(reasons, list)
    return PendingJob(
        tenant=str(tenant),
        digest=str(digest),
        reasons=decode_reasons(reasons),
        severity=severity,  # type: ignore[arg-type]
        kev=bool(kev),
        running=bool(running),
        rescan=bool(rescan),
        forced=forced,  # type: ignore[arg-type]
        policy_revision=revision,  # type: ignore[arg-type]
        inventory_observed_at=observed,  # type: ignore[arg-type]
        impacts=int(impacts),  # type: ignore[call-overload]
        retry_of=str(retry_of) if retry_of is not None else None,
    )
