"""streams.run_gate: a run's parallelism and rate limits, released in event time (docs/schedules.md, "Limits").

The simulation drives a gate the way the run stage does: the plan opens it, ticks move event time, results
free slots, commands may arrive after the plan, and the gate may be decoded from its table value at any
point (a restart). Whatever the sequence: never more than N in flight, never more than R + R * whole seconds
released, every job released exactly once in the end, and the same sequence releases the same jobs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.messages import JobStatus, RunLimits
from streams import run_gate
from streams.run_gate import Gate, drop, in_flight, open_gate, refill, step
from streams.schedules import on_command, run_limits

T0 = datetime(2026, 3, 1, 2, 0, tzinfo=UTC)


def ids(n: int) -> list[str]:
    return [f"job-{i:03d}" for i in range(n)]


@dataclass
class Sim:
    gate: Gate
    planned: list[str]
    known: set[str]
    statuses: dict[str, JobStatus] = field(default_factory=dict)
    now: datetime = T0
    released: list[tuple[datetime, str]] = field(default_factory=list)

    def flying(self) -> list[str]:
        return sorted(
            j for _, j in self.released if self.statuses.get(j) not in ("completed", "failed", "skipped")
        )

    def step(self, now: datetime | None) -> None:
        if now is not None:
            self.now = max(self.now, now)
        count = in_flight(self.planned, self.statuses, self.gate)
        assert count == len(self.flying())
        self.gate, out = step(self.gate, now, count, self.known)
        for job_id in out:
            self.statuses[job_id] = "queued"
            self.released.append((self.now, job_id))
        self.check()

    def check(self) -> None:
        limits = self.gate.limits
        if limits.parallelism is not None:
            assert len(self.flying()) <= limits.parallelism
        if limits.rate_per_second is not None:
            seconds = int((self.now - T0).total_seconds())
            rate = limits.rate_per_second
            assert len(self.released) <= rate + rate * seconds
        assert len({j for _, j in self.released}) == len(self.released)  # each released once


limits_strategy = st.builds(
    RunLimits,
    parallelism=st.one_of(st.none(), st.integers(1, 5)),
    rate_per_second=st.one_of(st.none(), st.integers(1, 5)),
).filter(run_gate.limited)

action = st.one_of(
    st.tuples(st.just("tick"), st.integers(0, 2500)),  # milliseconds of event time
    st.tuples(st.just("finish"), st.integers(0, 10)),
    st.tuples(st.just("command"), st.integers(0, 40)),
    st.tuples(st.just("restart"), st.just(0)),
)


def simulate(limits: RunLimits, n: int, missing: int, actions: list[tuple[str, int]]) -> Sim:
    planned = ids(n)
    known = set(planned[missing:])  # some commands arrive after the plan
    sim = Sim(open_gate("run-x", limits, planned, T0), planned, known)
    sim.step(T0)
    for kind, value in actions:
        if kind == "tick":
            sim.step(sim.now + timedelta(milliseconds=value))
        elif kind == "finish":
            flying = sim.flying()
            if flying:
                sim.statuses[flying[value % len(flying)]] = "completed"
            sim.step(None)
        elif kind == "command":
            sim.known.add(planned[value % n])
            sim.step(None)
        else:  # a restart: the gate comes back from its table value
            sim.gate = run_gate.decode(run_gate.encode(sim.gate))
    return sim


@settings(max_examples=300)
@given(limits_strategy, st.integers(1, 30), st.integers(0, 5), st.lists(action, max_size=60))
def test_limits_hold_and_every_job_is_released_once(
    limits: RunLimits, n: int, missing: int, actions: list[tuple[str, int]]
) -> None:
    sim = simulate(limits, n, min(missing, n), actions)
    sim.known = set(sim.planned)  # every command arrives eventually
    for _ in range(4 * n + 4):  # drain: time passes and jobs finish
        if not sim.gate.held:
            break
        for job_id in sim.flying():
            sim.statuses[job_id] = "completed"
        sim.step(sim.now + timedelta(seconds=1))
    assert not sim.gate.held
    assert sorted(j for _, j in sim.released) == sim.planned


@settings(max_examples=100)
@given(limits_strategy, st.integers(1, 30), st.integers(0, 5), st.lists(action, max_size=60))
def test_the_same_inputs_release_the_same_jobs_at_the_same_points(
    limits: RunLimits, n: int, missing: int, actions: list[tuple[str, int]]
) -> None:
    first = simulate(limits, n, min(missing, n), actions)
    second = simulate(limits, n, min(missing, n), actions)
    assert first.released == second.released
    assert run_gate.encode(first.gate) == run_gate.encode(second.gate)


def test_rate_releases_one_second_worth_then_r_per_second_of_event_time() -> None:
    gate = open_gate("r", RunLimits(rate_per_second=3), ids(10), T0)
    gate, out = step(gate, T0, 0, set(ids(10)))
    assert out == ids(3)  # the burst: one second's worth
    gate, out = step(gate, T0 + timedelta(milliseconds=999), 0, set(ids(10)))
    assert out == []  # whole seconds only
    gate, out = step(gate, T0 + timedelta(seconds=5), 0, set(ids(10)))
    assert out == ids(10)[3:6]  # the bucket holds one second's worth, however long the gap
    gate, out = step(gate, T0 + timedelta(seconds=4), 0, set(ids(10)))
    assert out == []  # an earlier tick (another worker's clock) neither refills nor rewinds
    assert gate.clock == T0 + timedelta(seconds=5)


def test_parallelism_releases_as_jobs_finish() -> None:
    planned = ids(4)
    gate = open_gate("p", RunLimits(parallelism=2), planned, T0)
    gate, out = step(gate, T0, 0, set(planned))
    assert out == planned[:2]
    statuses: dict[str, JobStatus] = {j: "queued" for j in planned}
    statuses[planned[0]] = "running"
    assert in_flight(planned, statuses, gate) == 2
    gate, out = step(gate, None, in_flight(planned, statuses, gate), set(planned))
    assert out == []
    statuses[planned[0]] = "failed"  # a terminal job frees its slot, whatever its outcome
    gate, out = step(gate, None, in_flight(planned, statuses, gate), set(planned))
    assert out == [planned[2]]


def test_a_job_whose_command_is_late_is_passed_over_until_it_arrives() -> None:
    planned = ids(3)
    gate = open_gate("c", RunLimits(parallelism=5), planned, T0)
    gate, out = step(gate, T0, 0, {planned[1]})
    assert out == [planned[1]]
    gate, out = step(gate, None, 1, set(planned))
    assert out == [planned[0], planned[2]]


def test_drop_returns_the_held_jobs_and_releases_nothing_more() -> None:
    gate = open_gate("d", RunLimits(parallelism=1), ids(3), T0)
    gate, out = step(gate, T0, 0, set(ids(3)))
    assert out == ids(3)[:1]
    gate, dropped = drop(gate)
    assert dropped == ids(3)[1:]
    assert step(gate, T0 + timedelta(seconds=9), 0, set(ids(3)))[1] == []


def test_refill_needs_aware_times() -> None:
    gate = open_gate("z", RunLimits(rate_per_second=1), ids(1), T0)
    with pytest.raises(ValueError, match="naive"):
        refill(gate, datetime(2026, 3, 1))


def test_a_schedule_with_limits_plans_gated_runs_and_one_without_does_not() -> None:
    from schemas.messages import ScheduleCommand, ScheduleSpec
    from streams.tenants import TenantCatalog

    spec = ScheduleSpec.model_validate(
        {"cron": "0 3 * * *", "timezone": "UTC", "limits": {"parallelism": 2, "rate_per_second": 5}}
    )
    assert run_limits(spec) == RunLimits(parallelism=2, rate_per_second=5)
    assert run_limits(ScheduleSpec.model_validate({"cron": "0 3 * * *", "limits": {"max_jobs": 3}})) is None
    created = on_command(
        None,
        ScheduleCommand(tenant="t1", schedule_id="s", action="create", spec=spec, at=T0),
        None,
    ).state
    assert created is not None
    run = on_command(
        created, ScheduleCommand(tenant="t1", schedule_id="s", action="run", at=T0), TenantCatalog()
    )
    assert [r.limits for r in run.runs] == [RunLimits(parallelism=2, rate_per_second=5)]
