"""Feeds streams.knowledge.Knowledge from the source topics, for the reference evaluator.

Every worker reads the whole of inventory / advisories / vex / policy (no consumer group: each worker
needs all of it, like a global table). `caught_up()` waits until it has read up to the end offsets as
they are *now*, so a job produced after its delta is never evaluated against older knowledge, and
`wait_caught_up()` (what the job stage calls) waits for that however long it takes: a job evaluated
early gets a wrong and final answer (the chaos soak, seed 180090: a worker that had just joined ran a job
with no inventory read yet, "no inventory for image", permanent), where a late one only waits.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence

from aiokafka import AIOKafkaConsumer, TopicPartition

from agents.settings import Settings
from agents.turns import in_turns
from schemas.codec import Decoded, decode
from schemas.messages import (
    AdvisoryDelta,
    Inventory,
    PolicyChange,
    PolicyRules,
    VexStatement,
)
from streams.knowledge import Knowledge

log = logging.getLogger(__name__)
SOURCES = ("inventory", "advisories", "vex", "policy")


class KnowledgeView:
    """An EvaluationLookup (agents.executors) backed by a tail of the source topics."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.knowledge = Knowledge()
        self._consumer: AIOKafkaConsumer | None = None
        self._positions: dict[TopicPartition, int] = {}
        self._logical = {settings.topic(s): s for s in SOURCES}
        self._progress = asyncio.Event()
        self._assigned = asyncio.Event()  # the source partitions are assigned and sought to their start

    async def run(self) -> None:
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.kafka_bootstrap,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=self.settings.max_message_bytes * 2,
            # aiokafka's default (500 ms) held the view behind a quiet partition beside a busy one (one fetch
            # in flight per broker: agents/fetch_wait.py), and every job waits for the view: 0.41 s a job.
            fetch_max_wait_ms=self.settings.fetch_max_wait_ms,
        )
        await consumer.start()
        self._consumer = consumer
        try:
            # Without a subscription the consumer holds no topic metadata: ask the cluster directly.
            cluster = await consumer._client.fetch_all_metadata()
            parts = [
                TopicPartition(topic, p)
                for topic in self._logical
                for p in sorted(cluster.partitions_for_topic(topic) or ())
            ]
            if not parts:
                raise RuntimeError(f"none of the source topics exist: {sorted(self._logical)}")
            consumer.assign(parts)
            await consumer.seek_to_beginning(*parts)
            # Only now: before, the consumer's assignment is empty and `caught_up` would find nothing to
            # wait for.
            self._assigned.set()
            while True:
                batch = await consumer.getmany(timeout_ms=500, max_records=2000)
                fetched = [(tp, record) for tp, records in batch.items() for record in records]
                # In turns: decoding 2,000 records in one held the loop for seconds (agents/turns.py).
                async for tp, record in in_turns(fetched):
                    self._absorb(tp.topic, record.key, record.value)
                    self._positions[tp] = record.offset + 1
                self._progress.set()
                self._progress = asyncio.Event()
        finally:
            await consumer.stop()

    def _absorb(self, topic: str, key: bytes | None, value: bytes | None) -> None:
        logical = self._logical[topic]
        result = decode(logical, key, value, self.settings.max_message_bytes)
        if not isinstance(result, Decoded):
            return  # the source agents dead-letter it; the evaluator simply never sees it
        model = result.model
        if logical == "inventory":
            assert model is None or isinstance(model, Inventory)
            self.knowledge.absorb_inventory((key or b"").decode(errors="replace"), model)
        elif isinstance(model, AdvisoryDelta):
            self.knowledge.absorb_advisory(model)
        elif isinstance(model, VexStatement):
            self.knowledge.absorb_vex(model)
        elif isinstance(model, PolicyChange):
            self.knowledge.absorb_policy(model)

    async def caught_up(self, timeout: float = 30.0) -> bool:
        """Wait until every source partition has been read up to its current end offset."""
        deadline = time.monotonic() + timeout
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._assigned.wait(), timeout)
        consumer = self._consumer
        if consumer is None or not self._assigned.is_set():
            return False
        parts = list(consumer.assignment())
        ends = await consumer.end_offsets(parts)
        while any(self._positions.get(tp, 0) < end for tp, end in ends.items()):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._progress.wait(), min(remaining, 1.0))
        return True

    async def wait_caught_up(self, report_every_s: float = 30.0) -> None:
        """`caught_up`, for as long as it takes, with a warning each `report_every_s` it is still behind."""
        started = time.monotonic()
        while not await self.caught_up(report_every_s):
            log.warning(
                "knowledge view still behind the source topics after %.0f s: jobs wait for it",
                time.monotonic() - started,
            )

    # ------------------------------------------------------------ EvaluationLookup

    async def inventory(self, tenant: str, image_digest: str) -> Inventory | None:
        return self.knowledge.inventory(tenant, image_digest)

    async def advisories_for(self, packages: Sequence[str]) -> Sequence[AdvisoryDelta]:
        return self.knowledge.advisories_for(packages)

    async def vex_for(self, tenant: str, vulnerabilities: Sequence[str]) -> Sequence[VexStatement]:
        return self.knowledge.vex_for(tenant, vulnerabilities)

    async def rules(self, tenant: str, policy_revision: int | None) -> PolicyRules | None:
        return self.knowledge.rules(tenant, policy_revision)
