"""Queued simulations: the plan of a request, the per-image comparison a simulation job attaches, the fold
that emits the completed simulation once whatever order its inputs arrive in, the queue's simulation lane
(simulations never change which live job starts), the read model, and the API (request, show, list,
cancel, callback)."""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI, Request
from hypothesis import given, settings
from hypothesis import strategies as st

from controlplane.backends import MemoryPublisher
from controlplane.testing import ServerThread
from projections.fold import RUNS, SIMULATIONS, Position, fold
from projections.simulation import completed_of
from projections.store import MemoryStore
from schemas.canonical import dumps
from schemas.messages import (
    FindingTrace,
    JobCommand,
    JobInputs,
    JobResult,
    PolicyRules,
    PolicyTrace,
    RangeTrace,
    Reason,
    RunCancelRequested,
    RunEvent,
    Selector,
    SimulationCompleted,
    SimulationRequest,
)
from streams.fairness import Caps, QueueState, RunningState, admit
from streams.findings import completed_result, failed_result, skipped_result
from streams.simulation import (
    SimulationFold,
    apply,
    image_result,
    is_simulation,
    is_simulation_run,
    plan,
    request,
)
from tests.unit.test_simulation import STRICT, T0, digest, estate, finding

RULES = STRICT


def req(*ns: int, nonce: str = "n1") -> SimulationRequest:
    return request("acme", Selector(all=True), RULES, [digest(n) for n in ns], at=T0, nonce=nonce)


def trace(fid: str, package: str, effect: str) -> FindingTrace:
    return FindingTrace(
        id=fid,
        modified=T0,
        package=package,
        purl=f"pkg:{package}@1.0.0",
        severity="medium",
        outcome="reported",
        range=RangeTrace(package=package, ecosystem="npm", kind="versions"),
        policy=PolicyTrace(rule="severity_threshold", effect=effect, detail=""),  # type: ignore[arg-type]
    )


def live_job(n: int) -> JobCommand:
    return JobCommand(
        job_id=f"live-{n}",
        run_id="run-live",
        tenant="acme",
        image_digest=digest(n),
        kind="reevaluate",
        priority="normal",
        window_start=T0,
        window_end=T0,
        deadline=T0 + timedelta(hours=1),
        reasons=[Reason(source="advisory", id="A")],
        inputs=JobInputs(),
    )


# ---------------------------------------------------------------- plan


def test_a_request_plans_one_background_simulation_job_per_image_deterministically() -> None:
    r = req(2, 1, 2)
    assert r.images == [digest(1), digest(2)]
    assert is_simulation_run(r.simulation_id)
    planned, jobs = plan(r)
    assert planned.run_id == r.simulation_id
    assert planned.job_ids == sorted(j.job_id for j in jobs)
    assert all(is_simulation(j) and j.priority == "background" and j.run_id == r.simulation_id for j in jobs)
    assert all(j.inputs.simulation is not None and j.inputs.simulation.rules == RULES for j in jobs)
    assert [dumps(j) for j in plan(req(1, 2))[1]] == [dumps(j) for j in jobs]  # same request, same bytes
    assert req(1, nonce="other").simulation_id != r.simulation_id
    # a live job's bytes do not mention simulations at all (ids and signatures are what they were)
    assert b"simulation" not in dumps(live_job(1))


# ---------------------------------------------------------------- per image


def _result(job: JobCommand, findings: list, traces: list, verdict: str = "pass") -> JobResult:  # type: ignore[type-arg]
    return completed_result(
        job,
        findings,
        verdict,  # type: ignore[arg-type]
        previous_findings=None,
        previous_verdict="unknown",
        attempts=[],
        finished_at=T0,
        traces=traces,
    )


def test_a_simulation_result_compares_with_the_images_live_result() -> None:
    (job,) = plan(req(1))[1]
    medium = finding("GHSA-m", "medium", package="npm/m")
    live = _result(live_job(1), [medium], [trace("GHSA-m", "npm/m", "pass")], "pass")
    simulated = _result(job, [medium], [trace("GHSA-m", "npm/m", "fail")], "fail")
    out = image_result(simulated, live)
    assert out.simulation is not None
    assert (out.simulation.live_verdict, out.simulation.simulated_verdict) == ("pass", "fail")
    assert out.simulation.newly_failing == ["GHSA-m npm/m"]
    assert out.simulation.job_status == "completed"
    failed = image_result(failed_result(job, attempts=[], finished_at=T0, error="boom"), live)
    assert failed.simulation is not None
    assert (failed.simulation.simulated_verdict, failed.simulation.job_status) == ("unknown", "failed")
    assert image_result(live, None) is live  # a live job's result is left alone
    assert b"simulation" not in dumps(live)


