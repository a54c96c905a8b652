"""Findings diffs, counts and run summaries (docs/architecture.md §5). Pure.

A finding's identity across evaluations is ``(vulnerability id, package key)``: an upgrade that is still
vulnerable to the same advisory is the same finding, not a removal plus an addition. Only a severity
move on the same identity is a *change*. "No change" is a status of the delta, not the absence of one.

Verdict transitions are asymmetric on purpose: an image that fails for the first time (previous verdict
unknown) counts as ``verdict_to_fail``, because a new failure is news; a first-time pass is not counted as
``verdict_to_pass``, which is reserved for images that were failing.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, Literal

from schemas.canonical import dumps
from schemas.messages import (
    SEVERITY_RANK,
    Attempt,
    DeltaSummary,
    Finding,
    FindingChange,
    FindingsDelta,
    FindingTrace,
    JobCommand,
    JobResult,
    SeverityCounts,
)

Verdict = Literal["pass", "fail", "unknown"]
FindingKey = tuple[str, str]

# Canonical bytes of explain traces one result may carry. A trace is ~1 KB; results are capped at 1 MiB by
# every consumer (``max_message_bytes``), so an image with thousands of findings must not push its result
# over: past the budget the traces lose their ranges as written / as walked (the pair and the reason stay),
# and past it again the least telling traces are left out and counted.
TRACE_BUDGET_BYTES = 256 * 1024


def finding_key(f: Finding) -> FindingKey:
    return (f.id, f.package)


def sort_findings(findings: Iterable[Finding]) -> list[Finding]:
    """Canonical order: package, then vulnerability id, then version."""
    return sorted(findings, key=lambda f: (f.package, f.id, f.version or ""))


def sort_traces(traces: Iterable[FindingTrace]) -> list[FindingTrace]:
    """Canonical order of explain traces, the findings' own: package, vulnerability id, version."""
    return sorted(traces, key=lambda t: (t.package, t.id, t.version or "", t.purl))


def _trace_bytes(trace: FindingTrace) -> int:
    return len(dumps(trace.model_dump(mode="json"))) + 1


def _compact(trace: FindingTrace) -> FindingTrace:
    return trace.model_copy(
        update={"range": trace.range.model_copy(update={"written": [], "normalised": []})}
    )


def _telling(trace: FindingTrace) -> tuple[int, int]:
    # Keep first what decides the verdict, then other reported findings, then VEX suppressions.
    return (0 if trace.policy.effect == "fail" else 1, 0 if trace.outcome == "reported" else 1)


def fit_traces(
    traces: Iterable[FindingTrace], budget: int = TRACE_BUDGET_BYTES
) -> tuple[list[FindingTrace], int]:
    """Traces that fit ``budget`` canonical bytes (sorted), and how many were left out. Deterministic."""
    ordered = sort_traces(traces)
    if sum(_trace_bytes(t) for t in ordered) <= budget:
        return ordered, 0
    compact = [_compact(t) for t in ordered]
    if sum(_trace_bytes(t) for t in compact) <= budget:
        return compact, 0
    kept: list[FindingTrace] = []
    used = 0
    for trace in sorted(compact, key=_telling):  # stable: canonical order within each rank
        size = _trace_bytes(trace)
        if used + size > budget:
            break
        kept.append(trace)
        used += size
    return sort_traces(kept), len(ordered) - len(kept)


def _by_key(findings: Iterable[Finding]) -> dict[FindingKey, Finding]:
    # Two versions of one package in one image share a key; the worse severity represents both.
    out: dict[FindingKey, Finding] = {}
    for f in sort_findings(findings):
        k = finding_key(f)
        seen = out.get(k)
        if seen is None or SEVERITY_RANK[f.severity] > SEVERITY_RANK[seen.severity]:
            out[k] = f
    return out


def diff(previous: Sequence[Finding] | None, current: Sequence[Finding]) -> FindingsDelta:
    """Delta from the image's previous result to this one. ``previous=None``: first evaluation."""
    before = _by_key(previous or ())
    after = _by_key(current)
    added = [after[k] for k in sorted(after.keys() - before.keys())]
    removed = [before[k] for k in sorted(before.keys() - after.keys())]
    changed = [
        FindingChange(id=k[0], package=k[1], before=before[k].severity, after=after[k].severity)
        for k in sorted(before.keys() & after.keys())
        if before[k].severity != after[k].severity
    ]
    status: Literal["changed", "no_change"] = "changed" if added or removed or changed else "no_change"
    return FindingsDelta(
        status=status, added=sort_findings(added), removed=sort_findings(removed), changed=changed
    )


