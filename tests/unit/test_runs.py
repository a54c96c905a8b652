from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.messages import JobCommand, JobInputs, JobResult
from streams import findings as fx
from streams import runs
from streams.runs import JobStarted, RunCancelRequested, RunFold, RunInput, RunPlanned

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def cmd(job_id: str, run_id: str = "r1") -> JobCommand:
    return JobCommand(
        schema="scheduler.job-command@1",
        job_id=job_id,
        run_id=run_id,
        tenant="t1",
        image_digest=f"sha256:{job_id}",
        kind="reevaluate",
        priority="high",
        window_start=T0,
        window_end=T0 + timedelta(seconds=30),
        deadline=T0 + timedelta(hours=1, seconds=30),
        reasons=[],
        inputs=JobInputs(),
    )


def started(job_id: str, s: int = 40) -> JobStarted:
    return JobStarted(job_id=job_id, run_id="r1", tenant="t1", at=T0 + timedelta(seconds=s))


def done(job_id: str, s: int = 60) -> JobResult:
    from schemas.messages import Finding

    return fx.completed_result(
        cmd(job_id),
        [Finding(id=f"CVE-{job_id}", package="npm/x", severity="critical")],
        "fail",
        previous_findings=[],
        previous_verdict="pass",
        attempts=[],
        finished_at=T0 + timedelta(seconds=s),
    )


def failed(job_id: str, s: int = 60) -> JobResult:
    return fx.failed_result(cmd(job_id), attempts=[], finished_at=T0 + timedelta(seconds=s), error="x")


PLANNED = RunPlanned(run_id="r1", tenant="t1", job_ids=["a", "b"], at=T0 + timedelta(seconds=30))


def fold_all(events: list[RunInput], fold: RunFold | None = None) -> tuple[RunFold, list[str]]:
    states: list[str] = []
    for e in events:
        fold, out = runs.apply(fold, e)
        states += [x.state for x in out]
    assert fold is not None
    return fold, states


def test_happy_path_transitions() -> None:
    fold, states = fold_all(
        [cmd("a"), cmd("b"), PLANNED, started("a"), done("a"), started("b"), done("b", 70)]
    )
    assert states == ["planning", "queued", "running", "completed"]
    ev = runs.run_event(fold)
    assert (ev.jobs_total, ev.jobs_done, ev.jobs_failed) == (2, 2, 0)
    assert ev.summary.images == 2
    assert ev.summary.new_findings == ["CVE-a", "CVE-b"]
    assert fold.finished_at == T0 + timedelta(seconds=70)


def test_duplicates_are_applied_once() -> None:
    events: list[RunInput] = [cmd("a"), cmd("b"), PLANNED, started("a"), done("a"), done("b")]
    once, s1 = fold_all(events)
    twice, s2 = fold_all([e for e in events for _ in range(2)])
    assert once == twice
    assert s1 == s2
    assert once.summary.images == 2


def test_out_of_order_arrival_reaches_same_end_state() -> None:
    a, _ = fold_all([cmd("a"), cmd("b"), PLANNED, started("a"), done("a"), done("b")])
    b, states = fold_all([done("b"), done("a"), started("a"), cmd("b"), PLANNED, cmd("a")])
    assert states[-1] == "completed"
    assert (a.state, a.jobs, a.summary) == (b.state, b.jobs, b.summary)


def test_not_complete_before_window_closes() -> None:
    fold, states = fold_all([cmd("a"), done("a")])
    assert fold.state == "planning"
    assert states == ["planning"]
    fold, states = fold_all([PLANNED], fold)
    assert fold.state == "running"
    fold, states = fold_all([done("b")], fold)
    assert states == ["completed"]


def test_all_failed_is_error_and_empty_run_completes() -> None:
    fold, _ = fold_all([PLANNED, failed("a"), failed("b")])
    assert fold.state == "error"
    _, states = fold_all([RunPlanned(run_id="r1", tenant="t1", job_ids=[], at=T0)])
    assert states == ["completed"]


