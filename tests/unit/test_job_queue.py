"""The job queue's table folds: enqueue once, the longest retry history wins in any order, done absorbs;
caps scale with concurrency and always leave room for every class."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from schemas.messages import Attempt, JobAttempt, JobCommand, JobInputs
from streams.fairness import CLASSES_HIGH_FIRST
from streams.job_queue import DONE, Entry, enqueue, longer_history, queued, record_attempt, scaled_caps

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def job(job_id: str = "j1") -> JobCommand:
    return JobCommand(
        schema="scheduler.job-command@1",
        job_id=job_id,
        run_id="r",
        tenant="t1",
        image_digest=f"sha256:{job_id}",
        kind="reevaluate",
        priority="normal",
        window_start=T0,
        window_end=T0,
        deadline=T0 + timedelta(days=1),
        reasons=[],
        inputs=JobInputs(),
    )


def attempts(n: int) -> list[Attempt]:
    return [Attempt(attempt=i + 1, at=T0 + timedelta(seconds=i), outcome="transient") for i in range(n)]


def report(n: int) -> JobAttempt:
    return JobAttempt(
        job_id="j1",
        tenant="t1",
        image_digest="sha256:j1",
        attempts=attempts(n),
        next_at=T0 + timedelta(seconds=10 * n),
        due_at=T0 + timedelta(seconds=20 * n),
    )


def test_entry_round_trips() -> None:
    entry = Entry(job(), attempts(2), T0 + timedelta(seconds=5), T0 + timedelta(seconds=9))
    assert Entry.decode(entry.encode()) == entry
    assert Entry.decode(Entry(job()).encode()) == Entry(job())


def test_enqueue_keeps_what_is_there() -> None:
    first = enqueue(None, job())
    assert queued(first) == Entry(job())
    assert enqueue(first, job("other")) == first
    assert enqueue(DONE, job()) == DONE
    assert queued(DONE) is None
    assert queued(None) is None


@given(st.lists(st.integers(min_value=1, max_value=6), max_size=12))
def test_longest_history_wins_in_any_order(lengths: list[int]) -> None:
    state: bytes | None = enqueue(None, job())
    for n in lengths:
        state = record_attempt(state, report(n))
    entry = queued(state)
    assert entry is not None
    longest = max(lengths, default=0)
    assert len(entry.attempts) == longest
    if longest:
        assert entry.next_at == report(longest).next_at
        assert entry.due_at == report(longest).due_at


def test_a_done_job_ignores_attempt_reports() -> None:
    assert record_attempt(DONE, report(3)) == DONE
    assert record_attempt(None, report(3)) is None


def test_longer_history_only_when_the_table_knows_more() -> None:
    state = record_attempt(enqueue(None, job()), report(2))
    assert longer_history(state, Entry(job(), attempts(1))) == queued(state)
    assert longer_history(state, Entry(job(), attempts(2))) is None
    assert longer_history(state, None) is None
    assert longer_history(DONE, Entry(job())) is None


@given(st.integers(min_value=-3, max_value=512))
def test_scaled_caps_are_valid_and_leave_every_class_a_slot(total: int) -> None:
    caps = scaled_caps(total)  # Caps validates its reservations itself
    assert caps.total == max(1, total)
    for cls in CLASSES_HIGH_FIRST:
        assert caps.per_class[cls] >= 1
        assert caps.per_tenant[cls] == caps.total
    assert caps.per_class["emergency"] == caps.total
    if caps.total > 1:
        assert caps.reserved["emergency"] >= 1
    assert caps.per_class["normal"] == max(1, caps.total - caps.reserved["emergency"])


def test_default_concurrency_caps() -> None:
    caps = scaled_caps(8)
    assert dict(caps.reserved) == {"emergency": 2, "high": 1, "normal": 0, "background": 0}
    assert dict(caps.per_class) == {"emergency": 8, "high": 8, "normal": 6, "background": 5}
