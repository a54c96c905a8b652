from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from schemas.messages import Finding, JobCommand, JobInputs, Severity
from streams import findings as fx

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def f(
    vid: str, pkg: str = "npm/lodash", sev: Severity = "high", kev: bool = False, ver: str = "1.0"
) -> Finding:
    return Finding(id=vid, package=pkg, version=ver, severity=sev, kev=kev)


def job(job_id: str = "j1") -> JobCommand:
    return JobCommand(
        schema="scheduler.job-command@1",
        job_id=job_id,
        run_id="r1",
        tenant="t1",
        image_digest=f"sha256:{job_id}",
        kind="reevaluate",
        priority="normal",
        window_start=T0,
        window_end=T0,
        deadline=T0 + timedelta(hours=4),
        reasons=[],
        inputs=JobInputs(policy_revision=3),
    )


def test_diff_added_removed_changed() -> None:
    before = [f("CVE-1"), f("CVE-2", sev="medium"), f("CVE-3")]
    after = [f("CVE-2", sev="critical"), f("CVE-3", ver="1.1"), f("CVE-4", sev="low")]
    d = fx.diff(before, after)
    assert d.status == "changed"
    assert [x.id for x in d.added] == ["CVE-4"]
    assert [x.id for x in d.removed] == ["CVE-1"]
    assert [(c.id, c.before, c.after) for c in d.changed] == [("CVE-2", "medium", "critical")]


def test_same_findings_in_other_order_is_no_change() -> None:
    a = [f("CVE-1"), f("CVE-2", pkg="pypi/requests")]
    d = fx.diff(a, list(reversed(a)))
    assert d.status == "no_change"
    assert (d.added, d.removed, d.changed) == ([], [], [])


def test_first_evaluation_everything_added() -> None:
    d = fx.diff(None, [f("CVE-2"), f("CVE-1")])
    assert d.status == "changed"
    assert [x.id for x in d.added] == ["CVE-1", "CVE-2"]
    assert fx.diff(None, []).status == "no_change"


def test_counts_and_kev() -> None:
    fs = [f("a", sev="critical", kev=True), f("b", sev="critical"), f("c", sev="none"), f("d", sev="unknown")]
    c = fx.counts(fs)
    assert (c.critical, c.high, c.unknown) == (2, 0, 1)
    assert fx.kev_hits(fs) == 1


def test_completed_result_and_summary() -> None:
    r1 = fx.completed_result(
        job("j1"),
        [f("CVE-9", sev="critical", kev=True), f("CVE-1")],
        "fail",
        previous_findings=[f("CVE-1")],
        previous_verdict="pass",
        attempts=[],
        finished_at=T0 + timedelta(minutes=5),
    )
    assert [x.id for x in r1.findings] == ["CVE-1", "CVE-9"]
    assert r1.delta.status == "changed"
    assert r1.kev_hits == 1
    assert not r1.sla_breached
    r2 = fx.completed_result(
        job("j2"),
        [f("CVE-1")],
        "pass",
        previous_findings=[f("CVE-1"), f("CVE-0", sev="critical")],
        previous_verdict="fail",
        attempts=[],
        finished_at=T0,
    )
    r3 = fx.failed_result(job("j3"), attempts=[], finished_at=T0, error="budget-exhausted")
    r4 = fx.skipped_result(job("j4"), finished_at=T0)
    r5 = fx.completed_result(
        job("j5"), [], "pass", previous_findings=[], previous_verdict="pass", attempts=[], finished_at=T0
    )
    s = fx.summarise([r1, r2, r3, r4, r5, r1])
    assert s.images == 4
    assert (s.changed, s.no_change, s.failed) == (2, 1, 1)
    assert (s.added, s.removed, s.severity_changed) == (1, 1, 0)
    assert (s.new_critical, s.new_high, s.kev_hits) == (1, 0, 1)
    assert (s.verdict_to_fail, s.verdict_to_pass) == (1, 1)
    assert s.new_findings == ["CVE-9"]
    assert fx.summarise([]) == fx.summarise([r4])


def test_first_failure_counts_as_verdict_to_fail_but_first_pass_not_to_pass() -> None:
    common: dict[str, Any] = {
        "previous_findings": None,
        "previous_verdict": "unknown",
        "attempts": [],
        "finished_at": T0,
    }
    fail = fx.completed_result(job("a"), [f("CVE-1", sev="critical")], "fail", **common)
    ok = fx.completed_result(job("b"), [], "pass", **common)
    s = fx.summarise([fail, ok])
    assert (s.verdict_to_fail, s.verdict_to_pass) == (1, 0)