def test_cancel_skips_queued_lets_running_finish() -> None:
    fold, _ = fold_all([cmd("a"), cmd("b"), PLANNED, started("a")])
    fold, out = runs.apply(fold, RunCancelRequested(run_id="r1", tenant="t1", at=T0 + timedelta(seconds=45)))
    assert [e.state for e in out] == ["cancelled"]
    assert runs.is_cancelled(fold, cmd("b"))
    assert not runs.is_cancelled(fold, cmd("a"))  # already running: finishes
    fold, out = runs.apply(fold, done("a"))
    assert out == []  # still waiting for b's skip
    fold, out = runs.apply(fold, fx.skipped_result(cmd("b"), finished_at=T0 + timedelta(seconds=50)))
    assert [(e.state, e.jobs_done, e.jobs_skipped) for e in out] == [("cancelled", 2, 1)]
    assert fold.summary.images == 1
    # a late duplicate cancel or a new result does not revive it
    fold2, out = runs.apply(fold, RunCancelRequested(run_id="r1", tenant="t1", at=T0))
    assert (fold2, out) == (fold, [])


def test_cancel_on_completed_run_is_ignored() -> None:
    fold, _ = fold_all([PLANNED, done("a"), done("b")])
    fold2, out = runs.apply(fold, RunCancelRequested(run_id="r1", tenant="t1", at=T0))
    assert fold2.state == "completed"
    assert out == []
    assert not runs.is_cancelled(fold2, cmd("a"))


def test_retry_run_reissues_unfinished_jobs() -> None:
    fold, _ = fold_all([cmd("a"), cmd("b"), PLANNED, done("a"), failed("b")])
    at = T0 + timedelta(hours=2)
    plan = runs.retry_run(fold, at)
    assert plan.retry_of == "r1"
    assert plan.run_id == runs.retry_run(fold, at).run_id  # deterministic
    assert plan.run_id != runs.retry_run(fold, at + timedelta(seconds=1)).run_id
    [c] = plan.commands
    assert c.retry_of == "b"
    assert c.run_id == plan.run_id
    assert c.job_id != "b"
    assert c.deadline == at + timedelta(hours=1)
    assert plan.planned.job_ids == [c.job_id]
    new, states = fold_all([plan.planned, *plan.commands])
    assert new.retry_of == "r1"
    assert states == ["queued"]
    assert runs.run_event(new).retry_of == "r1"
    everything = runs.retry_run(fold, at, only_unfinished=False)
    assert len(everything.commands) == 2


def test_retry_of_running_run_refused() -> None:
    fold, _ = fold_all([cmd("a"), PLANNED])
    with pytest.raises(ValueError, match="terminal"):
        runs.retry_run(fold, T0)


def test_encode_decode_roundtrip() -> None:
    fold, _ = fold_all([cmd("a"), cmd("b"), PLANNED, started("a"), done("a")])
    data = runs.encode(fold)
    assert runs.decode(data) == fold
    assert runs.encode(runs.decode(data)) == data


def test_wrong_run_refused() -> None:
    fold, _ = fold_all([PLANNED])
    with pytest.raises(ValueError, match="applied to run"):
        runs.apply(fold, cmd("x", run_id="other"))


@settings(max_examples=150, deadline=None)
@given(st.permutations(range(9)), st.lists(st.integers(0, 8), max_size=6))
def test_any_order_with_duplicates_converges(order: list[int], dups: list[int]) -> None:
    events: list[RunInput] = [cmd("a"), cmd("b"), PLANNED, started("a"), started("b"), done("a"), failed("b")]
    events += [cmd("c"), done("c")]
    planned3 = PLANNED.model_copy(update={"job_ids": ["a", "b", "c"]})
    events[2] = planned3
    reference, _ = fold_all(events)
    shuffled = [events[i] for i in order] + [events[i] for i in dups]
    fold, states = fold_all(shuffled)
    assert (fold.state, fold.jobs, fold.summary) == (reference.state, reference.jobs, reference.summary)
    assert states[-1] == "completed"
    assert states.count("completed") == 1
