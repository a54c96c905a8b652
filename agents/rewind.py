"""Newly assigned stream partitions without a committed offset are read from their beginning.

The root cause of the scale-out divergence (issue 17; faust-streaming 0.15.3, aiokafka 0.14.0):

1. While a rebalance or a table recovery is going on, faust's fetcher keeps fetching for the new
   assignment and throws records away: `Consumer.getmany` (faust/transport/consumer.py, around l.744-776)
   yields nothing while flow is stopped, and skips records of partitions not yet in the active set.
   aiokafka's fetch position has already moved past them.
2. To undo that, faust "seeks stream partitions to committed offsets" once the assignment is resumed:
   `Recovery._resume_streams` (faust/tables/recovery.py l.306-322) and the end of `Recovery._restart_recovery`
   (l.650-656) call `Consumer.perform_seek` (faust/transport/consumer.py l.565), which calls
   `seek_to_committed`, and `getmany` calls it too while flow is stopped (l.768-773).
3. aiokafka's `AIOKafkaConsumer.seek_to_committed` (aiokafka/consumer/consumer.py l.896-902) only seeks
   `if offset and offset > 0`. A partition the group never committed (None), or committed at 0, keeps
   the advanced position: its first records are never handled by anyone. That is exactly a partition that
   got its first records while it was unassigned or its owner had not committed yet: a lost index entry,
   a lost job result, a run without its plan.

`RewindingConsumer.seek_to_committed` adds the missing case with Kafka's own meaning of "no committed
offset" (`consumer_auto_offset_reset="earliest"`, agents/settings.py): every assigned stream partition
whose committed offset is None or <= 0 is sought to its beginning, and faust's read offset for it is
cleared so its "DROPPED MESSAGE ROFF" filter (consumer.py l.1208-1230) lets the re-read records through
(`perform_seek` then stores None / 0 for it as well). Changelog partitions (faust seeks those itself
during recovery) and the `<app>-__assignor-__leader` topic are left alone. Re-reading is safe: every
effect is guarded by source position (streams/guard.py).

A second way to the same loss, found with this module's traces (`STELLA_TRACE_RECORDS=2`): faust's stream
iterator skips a record that was fetched in an earlier consumer generation, or that it reads while flow
control is suspended, and acks it anyway (faust/streams.py l.1286-1299 and l.1342), so the commit passes
a record no agent handled (the likely path of `index-updates/5@14`, skipped by an owner that kept the partition through
a rebalance). `RewindingConsumer.ack` refuses exactly those acks; the seek at the end of the rebalance
reads the record again.

It is installed by giving the app a transport whose consumer class is this subclass (`install`), the one
extension point faust offers for its consumer (`Transport.Consumer`, faust/transport/drivers/aiokafka.py
l.1517-1521; `App.transport` has a setter). Upstream this belongs in faust's `perform_seek` or in aiokafka's
`seek_to_committed`; delete this module once either seeks uncommitted partitions.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, cast

import faust
from faust.transport.drivers import aiokafka as aiokafka_driver
from faust.types import TP

from agents import fetch_wait

log = logging.getLogger("stella.rewind")
trace = logging.getLogger("stella.fetchtrace")  # DEBUG: per-record fetch / delivery diagnostics
LEADER_TOPIC_SUFFIX = "-__assignor-__leader"  # faust/assignor/leader_assignor.py l.42-43
KAFKA_SCHEMES = ("kafka", "aiokafka")


class RewindingConsumer(aiokafka_driver.Consumer):
    """faust's aiokafka consumer; uncommitted stream partitions are sought to their beginning."""

    # `install` sets a subclass with the app's fetch wait (agents/fetch_wait.py says why).
    thread_class: type[aiokafka_driver.AIOKafkaConsumerThread] = aiokafka_driver.AIOKafkaConsumerThread

    def _new_consumer_thread(self) -> aiokafka_driver.AIOKafkaConsumerThread:
        return self.thread_class(self, loop=self.loop, beacon=self.beacon)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if trace.isEnabledFor(logging.DEBUG):  # diagnostics: what was fetched, what reached the streams
            deliver = self.callback

            async def delivered(message: Any) -> None:
                trace.debug("delivered %s/%d@%d", message.topic, message.partition, message.offset)
                await deliver(message)

            self.callback = delivered

    async def _wait_next_records(self, timeout: float) -> Any:
        records, active = await super()._wait_next_records(timeout)
        if records and trace.isEnabledFor(logging.DEBUG):
            for tp, batch in records.items():
                if self._is_stream(tp) and batch:
                    trace.debug(
                        "fetched %s/%d@%d..%d active=%s flow=%s gen=%s",
                        tp.topic,
                        tp.partition,
                        batch[0].offset,
                        batch[-1].offset,
                        active is None or tp in active,
                        self.flow_active,
                        self.app.consumer_generation_id,
                    )
        return records, active

    async def perform_seek(self) -> None:
        # Stop handing records to the streams until faust resumes the flow. Both recovery paths call
        # `flow_control.resume()` right after this returns, and that clears every stream queue
        # (mode/utils/queues.py FlowControlEvent.resume → clear), then `consumer.resume_flow()`
        # (faust/tables/recovery.py l.325-329 and l.657-660). With the flow still on, records fetched from
        # the new positions while this seek was in progress were queued, then thrown away unacked, and
        # the fetch position was already past them: the first records after every rebalance were lost
        # (seen: `index-updates/2@0`, `impacts/1@0` delivered right after the seek, never handled).
        # Stopped, they stay in aiokafka's buffer until `resume_flow`. The third caller, `getmany`
        # (consumer.py l.768-773), only seeks while the flow is already stopped.
        self.stop_flow()
        await super().perform_seek()

    def _is_stream(self, tp: TP) -> bool:
        app = cast(Any, self.app)
        return tp.topic not in app.tables.changelog_topics and not tp.topic.endswith(LEADER_TOPIC_SUFFIX)

    async def seek_to_committed(self) -> Mapping[TP, int]:
        committed = await super().seek_to_committed()
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "committed offsets: %s",
                ", ".join(
                    f"{tp.topic}/{tp.partition}={committed[tp]}"
                    for tp in sorted(committed)
                    if self._is_stream(tp)
                ),
            )
        if self.app.conf.consumer_auto_offset_reset != "earliest":
            return committed  # "latest" skips unread records by design
        uncommitted = sorted(
            (
                tp
                for tp, offset in committed.items()
                if (offset is None or offset <= 0) and self._is_stream(tp)
            ),
            key=lambda tp: (tp.topic, tp.partition),
        )
        if uncommitted:
            await self.rewind(*uncommitted)
        return committed

    async def rewind(self, *tps: TP) -> None:
        """Seek to the beginning and forget faust's read offset (its duplicate filter). To the log-start
        offset looked up, not aiokafka's `seek_to_beginning`: that one resets lazily, and until the reset
        lands the partition has no position, which faust's livelock check reads and asserts on
        (faust/transport/drivers/aiokafka.py `verify_event_path`: a worker crashed)."""
        starts = await self.earliest_offsets(*tps)
        for tp in tps:
            await self.seek_on_thread(tp, starts.get(tp, 0))
            self._read_offset[tp] = None
        log.info(
            "no committed offset: reading %s from the beginning",
            ", ".join(f"{tp.topic}/{tp.partition}" for tp in tps),
        )

    def ack(self, message: Any) -> bool:
        # faust's stream iterator skips a record fetched in an earlier generation, or read while flow
        # control is suspended (faust/streams.py l.1286-1299; the Cython iterator too), and then *acks* it
        # (l.1342), so the commit moves past a record no agent handled, and nobody reads it again. Refuse
        # those acks: the commit stays before the record, and the seek to committed offsets that ends
        # every rebalance brings it back. A record handled before the rebalance and acked after it is
        # refused too and handled again: at-least-once, and every effect is idempotent.
        if message.generation_id != self.app.consumer_generation_id or not self.app.flow_control.is_active():
            return False
        return bool(super().ack(message))

    async def _add_gap(self, tp: TP, offset_from: int, offset_to: int) -> None:
        # faust calls this when the next record delivered for `tp` is more than one past the last one
        # (consumer.py `_drain_messages`, l.1208-1215) and then counts the offsets between as done, which
        # is right only for compacted topics. Anywhere else records were dropped: say so.
        log.warning(
            "%s/%d: offsets %d..%d never delivered (compacted away, or fetched and dropped); faust counts them as processed",
            tp.topic,
            tp.partition,
            offset_from,
            offset_to - 1,
            extra={"topic": tp.topic, "partition": tp.partition, "offset": offset_from},
        )
        await super()._add_gap(tp, offset_from, offset_to)

    async def seek_on_thread(self, tp: TP, offset: int) -> None:
        """Seek on the consumer's own thread, and set faust's read offset as its `seek` does. faust's
        `seek` (consumer.py `_seek`, l.1453) calls aiokafka's `seek` from the caller's thread while the
        consumer thread's fetcher iterates its records: a worker crashed with KeyError(TopicPartition) in
        aiokafka's `fetched_records` (chaos seed 449798). `seek_wait` runs it on the consumer thread
        (faust/transport/drivers/aiokafka.py `_seek_wait`)."""
        await self.seek_wait({tp: offset})
        self._read_offset[tp] = offset if offset else None

    async def committed(self, tp: TP) -> int | None:
        """The group's committed offset for `tp`, from the broker."""
        thread = self._thread
        consumer = thread._ensure_consumer()
        offset: int | None = await thread.call_thread(consumer.committed, tp)
        return offset

    async def seek_to_committed_or_beginning(self, tp: TP) -> int | None:
        """Seek one partition to its committed offset, or to its beginning when it has none; return the
        committed offset."""
        offset = await self.committed(tp)
        if offset is not None and offset > 0:
            await self.seek_on_thread(tp, offset)
        else:
            await self.rewind(tp)
        return offset


class RewindingTransport(aiokafka_driver.Transport):
    Consumer = RewindingConsumer


def install(app: faust.App, fetch_max_wait_ms: int | None = None) -> None:
    """Make `app` use RewindingConsumer (with `fetch_max_wait_ms`, when given, instead of faust's 1,500).
    Call right after creating the app, before anything touches its transport (topics do, lazily)."""
    state = cast(Any, app)
    if state._transport is not None or state._consumer is not None:
        raise RuntimeError("rewind.install: the app's transport already exists")
    urls = list(app.conf.broker_consumer)
    if urls[0].scheme not in KAFKA_SCHEMES:
        raise RuntimeError(f"rewind.install: only the aiokafka transport is supported, not {urls[0]}")
    transport: type[RewindingTransport] = RewindingTransport
    if fetch_max_wait_ms is not None:
        consumer = type(
            "RewindingConsumer",
            (RewindingConsumer,),
            {"thread_class": fetch_wait.thread_class(fetch_max_wait_ms)},
        )
        transport = type("RewindingTransport", (RewindingTransport,), {"Consumer": consumer})
    app.transport = transport(urls, app)
