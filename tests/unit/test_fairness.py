from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from schemas.messages import JobCommand, JobInputs, PriorityClass
from streams.fairness import Caps, QueueState, RunningState, admit, pick_next

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def job(job_id: str, priority: PriorityClass = "background", tenant: str = "t1") -> JobCommand:
    return JobCommand(
        schema="scheduler.job-command@1",
        job_id=job_id,
        run_id="r",
        tenant=tenant,
        image_digest=f"sha256:{job_id}",
        kind="reevaluate",
        priority=priority,
        window_start=T0,
        window_end=T0,
        deadline=T0 + timedelta(days=1),
        reasons=[],
        inputs=JobInputs(),
    )


def test_emergency_jumps_5000_background() -> None:
    q, running, caps = QueueState(), RunningState(), Caps()
    for i in range(5000):
        q.enqueue(job(f"bg-{i}"))
    for i in range(10):
        q.enqueue(job(f"em-{i}", "emergency"))
    picked = pick_next(q, running, caps)
    assert picked is not None
    assert picked.job_id == "em-0"
    assert len(q) == 5010  # pick_next only looks
    started = [admit(q, running, caps) for _ in range(10)]
    assert [j.job_id for j in started if j] == [f"em-{i}" for i in range(10)]


def test_background_cannot_take_reserved_slots() -> None:
    caps = Caps(
        total=8,
        per_class={"emergency": 8, "high": 8, "normal": 8, "background": 8},
        reserved={"emergency": 2, "high": 1, "normal": 0, "background": 0},
        per_tenant={"emergency": 8, "high": 8, "normal": 8, "background": 8},
    )
    q, running = QueueState(), RunningState()
    for i in range(100):
        q.enqueue(job(f"bg-{i}"))
    while admit(q, running, caps):
        pass
    assert running.by_class["background"] == 5  # 8 - (2 + 1) reserved for higher classes
    q.enqueue(job("hi", "high"))
    q.enqueue(job("em1", "emergency"))
    q.enqueue(job("em2", "emergency"))
    q.enqueue(job("em3", "emergency"))
    # Higher classes may use lower classes' reservations: em3 takes the slot held for "high".
    started = [admit(q, running, caps) for _ in range(3)]
    assert [j.job_id for j in started if j] == ["em1", "em2", "em3"]
    assert pick_next(q, running, caps) is None  # every slot busy
    running.finish("bg-0")
    nxt = admit(q, running, caps)
    assert nxt is not None
    assert nxt.job_id == "hi"  # first in line once anything finishes, ahead of 95 queued background jobs


def test_class_cap() -> None:
    caps = Caps(
        total=10,
        per_class={"emergency": 10, "high": 10, "normal": 10, "background": 2},
        reserved={"emergency": 0, "high": 0, "normal": 0, "background": 0},
        per_tenant={"emergency": 10, "high": 10, "normal": 10, "background": 10},
    )
    q, running = QueueState(), RunningState()
    for i in range(5):
        q.enqueue(job(f"bg-{i}"))
    q.enqueue(job("n1", "normal"))
    order = []
    while (j := admit(q, running, caps)) is not None:
        order.append(j.job_id)
    assert order == ["n1", "bg-0", "bg-1"]


def test_fifo_per_tenant_and_round_robin_between_tenants() -> None:
    caps = Caps(
        total=100,
        per_class={"emergency": 100, "high": 100, "normal": 100, "background": 100},
        reserved={"emergency": 0, "high": 0, "normal": 0, "background": 0},
        per_tenant={"emergency": 100, "high": 100, "normal": 100, "background": 100},
    )
    q, running = QueueState(), RunningState()
    for i in range(4):
        q.enqueue(job(f"a{i}", "normal", "A"))
    q.enqueue(job("b0", "normal", "B"))
    q.enqueue(job("b1", "normal", "B"))
    q.enqueue(job("c0", "normal", "C"))
    order = []
    while (j := admit(q, running, caps)) is not None:
        order.append(j.job_id)
    assert order == ["a0", "b0", "c0", "a1", "b1", "a2", "a3"]


def test_tenant_cap_lets_other_tenants_through() -> None:
    q, running, caps = QueueState(), RunningState(), Caps()
    for i in range(50):
        q.enqueue(job(f"big-{i}", "normal", "big"))
    q.enqueue(job("small-0", "normal", "small"))
    order = []
    while (j := admit(q, running, caps)) is not None:
        order.append(j.job_id)
    assert running.by_tenant[("normal", "big")] == caps.per_tenant["normal"]
    assert "small-0" in order


def test_enqueue_is_idempotent_and_remove() -> None:
    q = QueueState()
    assert q.enqueue(job("x"))
    assert not q.enqueue(job("x"))
    assert len(q) == 1
    assert q.remove("x") == job("x")
    assert q.remove("x") is None
    assert len(q) == 0
    assert pick_next(q, RunningState(), Caps()) is None


def test_running_state_finish_is_idempotent() -> None:
    running = RunningState()
    running.start(job("x"))
    running.start(job("x"))
    assert len(running) == 1
    running.finish("x")
    running.finish("x")
    assert len(running) == 0
    assert running.by_class["background"] == 0


def test_invalid_caps() -> None:
    with pytest.raises(ValueError, match="reservations"):
        Caps(total=2, reserved={"emergency": 3})
