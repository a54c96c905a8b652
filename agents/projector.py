"""Projects terminal and read-model topics into MongoDB (docs/architecture.md §6).

A plain aiokafka consumer group, not a faust agent: the checkpoints that matter live in MongoDB next to
the documents, so on assignment each partition seeks to its Mongo checkpoint + 1 and Kafka's committed
offsets are only a hint. It follows the active-projection pointer, so after `stella-sched rebuild`
switches to freshly built collections the live projector continues from the rebuild's checkpoints.
Projecting never produces to Kafka: replaying it cannot re-emit jobs or signed events.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalGenerationError, RebalanceInProgressError
from pymongo import MongoClient
from pymongo.errors import AutoReconnect, NetworkTimeout, ServerSelectionTimeoutError

from agents import observe
from agents.settings import Settings
from projections.mongo_store import MongoStore, active_prefix
from projections.store import BatchStats, Projector
from projections.topics import PROJECTED, positioned, projector_group

log = logging.getLogger("stella.projector")
STOP_SECONDS = 15.0  # how long a stopping worker waits for the projector to close its consumer


class _Seek(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, service: ProjectorService) -> None:
        self.service = service

    async def on_partitions_revoked(self, revoked: Any) -> None:
        # The batch being written first: the next owner should not write beside it (a half-written batch is
        # redone by the next owner; finishing it first keeps the two from racing on one document).
        async with self.service.writing:
            self.service.projector.forget([(tp.topic, tp.partition) for tp in revoked])

    async def on_partitions_assigned(self, assigned: Any) -> None:
        await self.service.seek(list(assigned))


class ProjectorService:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        # Opened in run(), not here: building a worker (its --help, a unit test of its web port) must not
        # touch MongoDB or leave a client behind that nobody closes.
        self.client: MongoClient[dict[str, Any]]
        self.prefix: str
        self.store: MongoStore
        self.projector: Projector
        self.consumer: AIOKafkaConsumer | None = None
        self.logical = {settings.topic(t): t for t in PROJECTED}
        self.ready = asyncio.Event()
        self.writing = asyncio.Lock()  # held while a batch is written to MongoDB

    async def seek(self, parts: list[TopicPartition]) -> None:
        assert self.consumer is not None
        for tp in parts:
            position = await asyncio.to_thread(self.projector.seek_position, tp.topic, tp.partition)
            self.consumer.seek(tp, position)

    async def _follow_pointer(self) -> None:
        prefix = await asyncio.to_thread(active_prefix, self.client, self.settings.mongo_db)
        if prefix == self.prefix or self.consumer is None:
            return
        log.info("projection switched from %r to %r: continuing from its checkpoints", self.prefix, prefix)
        self.prefix = prefix
        self.store = MongoStore(self.client, self.settings.mongo_db, prefix)
        self.projector = Projector(
            self.store, projector_group(self.settings), window_seconds=self.settings.window_seconds
        )
        await self.seek(list(self.consumer.assignment()))

    async def _project(self, items: list[Any]) -> None:
        """Fold a fetched batch into MongoDB; an unreachable or stalled server is waited out (nothing is
        committed meanwhile), so the worker keeps its stages running while MongoDB is away."""
        delay = 1.0
        while True:
            try:
                stats = await self._write(items)
                observe.projection_writes(stats.updates)
                return
            except (AutoReconnect, NetworkTimeout, ServerSelectionTimeoutError) as exc:
                log.warning("projector: MongoDB unavailable (%r); retrying in %.0f s", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)

    async def _write(self, items: list[Any]) -> BatchStats:
        """Write a batch on a thread. Cancelled (the worker stopping), it still waits for the thread: the
        consumer leaves the group only after the last write has finished, so the next owner never writes
        a document at the same time (FerretDB loses one of two concurrent updates of a document)."""
        async with self.writing:
            work = asyncio.ensure_future(asyncio.to_thread(self.projector.process, items))
            try:
                return await asyncio.shield(work)
            except asyncio.CancelledError:
                await asyncio.wait([work])
                raise

    async def _commit(self, consumer: AIOKafkaConsumer) -> None:
        """Commit what was projected. A commit refused because the group is rebalancing (a worker joined
        or died: CommitFailedError wraps IllegalGeneration / RebalanceInProgress) is skipped: the next
        poll re-joins, each partition seeks to its MongoDB checkpoint on assignment, and projecting is
        idempotent, so the committed offset is only a hint. Not skipping it crashed the whole worker."""
        try:
            await consumer.commit()
        except (CommitFailedError, IllegalGenerationError, RebalanceInProgressError) as exc:
            log.info("projector: commit skipped during a rebalance (%s)", type(exc).__name__)

    def _open(self) -> None:
        self.client = MongoClient(self.settings.mongo_url, tz_aware=True)
        self.prefix = active_prefix(self.client, self.settings.mongo_db)
        self.store = MongoStore(self.client, self.settings.mongo_db, self.prefix)
        self.projector = Projector(
            self.store, projector_group(self.settings), window_seconds=self.settings.window_seconds
        )
        self.store.ensure_indexes()

    async def run_on_own_loop(self) -> None:
        """`run()` on an event loop in a thread of its own, as faust runs its own consumer
        (faust/transport/drivers/aiokafka.py, AIOKafkaConsumerThread).

        aiokafka sends a group member's heartbeats from a task on the loop its consumer was started on. On
        the worker's loop, any turn longer than the session timeout (an agent's batch, the knowledge feed;
        14-40 s under load in the VEX soak) expelled the projector from its group: a rebalance, and its
        commit refused (docs/partitioning.md, failure modes). Here its heartbeats need only the GIL.
        Cancelling this (the worker stopping) cancels `run()` on its loop and waits until it has closed its
        consumer and MongoDB client; an exception of `run()` is raised here, as before."""
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="stella-projector", daemon=True)
        thread.start()
        finished = threading.Event()

        async def run_then_signal() -> None:
            try:
                await self.run()
            finally:
                finished.set()

        try:
            await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(run_then_signal(), loop))
        finally:
            # A cancellation has reached run() on its loop by now (run_coroutine_threadsafe chains it).
            await asyncio.to_thread(finished.wait, STOP_SECONDS)
            loop.call_soon_threadsafe(loop.stop)
            await asyncio.to_thread(thread.join, STOP_SECONDS)
            if not thread.is_alive():
                loop.close()

    async def run(self) -> None:
        await asyncio.to_thread(self._open)
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.kafka_bootstrap,
            group_id=projector_group(self.settings),
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=10_000,
            heartbeat_interval_ms=1_000,
            max_partition_fetch_bytes=self.settings.max_message_bytes * 2,
            # As the knowledge view's: aiokafka's 500 ms held a result behind the fetch in flight for the
            # other topics (one per broker, agents/fetch_wait.py) before it could be projected.
            fetch_max_wait_ms=self.settings.fetch_max_wait_ms,
        )
        self.consumer = consumer
        await consumer.start()
        consumer.subscribe(list(self.logical), listener=_Seek(self))
        self.ready.set()
        last_pointer_check = time.monotonic()
        try:
            while True:
                batch = await consumer.getmany(timeout_ms=500, max_records=1000)
                items = []
                for tp, records in batch.items():
                    logical = self.logical[tp.topic]
                    for record in records:
                        item = positioned(self.settings, logical, record)
                        if item is not None:
                            items.append(item)
                if items:
                    await self._project(items)
                if batch:
                    await self._commit(consumer)
                if time.monotonic() - last_pointer_check > 5:
                    last_pointer_check = time.monotonic()
                    await self._follow_pointer()
        finally:
            await consumer.stop()
            self.client.close()