def counts(findings: Iterable[Finding]) -> SeverityCounts:
    """Per-severity counts; severity "none" findings are informational and not counted."""
    tally = {"critical": 0, "high": 0, "medium": 0, "low": 0, "unknown": 0}
    for f in findings:
        if f.severity in tally:
            tally[f.severity] += 1
    return SeverityCounts(**tally)


def kev_hits(findings: Iterable[Finding]) -> int:
    return sum(1 for f in findings if f.kev)


def _identity(job: JobCommand) -> dict[str, Any]:
    """What every result repeats of its job, so consumers need not join on the command."""
    return {
        "job_id": job.job_id,
        "run_id": job.run_id,
        "tenant": job.tenant,
        "image_digest": job.image_digest,
        "priority": job.priority,
    }


def completed_result(
    job: JobCommand,
    findings: Sequence[Finding],
    verdict: Verdict,
    *,
    previous_findings: Sequence[Finding] | None,
    previous_verdict: Verdict,
    attempts: Sequence[Attempt],
    finished_at: datetime,
    traces: Sequence[FindingTrace] = (),
) -> JobResult:
    """The JobResult for a successful execution, with its diff against the image's previous result and
    the findings' explain traces (part of the signed payload)."""
    ordered = sort_findings(findings)
    kept, omitted = fit_traces(traces)
    return JobResult(
        **_identity(job),
        status="completed",
        finished_at=finished_at,
        attempts=list(attempts),
        findings=ordered,
        verdict=verdict,
        previous_verdict=previous_verdict,
        delta=diff(previous_findings, ordered),
        counts=counts(ordered),
        kev_hits=kev_hits(ordered),
        inputs=job.inputs,
        sla_breached=finished_at > job.deadline,
        traces=kept,
        traces_omitted=omitted,
    )


def failed_result(
    job: JobCommand,
    *,
    attempts: Sequence[Attempt],
    finished_at: datetime,
    error: str,
    previous_verdict: Verdict = "unknown",
    sla_breached: bool = True,
) -> JobResult:
    """A job given up on. ``sla_breached`` defaults to True: giving up means no result before the deadline."""
    return JobResult(
        **_identity(job),
        status="failed",
        finished_at=finished_at,
        attempts=list(attempts),
        verdict="unknown",
        previous_verdict=previous_verdict,
        inputs=job.inputs,
        error=error,
        sla_breached=sla_breached,
    )


def skipped_result(job: JobCommand, *, finished_at: datetime, reason: str = "run-cancelled") -> JobResult:
    """A queued job that was not executed (its run was cancelled)."""
    return JobResult(
        **_identity(job),
        status="skipped",
        finished_at=finished_at,
        inputs=job.inputs,
        error=reason,
    )


def add_to_summary(summary: DeltaSummary, result: JobResult) -> DeltaSummary:
    """Fold one job result into a run summary. Callers dedupe by job id; this function cannot."""
    if result.status == "skipped":
        return summary
    if result.status == "failed":
        return summary.model_copy(update={"images": summary.images + 1, "failed": summary.failed + 1})
    d = result.delta
    changed = d.status == "changed"
    to_fail = result.verdict == "fail" and result.previous_verdict != "fail"
    to_pass = result.verdict == "pass" and result.previous_verdict == "fail"
    new_ids = sorted(set(summary.new_findings) | {f.id for f in d.added})
    return DeltaSummary(
        images=summary.images + 1,
        changed=summary.changed + int(changed),
        no_change=summary.no_change + int(not changed),
        failed=summary.failed,
        added=summary.added + len(d.added),
        removed=summary.removed + len(d.removed),
        severity_changed=summary.severity_changed + len(d.changed),
        new_critical=summary.new_critical + sum(1 for f in d.added if f.severity == "critical"),
        new_high=summary.new_high + sum(1 for f in d.added if f.severity == "high"),
        kev_hits=summary.kev_hits + result.kev_hits,
        verdict_to_fail=summary.verdict_to_fail + int(to_fail),
        verdict_to_pass=summary.verdict_to_pass + int(to_pass),
        new_findings=new_ids,
    )


def summarise(results: Iterable[JobResult]) -> DeltaSummary:
    """DeltaSummary of a run's results; a job id seen twice counts once (first result wins)."""
    summary = DeltaSummary()
    seen: set[str] = set()
    for result in results:
        if result.job_id in seen:
            continue
        seen.add(result.job_id)
        summary = add_to_summary(summary, result)
    return summary
