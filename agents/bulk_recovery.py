"""Table recovery in bulk: a moved or wiped table partition is copied from its changelog in fetched batches.

faust's recovery (faust/tables/recovery.py) hands every changelog record through the app's consumer, the
conductor, an event object and a queue to `_slurp_changelogs`, which after *each* record recomputes what is
left over every assigned changelog partition (`need_recovery`): about 5,000 records/s on the loaded 2-core
machine, 240 s for a moved partition of 1M records (py-spy: the main loop busy in asyncio task creation,
`Conductor.on_message`, `Consumer._drain_messages` and `_slurp_changelogs`).

The rocksdb store keeps the changelog's raw key and value bytes (`apply_changelog_batch` deserializes
nothing), so copying a partition needs no faust machinery: before faust seeks its consumer to the active
changelog partitions, `BulkRecovery` reads every lagging one with a plain group-less aiokafka consumer and
writes each fetched batch, with the partition's applied offset, in one RocksDB write batch (atomic: the
offset never runs ahead of the data). faust then finds nothing, or only a short tail, left to recover.

Bounds: the copy stops when no record arrived for `broker_request_timeout` (faust's own path reads what is
left) or when a new rebalance starts. faust would also stop the whole step after `broker_request_timeout`
(40 s; a copy of 1M records took 37-40 s on the loaded machine), and a step that runs over ends recovery for
good; `BulkRecovery._wait` lifts that bound for every step. Tables faust's path must see record by record
(another store, an `on_changelog_event` callback) and brokers with credentials are left to faust. Standby
partitions are not copied here: faust starts them after the actives, in the background, and this step
delays the worker's readiness.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from time import monotonic, process_time
from typing import Any

from aiokafka import AIOKafkaConsumer, TopicPartition
from faust.tables import TableManager as FaustTableManager
from faust.tables.recovery import Recovery
from rocksdict import WriteBatch

from agents.rocksdb_store import Store
from streams.catch_up import applied_after, behind

log = logging.getLogger("stella.recovery")

FETCH_BYTES = 64 << 20
PARTITION_FETCH_BYTES = 16 << 20
TURN_RECORDS = 5_000  # records decoded and written per loop turn: the loop also runs timers and the web


def write_raw(store: Store, db: Any, records: Sequence[tuple[bytes, bytes | None]], offset: int) -> None:
    """Apply changelog records as faust's `apply_changelog_batch` does (raw bytes; a None value deletes),
    with the applied offset in the same write batch."""
    batch = WriteBatch(raw_mode=True)
    for key, value in records:
        if value is None:
            batch.delete(key)
        else:
            batch.put(key, value)
    batch.put(store.offset_key, str(offset).encode())
    db.write(batch)


class BulkRecovery(Recovery):
    async def _wait(self, coro: Any, timeout: Any = None) -> None:
        """faust bounds every recovery step by `broker_request_timeout` and turns one that runs over into
        `ServiceStopped`: the recovery task ends for good, and the worker stays in the group, heartbeating,
        holding partitions it never processes again (chaos seed 691658: the seek to committed offsets took
        50 s at load ~20, the worker idled until the test gave up). A step is waited for until it ends,
        the service stops, or a new rebalance starts (faust's other two exits); a slow one is logged."""
        started = monotonic()
        try:
            await super()._wait(coro, timeout=None)
        finally:
            took = monotonic() - started
            if timeout is not None and took > float(timeout):
                name = getattr(coro, "__qualname__", repr(coro))
                log.warning(
                    "recovery step %s took %.0f s (faust would have given up after %s s)", name, took, timeout
                )

    async def _seek_offsets(self, consumer: Any, tps: Any, offsets: Any, title: str) -> None:
        if title == "active":
            await self._bulk(set(tps), offsets)
        await super()._seek_offsets(consumer, tps, offsets, title)

    def _bootstrap(self) -> str | None:
        if self.app.conf.broker_credentials is not None:
            return None
        return ",".join(f"{url.host}:{url.port or 9092}" for url in self.app.conf.broker)

    async def _bulk(self, tps: set[Any], offsets: Any) -> None:
        bootstrap = self._bootstrap()
        stores: dict[Any, Store] = {}
        for tp in tps:
            table: Any = self.tp_to_table.get(tp)
            store = getattr(table, "data", None)
            if isinstance(store, Store) and getattr(table, "_on_changelog_event", None) is None:
                stores[tp] = store
        todo = behind({tp: offsets[tp] for tp in stores}, dict(self.active_highwaters))
        if bootstrap is None or not todo:
            return
        started, cpu = monotonic(), process_time()
        patience = float(self.app.conf.broker_request_timeout)
        progress_at = started
        by_kafka = {TopicPartition(tp.topic, tp.partition): tp for tp in todo}
        kafka_consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            enable_auto_commit=False,
            fetch_max_bytes=FETCH_BYTES,
            max_partition_fetch_bytes=PARTITION_FETCH_BYTES,
        )
        await kafka_consumer.start()
        copied = dict.fromkeys(todo, 0)
        try:
            kafka_consumer.assign(list(by_kafka))
            for ktp, tp in by_kafka.items():
                kafka_consumer.seek(ktp, todo[tp])
            # One handle per partition for the whole copy: a revoke meanwhile parks it (still open), so
            # the copy never puts a revoked partition back among the store's assigned databases.
            dbs = {tp: stores[tp]._db_for_partition(tp.partition) for tp in todo}
            pending = set(by_kafka)
            while (
                pending and monotonic() - progress_at < patience and not self.signal_recovery_start.is_set()
            ):
                fetched = await kafka_consumer.getmany(*pending, timeout_ms=500, max_records=TURN_RECORDS)
                for ktp, records in fetched.items():
                    if records:
                        tp = by_kafka[ktp]
                        last = records[-1].offset
                        write_raw(stores[tp], dbs[tp], [(r.key, r.value) for r in records], last)
                        offsets[tp] = last
                        copied[tp] += len(records)
                        progress_at = monotonic()
                for ktp in list(pending):
                    tp = by_kafka[ktp]
                    done = applied_after(
                        offsets[tp], await kafka_consumer.position(ktp), self.active_highwaters[tp]
                    )
                    if done is not None:
                        pending.discard(ktp)
                        if done != offsets[tp]:  # compacted tail: nothing left, remember the highwater
                            write_raw(stores[tp], dbs[tp], [], done)
                            offsets[tp] = done
        finally:
            await kafka_consumer.stop()
        total = sum(copied.values())
        left = sum(1 for tp in todo if offsets[tp] < self.active_highwaters[tp])
        log.info(
            "bulk recovery: %d changelog records into %d table partitions in %.1f s (%.1f s CPU)%s",
            total,
            len(todo),
            monotonic() - started,
            process_time() - cpu,
            f"; {left} partition(s) left to faust's recovery" if left else "",
        )


class TableManager(FaustTableManager):
    """faust's table manager with `BulkRecovery` (faust.App(TableManager=...))."""

    @property
    def recovery(self) -> Recovery:
        if self._recovery is None:
            self._recovery = BulkRecovery(self.app, self, beacon=self.beacon, loop=self.loop)
        return self._recovery
