from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.messages import Attempt, JobCommand, JobInputs, PriorityClass
from streams import retry as r

T0 = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
POLICY = r.RetryPolicy(base_delay_s=10, factor=2, max_delay_s=600, max_attempts=5)


def job(
    job_id: str = "job-1", priority: PriorityClass = "normal", deadline: datetime | None = None
) -> JobCommand:
    return JobCommand(
        schema="scheduler.job-command@1",
        job_id=job_id,
        run_id="run-1",
        tenant="t1",
        image_digest="sha256:aa",
        kind="reevaluate",
        priority=priority,
        window_start=T0,
        window_end=T0,
        deadline=deadline or T0 + timedelta(hours=4),
        reasons=[],
        inputs=JobInputs(),
    )


def failed(n: int, at: datetime = T0, outcome: str = "transient", retry_after: int | None = None) -> Attempt:
    return Attempt.model_validate(
        {"attempt": n, "at": at, "outcome": outcome, "error": "boom", "retry_after_s": retry_after}
    )


def test_first_retry_uses_backoff_within_jitter_bounds() -> None:
    d = r.next_attempt(job(), [failed(1)], T0, POLICY)
    assert isinstance(d, r.Retry)
    assert d.attempt == 2
    assert 5 <= d.delay_s <= 10
    assert d.at == T0 + timedelta(seconds=d.delay_s)


def test_permanent_error_is_never_retried() -> None:
    d = r.next_attempt(job(), [failed(1, outcome="permanent")], T0, POLICY)
    assert d == r.GiveUp("permanent-error", "boom")


def test_budget_exhausted() -> None:
    attempts = [failed(i) for i in range(1, 6)]
    d = r.next_attempt(job(), attempts, T0, POLICY)
    assert isinstance(d, r.GiveUp)
    assert d.reason == "budget-exhausted"


def test_timeout_is_retried_like_a_transient_error() -> None:
    assert isinstance(r.next_attempt(job(), [failed(1, outcome="timeout")], T0, POLICY), r.Retry)


def test_retry_after_is_a_lower_bound() -> None:
    d = r.next_attempt(job(), [failed(1, retry_after=120)], T0, POLICY)
    assert isinstance(d, r.Retry)
    assert d.delay_s == 120
    small = r.next_attempt(job(), [failed(1, retry_after=1)], T0, POLICY)
    assert isinstance(small, r.Retry)
    assert small.delay_s >= 5


def test_deadline_unreachable_when_attempt_cannot_finish() -> None:
    # normal class timeout is 600 s; 5 minutes left is not enough for even an immediate attempt.
    j = job(deadline=T0 + timedelta(minutes=5))
    d = r.next_attempt(j, [failed(1)], T0, POLICY)
    assert isinstance(d, r.GiveUp)
    assert d.reason == "deadline-unreachable"
    first = r.next_attempt(j, [], T0, POLICY)
    assert isinstance(first, r.GiveUp)
    assert first.reason == "deadline-unreachable"


def test_retry_after_beyond_deadline_gives_up() -> None:
    j = job(priority="emergency", deadline=T0 + timedelta(minutes=15))
    d = r.next_attempt(j, [failed(1, retry_after=3600)], T0, POLICY)
    assert isinstance(d, r.GiveUp)
    assert d.reason == "deadline-unreachable"


def test_no_attempt_yet_means_attempt_now() -> None:
    assert r.next_attempt(job(), [], T0, POLICY) == r.Retry(at=T0, attempt=1, delay_s=0)


def test_ok_attempt_is_a_caller_error() -> None:
    with pytest.raises(ValueError, match="nothing to retry"):
        r.next_attempt(job(), [failed(1, outcome="ok")], T0, POLICY)


def test_naive_now_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        r.next_attempt(job(), [failed(1)], datetime(2026, 1, 1), POLICY)


def test_jitter_differs_between_jobs() -> None:
    delays = {r.backoff_delay_s(f"job-{i}", 3, POLICY) for i in range(50)}
    assert len(delays) > 5


# ---------------------------------------------------------------- properties

job_ids = st.text(min_size=1, max_size=40)
PRIOS: list[PriorityClass] = ["emergency", "high", "normal", "background"]
priorities = st.sampled_from(PRIOS)
policies = st.builds(
    r.RetryPolicy,
    base_delay_s=st.integers(1, 60),
    factor=st.integers(1, 4),
    max_delay_s=st.integers(60, 3600),
    max_attempts=st.integers(1, 10),
    jitter_ratio=st.floats(0.0, 1.0),
)


