"""Issue 14 #2/#3: a stage that cannot publish its outputs never commits its input past an unrecorded record,
whether the worker is stopped with SIGTERM or SIGKILL, and it says so (/readyz not ready) instead of looping
silently; once the broker accepts the outputs again, every input is processed: nothing was lost.

The broker is made to refuse the signer's outputs for real: ``events.signed`` gets a topic-level
``max.message.bytes`` smaller than any DSSE envelope, so every signed event comes back MESSAGE_TOO_LARGE."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import time
from datetime import UTC, datetime

import httpx
import orjson
from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from schemas.codec import encode
from schemas.messages import JobResult
from tests.integration.executor_kit import digest, free_port
from tests.integration.kit import produce
from tests.integration.pipeline_kit import Deployment, Pipeline

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
RESULTS = 6
BROKER_DEFAULT = "1048588"


async def set_topic_limit(bootstrap: str, topic: str, limit: str) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        resource = ConfigResource(ConfigResourceType.TOPIC, topic, configs={"max.message.bytes": limit})
        await admin.alter_configs([resource])
    finally:
        await admin.close()


async def committed(bootstrap: str, group: str, topic: str, partitions: int) -> dict[int, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        wanted = [TopicPartition(topic, p) for p in range(partitions)]
        found = await admin.list_consumer_group_offsets(group, partitions=wanted)
    finally:
        await admin.close()
    return {tp.partition: meta.offset for tp, meta in found.items() if meta is not None and meta.offset >= 0}


def results() -> list[JobResult]:
    return [
        JobResult(
            job_id=f"job-{i}",
            run_id="run-stalled",
            tenant="acme",
            image_digest=digest(900 + i),
            priority="normal",
            status="completed",
            finished_at=T0,
        )
        for i in range(RESULTS)
    ]


async def wait_stalled(pipe: Pipeline, port: int) -> None:
    """Until the worker's /readyz reports the signer as unable to publish (the alert)."""
    deadline = time.monotonic() + 240
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=10) as client:
        while True:
            pipe.alive()
            try:
                ready = await client.get("/readyz")
                check = ready.json().get("checks", {}).get("publishing", {})
                if ready.status_code == 503 and check.get("ok") is False and "signer" in check["detail"]:
                    metrics = (await client.get("/metrics")).text
                    assert 'scheduler_publish_stalled{agent="signer"} 1.0' in metrics
                    return
            except httpx.HTTPError:
                pass  # the web server starts with the worker
            assert time.monotonic() < deadline, pipe.workers[-1].output()[-4000:]
            await asyncio.sleep(1.0)


async def test_a_stage_that_cannot_publish_never_commits_past_its_input(deployment: Deployment) -> None:
    pipe = deployment()
    await pipe.start(workers=0)
    signed_topic = f"{pipe.prefix}events.signed"
    await set_topic_limit(pipe.bootstrap, signed_topic, "200")
    await produce(
        pipe.bootstrap, f"{pipe.prefix}job-results", [(r.image_digest.encode(), encode(r)) for r in results()]
    )
    group = f"{pipe.prefix}app"
    try:
        for stop in ("SIGTERM", "SIGKILL"):
            port = free_port()
            worker = pipe.add_worker({"STELLA_WEB_PORT": str(port)})
            await wait_stalled(pipe, port)
            if stop == "SIGTERM":
                worker.stop(timeout=120)
            else:
                worker.kill()
            assert not worker.alive()
            offsets = await committed(pipe.bootstrap, group, f"{pipe.prefix}job-results", pipe.partitions)
            # No result was signed, so no job-results offset may be committed past the first record.
            assert all(offset == 0 for offset in offsets.values()), (stop, offsets)
            assert await pipe.records("events.signed", timeout=1.0) == []

        # The broker accepts envelopes again: a fresh worker signs every result; nothing was lost.
        await set_topic_limit(pipe.bootstrap, signed_topic, BROKER_DEFAULT)
        pipe.add_worker()
        signed = await pipe.records("events.signed", expect=RESULTS, timeout=240)
        subjects = {r.key.decode().split("/", 1)[1] for r in signed}
        assert subjects == {r.image_digest for r in results()}
    finally:
        pipe.stop()


async def test_an_output_over_the_record_limit_dead_letters_its_input_and_the_stage_goes_on(
    deployment: Deployment,
) -> None:
    """Issue 14 #2: one input whose signed envelope exceeded the record limit stopped signing for every
    tenant (retried every 10 s, forever). Now that input is dead-lettered as ``unpublishable`` and the
    others are signed."""
    pipe = deployment()
    await pipe.start(workers=0)
    small = results()[:3]
    big = JobResult(
        job_id="job-big",
        run_id="run-big",
        tenant="globex",
        image_digest=digest(999),
        priority="normal",
        status="failed",
        finished_at=T0,
        error="x" * 2500,
    )
    assert len(encode(big)) < 4000  # the input fits the limit; its envelope (base64 + statement) does not
    records = [(r.image_digest.encode(), encode(r)) for r in [small[0], big, *small[1:]]]
    await produce(pipe.bootstrap, f"{pipe.prefix}job-results", records)
    try:
        pipe.add_worker({"STELLA_MAX_MESSAGE_BYTES": "4000"})
        signed = await pipe.records("events.signed", expect=len(small), timeout=240)
        assert {r.key.decode().split("/", 1)[1] for r in signed} == {r.image_digest for r in small}
        letters = await pipe.records("deadletter", expect=1, timeout=240)
        unpublishable = [orjson.loads(r.value) for r in letters if b"unpublishable" in r.value]
        assert len(unpublishable) == 1
        letter = unpublishable[0]
        assert letter["source_topic"] == f"{pipe.prefix}job-results"
        assert "events.signed" in letter["error"]
        assert "record limit is 4000" in letter["error"]
        # 4000 bytes is too small to copy a 3 KB original: it is kept by reference, its position intact
        assert letter["original"]["value_size"] == len(encode(big))
        assert letter["original"]["value_sha256"] == hashlib.sha256(encode(big)).hexdigest()
        assert base64.b64decode(letter["original"]["value_head_b64"]).startswith(b'{"attempts":')
    finally:
        pipe.stop()