# ---------------------------------------------------------------- the fold


def _inputs(r: SimulationRequest, cancelled_after: int | None = None) -> list[object]:
    _, jobs = plan(r)
    events: list[object] = [r]
    for i, job in enumerate(jobs):
        if cancelled_after is not None and i >= cancelled_after:
            res = skipped_result(job, finished_at=T0)
        else:
            res = _result(job, [finding("GHSA-m", "medium")], [trace("GHSA-m", "npm/x", "fail")], "fail")
        events.append(image_result(res, None))
    state = "cancelled" if cancelled_after is not None else "completed"
    n = len(jobs)
    events.append(
        RunEvent(run_id=r.simulation_id, tenant="acme", state=state, at=T0, jobs_total=n, jobs_done=n)
    )
    return events


@settings(max_examples=60, deadline=None)
@given(st.randoms(use_true_random=False), st.integers(0, 4), st.booleans(), st.booleans())
def test_the_fold_emits_the_completed_simulation_once_in_any_order(
    rnd: object, size: int, cancel: bool, duplicate: bool
) -> None:
    r = req(*range(1, size + 1))
    events = _inputs(r, cancelled_after=size // 2 if cancel else None)
    reference: list[SimulationCompleted] = []
    state: SimulationFold | None = None
    for event in events:
        state, out = apply(state, event)  # type: ignore[arg-type]
        reference += out
    shuffled = list(events) + (list(events) if duplicate else [])
    rnd.shuffle(shuffled)  # type: ignore[attr-defined]
    emitted: list[SimulationCompleted] = []
    state = None
    for event in shuffled:
        state, out = apply(state, event)  # type: ignore[arg-type]
        emitted += out
    assert len(reference) == 1
    assert [dumps(e) for e in emitted] == [dumps(reference[0])]
    done = reference[0]
    assert done.mode == "queue"
    assert done.simulation_id == r.simulation_id
    assert done.state == ("cancelled" if cancel else "completed")
    assert [i.image_digest for i in done.images] == r.images
    assert done.totals.images == size
    assert done.totals.skipped == (size - size // 2 if cancel else 0)


def test_a_run_event_before_the_end_emits_nothing() -> None:
    r = req(1, 2)
    state, out = apply(None, r)
    running = RunEvent(
        run_id=r.simulation_id, tenant="acme", state="cancelled", at=T0, jobs_total=2, jobs_done=1
    )
    state, out2 = apply(state, running)  # cancelled but not settled: a job is still running
    assert out == []
    assert out2 == []
    assert state.run_state is None


# ---------------------------------------------------------------- the queue's simulation lane


def _live_admissions(ops: list[tuple[str, int]], sims: list[JobCommand], caps: Caps) -> list[str]:
    """Replay enqueue / admit-all / finish operations on live jobs, with ``sims`` queued first and every
    simulation admission interleaved; return the order live jobs were admitted in."""
    queue, running = QueueState(), RunningState()
    for job in sims:
        queue.enqueue(job)
    order: list[str] = []
    started: list[str] = []
    for op, n in ops:
        if op == "enqueue":
            queue.enqueue(live_job(n).model_copy(update={"job_id": f"live-{n}-{len(order)}"}))
        elif op == "finish" and started:
            running.finish(started.pop(n % len(started)))
        while (job := admit(queue, running, caps)) is not None:
            if not is_simulation(job):
                order.append(job.job_id)
                started.append(job.job_id)
    return order


@settings(max_examples=80, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from(["enqueue", "finish"]), st.integers(0, 20)), max_size=40),
    st.integers(0, 12),
    st.integers(1, 6),
)
def test_simulations_never_change_which_live_job_starts(
    ops: list[tuple[str, int]], sims: int, total: int
) -> None:
    caps = Caps(
        total=total,
        per_class={"emergency": total, "high": total, "normal": total, "background": total},
        reserved={"emergency": 0, "high": 0, "normal": 0, "background": 0},
        per_tenant={"emergency": total, "high": total, "normal": total, "background": total},
        simulation=2,
        simulation_per_tenant=2,
    )
    _, jobs = plan(req(*range(1, sims + 1)))
    assert _live_admissions(ops, jobs, caps) == _live_admissions(ops, [], caps)