@st.composite
def histories(draw: st.DrawFn) -> tuple[JobCommand, list[Attempt], datetime]:
    prio: PriorityClass = draw(priorities)
    deadline = T0 + timedelta(seconds=draw(st.integers(0, 48 * 3600)))
    j = job(draw(job_ids), prio, deadline)
    n = draw(st.integers(1, 12))
    outcomes = draw(st.lists(st.sampled_from(["transient", "timeout"]), min_size=n, max_size=n))
    hints = draw(st.lists(st.none() | st.integers(0, 7200), min_size=n, max_size=n))
    attempts = [failed(i + 1, T0, o, h) for i, (o, h) in enumerate(zip(outcomes, hints, strict=True))]
    now = T0 + timedelta(seconds=draw(st.integers(0, 24 * 3600)))
    return j, attempts, now


@settings(max_examples=300)
@given(histories(), policies)
def test_never_scheduled_past_deadline(
    h: tuple[JobCommand, list[Attempt], datetime], p: r.RetryPolicy
) -> None:
    j, attempts, now = h
    d = r.next_attempt(j, attempts, now, p)
    if isinstance(d, r.Retry):
        assert d.at + timedelta(seconds=p.timeout_for(j.priority)) <= j.deadline
        assert d.at >= now
        hint = attempts[-1].retry_after_s
        if hint is not None:
            assert d.delay_s >= hint


@settings(max_examples=200)
@given(histories(), policies)
def test_deterministic_for_a_job(h: tuple[JobCommand, list[Attempt], datetime], p: r.RetryPolicy) -> None:
    j, attempts, now = h
    assert r.next_attempt(j, attempts, now, p) == r.next_attempt(j.model_copy(), list(attempts), now, p)


@settings(max_examples=200)
@given(histories(), policies)
def test_budget_respected(h: tuple[JobCommand, list[Attempt], datetime], p: r.RetryPolicy) -> None:
    j, attempts, now = h
    d = r.next_attempt(j, attempts, now, p)
    if len(attempts) >= p.max_attempts:
        assert isinstance(d, r.GiveUp)
    if isinstance(d, r.Retry):
        assert d.attempt <= p.max_attempts


@settings(max_examples=200)
@given(job_ids, policies, st.integers(1, 30))
def test_delay_bounded_and_nominal_non_decreasing(jid: str, p: r.RetryPolicy, n: int) -> None:
    nominal = r.nominal_delay_s(n, p)
    assert r.nominal_delay_s(n + 1, p) >= nominal
    delay = r.backoff_delay_s(jid, n, p)
    assert 1 <= delay <= min(nominal, p.max_delay_s)
    assert delay >= int(nominal * (1 - p.jitter_ratio))


def test_mean_delay_non_decreasing_over_jobs() -> None:
    means = [sum(r.backoff_delay_s(f"j{i}", n, POLICY) for i in range(400)) / 400 for n in range(1, 12)]
    # Once the nominal delay hits the cap only sampling noise separates the means, hence the tolerance.
    tolerance = 0.05 * POLICY.max_delay_s
    assert all(b >= a - tolerance for a, b in itertools.pairwise(means))
    assert means[-1] > means[0]


# ---------------------------------------------------------------- pending-retries state


def test_pending_state_add_remove_due_and_roundtrip() -> None:
    state: dict[str, r.PendingRetry] = {}
    a = r.PendingRetry(job("a", "background"), (failed(1),), T0 + timedelta(seconds=30))
    b = r.PendingRetry(job("b", "emergency"), (failed(1),), T0 + timedelta(seconds=30))
    c = r.PendingRetry(job("c"), (failed(1), failed(2)), T0 + timedelta(seconds=90))
    for p in (a, b, c):
        state = r.add(state, p)
    assert r.due(state, T0) == []
    assert [p.job.job_id for p in r.due(state, T0 + timedelta(seconds=30))] == ["b", "a"]
    assert r.next_due_at(state) == T0 + timedelta(seconds=30)
    state2 = r.remove(state, "b")
    assert "b" in state  # pure: the input is untouched
    assert sorted(state2) == ["a", "c"]
    assert r.decode_pending(r.encode_pending(c)) == c
    assert r.decode_state(r.encode_state(state)) == state
    assert r.encode_state(state) == r.encode_state(dict(reversed(list(state.items()))))


def test_schedule_stores_retry_and_clears_on_give_up() -> None:
    state, d = r.schedule({}, job("x"), [failed(1)], T0, POLICY)
    assert isinstance(d, r.Retry)
    assert state["x"].due_at == d.at
    state, d2 = r.schedule(state, job("x"), [failed(1), failed(2, outcome="permanent")], T0, POLICY)
    assert isinstance(d2, r.GiveUp)
    assert state == {}
    breach = r.sla_breach(job("x"), [failed(1)], d2, T0)
    assert breach.reason.startswith("permanent-error")
