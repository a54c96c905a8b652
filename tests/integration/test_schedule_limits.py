"""A schedule's limits on a real worker: a manual run of twelve images with `parallelism: 2,
rate_per_second: 1` is released by the run stage's gate (streams/run_gate.py), never more than two of its jobs
in flight, and completes with every job run once; a gated run cancelled before it is planned releases nothing
and settles with every job skipped; a worker killed while a gate holds jobs back is replaced, and the gate,
recovered from its changelog, goes on releasing until the run completes.

In flight is read from the run's own partition of `run-inputs`, where the job stage's starts and results and
the gate's ticks are folded in order: a job is released only after the run stage folded enough results, so
at no point of that log are more than two of the run's jobs started and not finished. Twelve jobs at one per
second with a burst of one need at least eleven seconds of event time: ticks must be in that log too.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

import orjson

from cli.schedules import main as schedules_main
from schemas.canonical import dumps
from schemas.codec import encode
from schemas.messages import (
    Inventory,
    RunCancelRequested,
    ScheduleCommand,
    ScheduleLimits,
    ScheduleSpec,
    Selector,
)
from streams.schedules import schedule_run_id
from tests.integration.kit import produce
from tests.integration.pipeline_kit import Deployment, inventories

IMAGES = 12  # at one a second, the gate holds jobs back for 11 s of ticks
PARALLELISM = 2


def cli(pipe: Any, action: str, *args: str) -> int:
    infra = ["--tenant", "gate", "--bootstrap", pipe.bootstrap, "--topic-prefix", pipe.prefix]
    infra += ["--mongo-url", pipe.mongo_url, "--db", pipe.db]
    return schedules_main([action, *args, *infra])


def images() -> list[Inventory]:
    template = next(i for i in inventories() if i.tenant == "acme")
    return [
        template.model_copy(update={"tenant": "gate", "image_digest": "sha256:" + f"{n:02x}" * 32})
        for n in range(IMAGES)
    ]


async def _run_doc(pipe: Any, run_id: str, done: Any, what: str, timeout: float = 240.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    doc: dict[str, Any] = {}
    while time.monotonic() < deadline:
        pipe.alive()
        doc = pipe.mongo().runs.find_one({"_id": run_id}) or {}
        if done(doc):
            return doc
        await asyncio.sleep(1.0)
    logs = "\n".join(f"--- worker {n}: {w.log}\n{w.report()}" for n, w in enumerate(pipe.workers))
    raise AssertionError(f"{what}: run {run_id} is {doc}\n{logs}")


async def _plan(pipe: Any, run_id: str, timeout: float = 120.0) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pipe.alive()
        for record in await pipe.records("run-inputs", timeout=10.0):
            if record.key == run_id.encode():
                message = orjson.loads(record.value)
                if message["schema"] == "scheduler.run-planned@1":
                    return dict(message)
        await asyncio.sleep(0.5)
    raise AssertionError(f"run {run_id} was not planned")


async def _most_in_flight(pipe: Any, run_id: str) -> tuple[int, set[str], int]:
    """(most of the run's jobs started and not finished at any point of its log, finished ids, ticks)."""
    started: set[str] = set()
    finished: set[str] = set()
    most = ticks = 0
    for record in await pipe.records("run-inputs", timeout=10.0):
        if record.key == b"tick":
            ticks += 1
            continue
        if record.key != run_id.encode():
            continue
        message = orjson.loads(record.value)
        if message["schema"] == "scheduler.job-started@1":
            started.add(message["job_id"])
        elif message["schema"] == "scheduler.job-result@1":
            finished.add(message["job_id"])
        most = max(most, len(started - finished))
    return most, finished, ticks


async def _released(pipe: Any, run_id: str) -> list[str]:
    return [
        j["job_id"]
        for j in (orjson.loads(r.value) for r in await pipe.records("jobs", timeout=10.0))
        if j["run_id"] == run_id
    ]


async def _manual_run(pipe: Any, at: datetime) -> str:
    """A manual run of the schedule at ``at`` (produced directly, so its run id is known before)."""
    command = ScheduleCommand(action="run", tenant="gate", schedule_id="gated", at=at)
    await produce(pipe.bootstrap, f"{pipe.prefix}schedules", [(b"gate", encode(command))])
    return schedule_run_id("gate", "gated", at, "manual")


def _completed(doc: dict[str, Any]) -> bool:
    return doc.get("state") == "completed"


async def test_a_gated_run_keeps_its_limits_and_completes(deployment: Deployment) -> None:
    pipe = deployment()
    await pipe.start(workers=1)
    try:
        await pipe.publish(images())
        await pipe.settle(min_jobs=IMAGES)  # the first evaluations: the catalog holds every image
        spec = ScheduleSpec(
            name="gated",
            cron="0 0 1 1 *",  # fires only when asked
            selection=Selector(all=True),
            limits=ScheduleLimits(parallelism=PARALLELISM, rate_per_second=1),
        )
        spec_file = pipe.home / "gated.json"
        spec_file.write_bytes(dumps(spec))
        assert await asyncio.to_thread(cli, pipe, "create", "gated", "--spec", str(spec_file)) == 0

        # 1. A manual run: paced, and completed.
        run_id = await _manual_run(pipe, datetime.now(UTC).replace(microsecond=0))
        plan = await _plan(pipe, run_id)
        assert plan["limits"] == {"parallelism": PARALLELISM, "rate_per_second": 1}
        assert len(plan["job_ids"]) == IMAGES
        await _run_doc(pipe, run_id, _completed, "the gated run")
        most, finished, ticks = await _most_in_flight(pipe, run_id)
        assert most <= PARALLELISM
        assert finished == set(plan["job_ids"])
        assert ticks >= 1
        released = await _released(pipe, run_id)
        assert sorted(set(released)) == sorted(plan["job_ids"])
        print(f"gated run {run_id}: at most {most} in flight, {ticks} ticks, {len(released)} released")

        # 2. Cancelled before it is planned (the cancel first, then the manual run whose id it names): the
        # gate releases nothing and records every job skipped, so the run settles cancelled.
        await asyncio.sleep(1.0)  # a new second: a new manual run id
        at = datetime.now(UTC).replace(microsecond=0)
        cancelled = schedule_run_id("gate", "gated", at, "manual")
        cancel = RunCancelRequested(run_id=cancelled, tenant="gate", at=at, reason="test")
        await produce(pipe.bootstrap, f"{pipe.prefix}run-inputs", [(cancelled.encode(), encode(cancel))])
        await _manual_run(pipe, at)
        await _run_doc(
            pipe,
            cancelled,
            lambda d: d.get("state") == "cancelled" and d.get("jobs_skipped") == IMAGES,
            "the cancelled gated run",
        )
        results = [orjson.loads(r.value) for r in await pipe.records("job-results", timeout=10.0)]
        assert {r["status"] for r in results if r["run_id"] == cancelled} == {"skipped"}
        assert len({r["job_id"] for r in results if r["run_id"] == cancelled}) == IMAGES
        assert not await _released(pipe, cancelled)

        # 3. The worker is killed while the gate holds jobs back; its successor recovers the gate from the
        # changelog, ticks again, and the run completes within its limits, each job released once.
        await asyncio.sleep(1.0)
        restarted = await _manual_run(pipe, datetime.now(UTC).replace(microsecond=0))
        await _plan(pipe, restarted)
        pipe.workers[-1].kill()
        before = set(await _released(pipe, restarted))
        assert len(before) < IMAGES, "the gate released every job before the kill: nothing left to recover"
        pipe.add_worker()
        await _run_doc(pipe, restarted, _completed, "the gated run after a restart")
        most, finished, _ = await _most_in_flight(pipe, restarted)
        assert most <= PARALLELISM
        assert finished == set((await _plan(pipe, restarted))["job_ids"])
        assert set(await _released(pipe, restarted)) == finished
        print(f"restarted gated run {restarted}: {len(before)} of {IMAGES} released before the kill")
    finally:
        pipe.stop()