def test_simulation_jobs_run_in_their_own_slots_beside_a_full_live_queue() -> None:
    two = {"emergency": 2, "high": 2, "normal": 2, "background": 2}
    none = {"emergency": 0, "high": 0, "normal": 0, "background": 0}
    caps = Caps(total=2, per_class=two, reserved=none, per_tenant=two, simulation=1, simulation_per_tenant=1)
    queue, running = QueueState(), RunningState()
    _, sims = plan(req(1, 2))
    for job in sims:
        queue.enqueue(job)
    for n in range(5):
        queue.enqueue(live_job(n).model_copy(update={"priority": "background"}))
    admitted = []
    while (job := admit(queue, running, caps)) is not None:
        admitted.append(job)
    # live background work takes its slots first; one simulation job runs beside it, never in its place
    assert [is_simulation(j) for j in admitted] == [False, False, True]
    assert running.live() == 2
    assert len(running) == 3
    assert queue.depth("simulation") == 1


# ---------------------------------------------------------------- read model and API


def test_the_read_model_shows_a_running_then_completed_simulation() -> None:
    store = MemoryStore()
    r = req(1, 2)
    store.apply_documents(fold(r, Position("simulation-requests", 0, 1)))
    doc = store.get(SIMULATIONS, r.simulation_id)
    assert doc is not None
    assert doc["state"] == "running"
    assert doc["image_count"] == 2
    assert completed_of(doc) is None
    state: SimulationFold | None = None
    done: list[SimulationCompleted] = []
    for event in _inputs(r):
        state, out = apply(state, event)  # type: ignore[arg-type]
        done += out
    store.apply_documents(fold(done[0], Position("simulations", 0, 7)))
    doc = store.get(SIMULATIONS, r.simulation_id)
    assert doc is not None
    assert doc["state"] == "completed"
    assert doc["requested_at"]
    assert completed_of(doc) == done[0]  # the callback's body is the signed predicate's bytes


@pytest.fixture
def queue_api(tmp_path: Path) -> Iterator[tuple[str, MemoryPublisher, MemoryStore]]:
    from agents.settings import Settings
    from controlplane.app import ApiDeps, create_app
    from controlplane.auth import token_hash
    from controlplane.backends import MemoryReadModels
    from controlplane.config import ApiConfig

    scopes = ["scheduler.runs.read", "scheduler.runs.write", "scheduler.runs.manage"]
    tokens = [{"token_sha256": token_hash("tok"), "tenant": "acme", "scopes": scopes}]
    path = tmp_path / "access.json"
    path.write_text(json.dumps({"tokens": tokens}))
    store, publisher = estate(), MemoryPublisher(partitions=2)
    deps = ApiDeps(publisher=publisher, read_models=MemoryReadModels(store), clock=lambda: T0)
    app = create_app(Settings(topic_prefix="u."), deps, ApiConfig(tokens_path=str(path)))
    with ServerThread(app) as server:
        yield server.url, publisher, store


AUTH = {"Authorization": "Bearer tok"}


