"""A schedule's limits on a real worker: a manual run of six images with `parallelism: 2, rate_per_second: 1`
is released by the run stage's gate (streams/run_gate.py), never more than two of its jobs in flight, and
completes with every job run once; a gated run cancelled before it is planned releases nothing and settles
with every job skipped.

In flight is read from the run's own partition of `run-inputs`, where the job stage's starts and results and
the gate's ticks are folded in order: a job is released only after the run stage folded enough results, so
at no point of that log are more than two of the run's jobs started and not finished. Six jobs at one per
second with a burst of one need at least five seconds of event time: ticks must be in that log too.
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

IMAGES = 6
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
        assert await asyncio.to_thread(cli, pipe, "run", "gated") == 0

        deadline = time.monotonic() + 240
        run_id, state = "", None
        while time.monotonic() < deadline:
            pipe.alive()
            plans = [orjson.loads(r.value) for r in await pipe.records("run-inputs", timeout=10.0)]
            gated = [p for p in plans if p.get("schema") == "scheduler.run-planned@1" and p.get("limits")]
            if gated:
                run_id = gated[0]["run_id"]
                doc = pipe.mongo().runs.find_one({"_id": run_id}) or {}
                state = doc.get("state")
                if state == "completed":
                    break
            await asyncio.sleep(1.0)
        else:
            logs = "\n".join(w.output()[-3000:] for w in pipe.workers)
            raise AssertionError(f"gated run {run_id or '(not planned)'} is {state}\n{logs}")
        assert gated[0]["limits"] == {"parallelism": PARALLELISM, "rate_per_second": 1}
        assert len(gated[0]["job_ids"]) == IMAGES

        records = await pipe.records("run-inputs", timeout=10.0)
        started: set[str] = set()
        finished: set[str] = set()
        most = 0
        ticks = 0
        for record in records:
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
        assert most <= PARALLELISM
        assert finished == set(gated[0]["job_ids"])
        assert ticks >= 1
        jobs = [orjson.loads(r.value) for r in await pipe.records("jobs", timeout=10.0)]
        released = [j["job_id"] for j in jobs if j["run_id"] == run_id]
        assert sorted(set(released)) == sorted(gated[0]["job_ids"])
        print(f"gated run {run_id}: at most {most} in flight, {ticks} ticks, {len(released)} released")

        # A gated run cancelled before it is planned (the cancel first, then the manual run whose id it
        # names): the gate releases nothing and records every job skipped, so the run settles cancelled.
        at = datetime.now(UTC).replace(microsecond=0)
        cancelled = schedule_run_id("gate", "gated", at, "manual")
        cancel = RunCancelRequested(run_id=cancelled, tenant="gate", at=at, reason="test")
        await produce(pipe.bootstrap, f"{pipe.prefix}run-inputs", [(cancelled.encode(), encode(cancel))])
        command = ScheduleCommand(action="run", tenant="gate", schedule_id="gated", at=at)
        await produce(pipe.bootstrap, f"{pipe.prefix}schedules", [(b"gate", encode(command))])
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            pipe.alive()
            doc = pipe.mongo().runs.find_one({"_id": cancelled}) or {}
            if doc.get("state") == "cancelled" and doc.get("jobs_skipped") == IMAGES:
                break
            await asyncio.sleep(1.0)
        else:
            raise AssertionError(f"cancelled gated run: {doc}")
        results = [orjson.loads(r.value) for r in await pipe.records("job-results", timeout=10.0)]
        skipped = {r["job_id"] for r in results if r["run_id"] == cancelled}
        assert {r["status"] for r in results if r["run_id"] == cancelled} == {"skipped"}
        assert len(skipped) == IMAGES
        jobs = [orjson.loads(r.value) for r in await pipe.records("jobs", timeout=10.0)]
        assert not [j for j in jobs if j["run_id"] == cancelled]
    finally:
        pipe.stop()
