"""Fairness under a backlog (issue 5): 5,000 background jobs are queued, then 10 emergency jobs arrive; the
emergency results must come out before a tenth of the background backlog is done.

Job commands go straight to the ``jobs`` topic (keyed by image digest, as the planner keys them); a real
worker runs them through ``STELLA_EXECUTOR=http`` against a real HTTP engine that takes a fixed 30 ms per
report, with 4 jobs at once, so the backlog takes about a minute to drain and the order is observable.
The test stops as soon as the emergency jobs are done; it does not wait for the whole backlog.

The engine is held closed while the backlog is queued, until the worker's group has committed every job
command: what is measured is the runner's choice among queued jobs, not how fast a (possibly loaded) machine
reads 5,000 commands compared with how fast it executes them. Without the gate the test failed on a busy
machine (629 background results first): the emergency commands had simply not been read yet.
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from schemas.codec import encode
from schemas.messages import JobCommand, JobInputs, PriorityClass
from tests.integration.executor_kit import digest, http_env, scripted_engine
from tests.integration.pipeline_kit import T0, Deployment, Pipeline

BACKGROUND = 5000
EMERGENCY = 10
SLA = {"background": timedelta(hours=24), "emergency": timedelta(minutes=15)}


def job(n: int, priority: PriorityClass) -> JobCommand:
    tenant = "sweep" if priority == "background" else "acme"
    return JobCommand(
        job_id=f"{priority}-{n:05d}",
        run_id=f"run-{priority}-{n // 100:03d}",  # runs of 100 jobs: a sweep is many runs
        tenant=tenant,
        image_digest=digest(n if priority == "background" else 900_000 + n),
        kind="reevaluate",
        priority=priority,
        window_start=T0,
        window_end=T0,
        deadline=T0 + SLA[priority],
        reasons=[],
        inputs=JobInputs(),
    )


async def produce_jobs(pipe: Pipeline, jobs: list[JobCommand]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=pipe.bootstrap, acks="all", linger_ms=5)
    await producer.start()
    try:
        futures = [
            await producer.send(f"{pipe.prefix}jobs", encode(j), key=j.image_digest.encode()) for j in jobs
        ]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def all_committed(pipe: Pipeline, logical: str) -> bool:
    """Has the worker's consumer group committed every record of the topic (read and queued all of it)?"""
    topic = f"{pipe.prefix}{logical}"
    tps = [TopicPartition(topic, p) for p in range(pipe.partitions)]
    admin = AIOKafkaAdminClient(bootstrap_servers=pipe.bootstrap)
    await admin.start()
    try:
        committed = await admin.list_consumer_group_offsets(f"{pipe.prefix}app")
    finally:
        await admin.close()
    consumer = AIOKafkaConsumer(bootstrap_servers=pipe.bootstrap)
    await consumer.start()
    try:
        ends = await consumer.end_offsets(tps)
    finally:
        await consumer.stop()
    return all(tp in committed and committed[tp].offset >= ends[tp] for tp in tps)


async def test_emergency_overtakes_background_backlog(
    deployment: Deployment,
) -> None:
    pipe = deployment()
    background = [job(n, "background") for n in range(BACKGROUND)]
    emergency = [job(n, "emergency") for n in range(EMERGENCY)]
    urgent_digests = {j.image_digest for j in emergency}
    with scripted_engine(delay_s=0.03) as engine:
        try:
            await pipe.start(
                # the gated requests must not time out meanwhile (a timeout would be a retry, not a wait)
                extra_env=http_env(
                    engine, STELLA_EXECUTOR_CONCURRENCY="4", STELLA_EXECUTOR_TIMEOUT_SECONDS="600"
                )
            )
            # Warm up: one job through the worker proves it is consuming before the backlog lands.
            warm = job(BACKGROUND + 1, "background").model_copy(update={"job_id": "warm-up"})
            await produce_jobs(pipe, [warm])
            deadline = time.monotonic() + 90
            while engine.arrivals_for(warm.image_digest) == 0:
                assert time.monotonic() < deadline, pipe.workers[0].output()[-3000:]
                pipe.alive()
                await asyncio.sleep(0.2)

            engine.gate.clear()
            await produce_jobs(pipe, background)
            await produce_jobs(pipe, emergency)
            deadline = time.monotonic() + 300
            while not await all_committed(pipe, "jobs"):
                assert time.monotonic() < deadline, pipe.workers[0].output()[-3000:]
                pipe.alive()
                await asyncio.sleep(0.5)
            engine.gate.set()
            started = time.monotonic()
            while sum(engine.arrivals_for(d) for d in urgent_digests) < EMERGENCY:
                assert time.monotonic() - started < 120, pipe.workers[0].output()[-3000:]
                pipe.alive()
                await asyncio.sleep(0.2)

            # Results, in the order the broker appended them (timestamps across the two partitions).
            records = await pipe.records("job-results", timeout=2.0)
            deadline = time.monotonic() + 30
            while sum(orjson.loads(r.value)["priority"] == "emergency" for r in records) < EMERGENCY:
                assert time.monotonic() < deadline, "emergency results did not all arrive"
                await asyncio.sleep(0.5)
                records = await pipe.records("job-results", timeout=2.0)
            ordered = sorted(records, key=lambda r: (r.timestamp, r.partition, r.offset))
            results = [orjson.loads(r.value) for r in ordered if orjson.loads(r.value)["job_id"] != "warm-up"]
            last_urgent = max(i for i, r in enumerate(results) if r["priority"] == "emergency")
            done_before = sum(1 for r in results[:last_urgent] if r["priority"] == "background")
            assert all(r["status"] == "completed" for r in results if r["priority"] == "emergency")
            assert done_before < BACKGROUND // 10, (
                f"{done_before} background results before the last emergency result"
            )
            # The remote side agrees: emergency requests were served early in the backlog.
            calls = list(engine.calls)
            last_call = max(i for i, c in enumerate(calls) if c.digest in urgent_digests)
            assert last_call < BACKGROUND // 10, f"last emergency request was request #{last_call}"
            print(
                f"background results before the last emergency one: {done_before}; "
                f"emergency done {time.monotonic() - started:.1f}s after the backlog was queued"
            )
            pipe.alive()
        finally:
            pipe.stop()