def test_queue_route_requests_a_run_and_shows_lists_and_cancels_it(
    queue_api: tuple[str, MemoryPublisher, MemoryStore],
) -> None:
    url, publisher, store = queue_api
    before = copy.deepcopy(store.state)
    body = {"rules": {"severity_threshold": "medium"}, "selector": {"namespaces": ["prod"]}}
    headers = {**AUTH, "Idempotency-Key": "k-1"}
    resp = httpx.post(url + "/api/v1/policies/simulations", json=body, headers=headers)
    assert resp.status_code == 202, resp.text
    out = resp.json()
    assert out["mode"] == "queue"
    assert out["images"] == 3
    assert out["run_id"] == out["simulation_id"]
    [(topic, _p, offset, key, value)] = publisher.records
    assert (topic, key) == ("u.simulation-requests", out["simulation_id"].encode())
    r = SimulationRequest.model_validate_json(value or b"")
    assert r.images == [digest(1), digest(2), digest(5)]  # acme's prod images, evaluated or not
    assert store.state == before  # nothing read-model-side is written by the API
    again = httpx.post(url + "/api/v1/policies/simulations", json=body, headers=headers).json()
    assert again["simulation_id"] == out["simulation_id"]  # same idempotency key: same simulation
    assert len(publisher.records) == 1  # answered from the first request: nothing produced again
    other = httpx.post(url + "/api/v1/policies/simulations", json=body, headers=AUTH).json()
    assert other["simulation_id"] != out["simulation_id"]  # a new request without a key: a new one

    sid = out["simulation_id"]
    assert httpx.get(url + f"/api/v1/policies/simulations/{sid}", headers=AUTH).status_code == 404
    store.apply_documents(fold(r, Position("u.simulation-requests", 0, offset)))
    run = RunEvent(run_id=sid, tenant="acme", state="running", at=T0, jobs_total=3, jobs_done=1)
    store.apply_documents(fold(run, Position("u.run-events", 0, 1)))
    shown = httpx.get(url + f"/api/v1/policies/simulations/{sid}", headers=AUTH).json()
    assert shown["state"] == "running"
    assert shown["run"]["jobs_done"] == 1
    listed = httpx.get(url + "/api/v1/policies/simulations", headers=AUTH).json()
    assert [i["simulation_id"] for i in listed["items"]] == [sid]
    cancel = httpx.post(url + f"/api/v1/policies/simulations/{sid}/cancel", headers=AUTH)
    assert cancel.status_code == 202, cancel.text
    topic, _p, _o, key, value = publisher.records[-1]
    assert (topic, key) == ("u.run-inputs", sid.encode())
    assert RunCancelRequested.model_validate_json(value or b"").run_id == sid
    assert httpx.post(url + "/api/v1/policies/simulations/sim-nope/cancel", headers=AUTH).status_code == 404
    assert store.get(RUNS, sid) is not None


def test_queue_callback_fires_when_the_simulation_is_terminal(
    queue_api: tuple[str, MemoryPublisher, MemoryStore],
) -> None:
    url, publisher, store = queue_api
    received: list[bytes] = []
    arrived = threading.Event()
    receiver = FastAPI()

    @receiver.post("/hook")
    async def hook(request: Request) -> dict[str, bool]:
        received.append(await request.body())
        arrived.set()
        return {"ok": True}

    with ServerThread(receiver) as hook_server:
        body = {
            "rules": {"severity_threshold": "medium"},
            "callback": {"url": hook_server.url + "/hook", "secret": "s3cret-for-callbacks"},
        }
        resp = httpx.post(url + "/api/v1/policies/simulations", json=body, headers=AUTH)
        assert resp.status_code == 202, resp.text
        [(_t, _p, _o, _k, value)] = publisher.records
        r = SimulationRequest.model_validate_json(value or b"")
        assert not arrived.wait(1.5)  # not terminal yet: nothing sent
        state: SimulationFold | None = None
        done: list[SimulationCompleted] = []
        for event in _inputs(r):
            state, out = apply(state, event)  # type: ignore[arg-type]
            done += out
        store.apply_documents(fold(done[0], Position("u.simulations", 0, 1)))
        assert arrived.wait(60)
    assert received[0] == dumps(done[0].model_dump(mode="json", by_alias=True))
    assert PolicyRules.model_validate(json.loads(received[0])["rules"]) == RULES


def test_a_simulation_result_updates_its_job_document_and_no_image() -> None:
    (job,) = plan(req(1))[1]
    result = image_result(
        _result(job, [finding("GHSA-m", "medium")], [trace("GHSA-m", "npm/x", "fail")], "fail"), None
    )
    store = MemoryStore()
    store.apply_documents(fold(job, Position("jobs", 0, 1)))
    store.apply_documents(fold(result, Position("simulation-results", 0, 1)))
    assert store.dump("images") == []
    assert store.dump("windows") == []  # no impact window planned it
    doc = store.get("jobs", job.job_id)
    assert doc is not None
    assert doc["status"] == "completed"
    assert doc["simulation"]["simulated_verdict"] == "fail"
