"""Reads from the broker whether the pipeline upstream of `impacts` has drained (streams.windows.idle_flush).

A few cheap requests per snapshot: the app's committed offsets (OffsetFetch to the group coordinator), then
the end offsets (ListOffsets) of the upstream topics and of `impacts`, then the last few records of each
`impacts` partition (where its trailing ticks start). In that order: a record written between the first two
shows as lag. When a `catalog-updates` partition lags by a few records, those are read too: if they are all
completed jobs' ReportSeen, which cannot lead to an impact (streams.windows.INERT_SCHEMAS), it does not lag.
Snapshots are taken only when a tick asks for one that the cached snapshot cannot answer, at most one at a
time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from agents.settings import Settings
from schemas.messages import Tick, schema_id_of
from streams.windows import Quiescence, cannot_cause_impact, committed_offset, lagging_partitions

log = logging.getLogger("stella.quiescence")

# The topics whose records can lead to an impact (agents/ingest_stage.py, index_stage.py, tenant_stage.py):
# sources, the repartition topics between them, and the tenant stage's own non-impact inputs (policy,
# rechecks and catalog-updates fold their impacts straight into the windows).
UPSTREAM_OF_IMPACTS = (
    "inventory",
    "advisories",
    "vex",
    "policy",
    "rechecks",
    "runtime",
    "index-updates",
    "impact-requests",
    "catalog-updates",
)
# Records read from the end of each `impacts` partition per snapshot to find where its trailing ticks start:
# a few ticks arrive while one is handled (one per partition every idle_flush / 4 s, agents/tenant_stage.py).
TAIL = 32
# At most this many uncommitted `catalog-updates` records are read to see whether they are all inert (a
# longer lag is a backlog: it lags).
INERT_PEEK = 64
TICK_SCHEMA = schema_id_of(Tick)
TIMEOUT_SECONDS = 10.0  # a snapshot that takes longer answers "not quiescent": the next tick asks again


class UpstreamProbe:
    def __init__(self, settings: Settings, group_id: str) -> None:
        self.settings = settings
        self.group_id = group_id
        self.snapshot: Quiescence | None = None
        self._admin: AIOKafkaAdminClient | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._lock = asyncio.Lock()
        self._last_try = 0.0
        n = settings.partitions
        self._upstream = [
            TopicPartition(settings.topic(name), p) for name in UPSTREAM_OF_IMPACTS for p in range(n)
        ]
        self._impacts = [TopicPartition(settings.topic("impacts"), p) for p in range(n)]

    async def refresh(self, min_interval: float) -> Quiescence | None:
        """A new snapshot, unless one was tried less than `min_interval` seconds ago or is being taken;
        None when the broker did not answer (treated as not quiescent)."""
        if self._lock.locked() or time.monotonic() - self._last_try < min_interval:
            return self.snapshot
        async with self._lock:
            self._last_try = time.monotonic()
            try:
                self.snapshot = await asyncio.wait_for(self._take(), TIMEOUT_SECONDS)
            except Exception as exc:  # any failure means "cannot tell": wait, do not flush
                log.info("quiescence snapshot failed (%r): idle flushes wait", exc)
                self.snapshot = None
                await self.close()
            return self.snapshot

    async def _take(self) -> Quiescence:
        if self._admin is None:
            admin = AIOKafkaAdminClient(bootstrap_servers=self.settings.kafka_bootstrap)
            await admin.start()
            self._admin = admin
        if self._consumer is None:
            # earliest: a tail that starts below the log start (retention) is read from the log start,
            # never skipped to the end (which would hide the records after the tick).
            consumer = AIOKafkaConsumer(
                bootstrap_servers=self.settings.kafka_bootstrap,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                # A snapshot's reads wait behind the fetch in flight (one per broker: agents/fetch_wait.py).
                fetch_max_wait_ms=self.settings.fetch_max_wait_ms,
            )
            await consumer.start()
            self._consumer = consumer
        raw = await self._admin.list_consumer_group_offsets(self.group_id, partitions=self._upstream)
        committed = {(tp.topic, tp.partition): meta.offset for tp, meta in raw.items()}
        ends = await self._consumer.end_offsets([*self._upstream, *self._impacts])
        impacts_topic = self.settings.topic("impacts")
        upstream_ends = {
            (tp.topic, tp.partition): end for tp, end in ends.items() if tp.topic != impacts_topic
        }
        impacts_end = {tp.partition: end for tp, end in ends.items() if tp.topic == impacts_topic}
        ticks = await self._tails(
            {
                tp: (max(0, impacts_end[tp.partition] - TAIL), impacts_end[tp.partition])
                for tp in self._impacts
            },
            is_tick,
        )
        ticks_from = {tp.partition: offset for tp, offset in ticks.items()}
        # Uncommitted records of catalog-updates are often only completed jobs' ReportSeen (see INERT_SCHEMAS).
        catalog = self.settings.topic("catalog-updates")
        starts = {tp: committed_offset(committed, tp) for tp in upstream_ends if tp[0] == catalog}
        lag = {
            TopicPartition(*tp): (start, upstream_ends[tp])
            for tp, start in starts.items()
            if 0 < upstream_ends[tp] - start <= INERT_PEEK
        }
        inert = await self._tails(lag, lambda _key, value: cannot_cause_impact(_schema(value)))
        inert_from = {(tp.topic, tp.partition): offset for tp, offset in inert.items()}
        return Quiescence(lagging_partitions(committed, upstream_ends, inert_from), impacts_end, ticks_from)

    async def _tails(
        self,
        ranges: dict[TopicPartition, tuple[int, int]],
        matches: Callable[[bytes | None, bytes | None], bool],
    ) -> dict[TopicPartition, int]:
        """Per partition, the offset after its last record in [start, end) that does not match (or start when
        all match): from there to the end it holds only matching records. For `impacts`, ticks: they keep
        arriving while a tick is handled, and without this a tick followed by a newer one could never flush
        (streams.windows, idle flush gate)."""
        consumer = self._consumer
        assert consumer is not None
        parts = [tp for tp, (start, end) in ranges.items() if end > start]
        if not parts:
            return {}
        consumer.assign(parts)
        for tp in parts:
            consumer.seek(tp, ranges[tp][0])
        after: dict[TopicPartition, int] = {}
        pending = set(parts)
        while pending:
            batch = await consumer.getmany(*pending, timeout_ms=1000)
            for tp, records in batch.items():
                end = ranges[tp][1]
                for record in records:
                    if record.offset < end and not matches(record.key, record.value):
                        after[tp] = record.offset + 1
            for tp in list(pending):
                if await consumer.position(tp) >= ranges[tp][1]:
                    pending.discard(tp)
        # Unassigned, the consumer fetches nothing until the next snapshot: no fetch left waiting at the end
        # of these partitions for the next snapshot's reads to queue behind.
        consumer.assign([])
        return {tp: after.get(tp, ranges[tp][0]) for tp in parts}

    async def close(self) -> None:
        admin, consumer = self._admin, self._consumer
        self._admin = self._consumer = None
        if consumer is not None:
            await consumer.stop()
        if admin is not None:
            await admin.close()


def _schema(value: bytes | None) -> object:
    """The record's `schema` field, or None when it is not a JSON object."""
    if value is None:
        return None
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    return doc.get("schema") if isinstance(doc, dict) else None


def is_tick(key: bytes | None, value: bytes | None) -> bool:
    """A tick of the tenant stage (key ``tick``, schema ``scheduler.tick@1``), not an impact."""
    return key == b"tick" and _schema(value) == TICK_SCHEMA
