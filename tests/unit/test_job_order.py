"""One image's live jobs run one at a time, earliest first (streams.job_queue's rule): whatever order the
runner is offered them in (a stream, a recovered table, a rebalance), only the first of each image is
admissible, and forgetting it (its result folded) admits the next. Simulations never wait."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from agents.job_stage import Runner
from schemas.messages import JobCommand, JobInputs, PolicyRules, SimulationInputs
from streams.fairness import Caps, admit
from streams.job_queue import Entry, first_of_image, job_order

T0 = datetime(2026, 1, 5, 12, tzinfo=UTC)


def job(n: int, image: str, minute: int, simulation: bool = False) -> JobCommand:
    return JobCommand(
        schema="scheduler.job-command@1",
        job_id=f"{'sim-' if simulation else ''}j{n:03d}",
        run_id="sim-r" if simulation else "r",
        tenant="acme",
        image_digest=f"sha256:{image}",
        kind="reevaluate",
        priority="normal",
        window_start=T0 + timedelta(minutes=minute),
        window_end=T0 + timedelta(minutes=minute + 1),
        deadline=T0 + timedelta(days=1),
        reasons=[],
        inputs=JobInputs(
            simulation=SimulationInputs(simulation_id="s", rules=PolicyRules()) if simulation else None
        ),
    )


jobs_st = st.lists(st.tuples(st.sampled_from("abc"), st.integers(0, 5)), min_size=1, max_size=12).map(
    lambda specs: [job(n, image, minute) for n, (image, minute) in enumerate(specs)]
)


def runner() -> Runner:
    none: Any = None
    return Runner(none, none, Caps(), none)


def admissible(r: Runner) -> set[str]:
    return set(r.queue.queued_ids)


def firsts(jobs: list[JobCommand]) -> set[str]:
    return {
        min((j for j in jobs if j.image_digest == i), key=job_order).job_id
        for i in {j.image_digest for j in jobs}
    }


def offered_in_any_order(jobs: list[JobCommand], rnd: Any) -> Runner:
    r = runner()
    for j in rnd.sample(jobs, len(jobs)):
        r.offer(Entry(j))
    return r


@given(jobs_st, st.randoms(use_true_random=False))
def test_only_each_images_first_job_is_admissible_in_any_offer_order(
    jobs: list[JobCommand], rnd: Any
) -> None:
    r = offered_in_any_order(jobs, rnd)
    assert admissible(r) == firsts(jobs)
    assert {j.job_id for j in jobs if first_of_image(j, jobs)} == firsts(jobs)


@given(jobs_st, st.randoms(use_true_random=False))
def test_forgetting_the_first_admits_the_next_until_all_ran_in_order(
    jobs: list[JobCommand], rnd: Any
) -> None:
    r = offered_in_any_order(jobs, rnd)
    ran: list[JobCommand] = []
    while r.entries:
        ready = sorted(admissible(r))
        assert ready, "jobs left, none admissible"
        done = r.entries[rnd.choice(ready)].job
        ran.append(done)
        r.forget(done.job_id)
    for image in {j.image_digest for j in jobs}:
        mine = [j for j in ran if j.image_digest == image]
        assert mine == sorted(mine, key=job_order)
    assert not r.by_image


def test_a_simulation_neither_waits_nor_holds_a_live_job() -> None:
    r = runner()
    sim = job(0, "a", 0, simulation=True)
    live = job(1, "a", 3)
    r.offer(Entry(sim))
    r.offer(Entry(live))
    assert admissible(r) == {sim.job_id, live.job_id}


def test_a_rebalance_drops_every_job_not_running() -> None:
    r = runner()
    a, b = job(0, "a", 0), job(1, "b", 0)
    r.offer(Entry(a))
    r.offer(Entry(b))
    r.queue.remove(a.job_id)
    r.running.start(a)  # what admit() records
    r.revoke()
    assert set(r.entries) == {a.job_id}
    assert r.by_image == {("acme", a.image_digest): {a.job_id}}
    assert admissible(r) == set()


def test_a_recovered_job_holds_its_image_back_until_offered() -> None:
    r = runner()
    earlier, later = job(0, "a", 0), job(1, "a", 2)
    r.offer(Entry(later))
    assert admissible(r) == {later.job_id}
    r.know(Entry(earlier))  # the recovered table: known at once, not run before the reconcile timer
    assert admissible(r) == set()
    r.offer(Entry(earlier))
    assert admissible(r) == {earlier.job_id}
    r.forget(earlier.job_id)
    assert admissible(r) == {later.job_id}


def test_a_started_job_holds_back_an_earlier_one_that_arrived_after_it() -> None:
    r = runner()
    later, earlier = job(1, "a", 3), job(0, "a", 0)
    r.offer(Entry(later))
    started = admit(r.queue, r.running, r.caps)
    assert started == later
    r.started.add(later.job_id)  # what the run loop records with each admission
    r.offer(Entry(earlier))  # e.g. a run's retry re-issuing an older window's job
    assert admissible(r) == set()
    r.running.finish(later.job_id)
    r.forget(later.job_id)
    assert admissible(r) == {earlier.job_id}
