"""What every stage shares: the faust app, its topics and tables, and the one decode path.

A stage module exposes `register(pipe)` and defines its agents on `pipe.app`. Stages talk to each other
only through topics (docs/architecture.md §2), so each can be reasoned about, and tested, alone.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from typing import Any

import faust
from aiokafka.errors import KafkaError, MessageSizeTooLargeError, RecordListTooLargeError, RecordTooLargeError
from faust.transport.producer import ProducerBuffer
from pydantic import BaseModel

from agents import observe, rewind, shell, stalls, take
from agents.settings import Settings
from agents.shell import Output, as_current, end_batch, open_batch, publish, withhold_acks
from agents.topology import TABLES
from agents.topology import topics as topic_specs
from agents.turns import in_turns
from schemas.codec import Decoded, Rejected, dead_letter, decode, encode

log = logging.getLogger("stella.agents")
# One DEBUG line per handled record (agent, topic, partition, offset): off unless STELLA_TRACE_RECORDS=1
# (agents/worker.py). The scale-out and chaos tests use it to prove no input offset was skipped.
trace = logging.getLogger("stella.handled")
KAFKA_RETRIES = 5
# The broker refuses these for good: retrying cannot help, so the input is dead-lettered instead.
TOO_LARGE = (MessageSizeTooLargeError, RecordTooLargeError, RecordListTooLargeError)


class OutputTooLarge(Exception):
    """An output this stage computed exceeds the record limit; its input is dead-lettered (unpublishable)."""

    def __init__(self, logical: str, size: int, limit: int) -> None:
        super().__init__(f"output to {logical!r} would be {size} bytes, the record limit is {limit}")


def raw_topic(app: faust.App, name: str, partitions: int) -> faust.TopicT:
    return app.topic(
        name,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        partitions=partitions,
        internal=False,
    )


async def _resend_after(agent: str, attempt: int, exc: KafkaError) -> None:
    log.warning("%s: broker error %r closing a batch, re-sending (%d)", agent, exc, attempt)
    if attempt >= 2 or isinstance(exc, TOO_LARGE):
        stalls.mark(agent, f"broker refuses the batch's outputs: {type(exc).__name__}")
    await asyncio.sleep(min(2**attempt, 10))


@dataclass
class Pipeline:
    app: faust.App
    settings: Settings
    topics: dict[str, faust.TopicT] = field(default_factory=dict)
    tables: dict[str, Any] = field(default_factory=dict)
    logical: dict[str, str] = field(default_factory=dict)  # real topic name → logical name

    @classmethod
    def create(cls, settings: Settings) -> Pipeline:
        app = faust.App(settings.app_id, **settings.faust_config())
        # Partitions without a committed offset are read from the start (issue 17); the fetch wait: issue 16.
        rewind.install(app, settings.fetch_max_wait_ms)
        # A batch's table writes reach faust's producer buffer at once; past `max_messages` it logs
        # "producer buffer full" and drains. Size it to a batch's writes (it is a class attribute).
        ProducerBuffer.max_messages = max(ProducerBuffer.max_messages, 4 * settings.batch_max)
        shell.changelog_limit = settings.max_message_bytes
        pipe = cls(app, settings)
        for spec in topic_specs(settings.topic_prefix, settings.partitions):
            logical = spec.name[len(settings.topic_prefix) :]
            pipe.topics[logical] = raw_topic(app, spec.name, spec.partitions)
            pipe.logical[spec.name] = logical
        return pipe

    def source(self, *logical: str) -> faust.TopicT:
        """One faust channel over several co-partitioned topics."""
        names = [self.settings.topic(name) for name in logical]
        return self.app.topic(
            *names, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw"
        )

    def table(self, name: str) -> Any:
        """A changelog-backed table of raw bytes values (streams.guard framing) keyed by str."""
        if name not in TABLES:
            raise ValueError(
                f"table {name!r} is not in agents.topology.TABLES (its changelog is pre-created)"
            )
        table = self.app.Table(
            name,
            key_type=str,
            value_type=bytes,
            partitions=self.settings.partitions,
            options=self.settings.table_options(),
        )
        self.tables[name] = table
        return table

    def out(self, logical: str, key: str | bytes | None, message: BaseModel | bytes) -> Output:
        value = message if isinstance(message, bytes) else encode(message)
        raw_key = key.encode() if isinstance(key, str) else key
        size = len(value) + len(raw_key or b"")
        if size > self.settings.max_message_bytes:
            # Checked before sending: the broker would refuse it for good and the stage would loop.
            raise OutputTooLarge(logical, size, self.settings.max_message_bytes)
        return Output(self.topics[logical], raw_key, value)

    def logical_of(self, event: faust.EventT[Any]) -> str:
        return self.logical.get(event.message.topic, event.message.topic)

    async def decode(self, event: faust.EventT[Any]) -> Decoded | None:
        """Decode an event of any project topic; a bad one is dead-lettered and None returned."""
        logical = self.logical_of(event)
        result = decode(logical, event.key, event.value, self.settings.max_message_bytes)
        if isinstance(result, Rejected):
            await self.reject(event, result)
            return None
        return result

    async def run(
        self,
        stream: faust.StreamT[Any],
        agent: str,
        handle: Callable[[faust.EventT[Any]], Awaitable[None]],
        *,
        batched: bool = False,
        flush: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        """The loop every agent runs. A broker hiccup is retried; any other failure while handling one
        record dead-letters that record (original bytes, position, error) and the agent carries on.

        `batched`: records are handled a fetched batch at a time (agents.shell.Batch): one wait for the
        outputs' acks per batch instead of per record. Only for stages whose handlers do all their reads
        and writes through `agents.shell` (read / write / apply_guarded / publish).

        `flush` (batched only): awaited once the batch's records were handled, before its outputs' acks,
        for a handler that holds records back to fold them together (the tenant stage's impacts)."""
        if not batched:
            async for event in stream.events():
                await self._until_done(agent, [event], partial(self._handle, agent, handle, event))
                stalls.clear(agent)
            return
        within = max(self.settings.batch_wait_ms, 1) / 1000
        # Not faust's own take_events, which polls every `within` seconds while idle (agents/take.py).
        batches = take.tracked(stream, self.settings.batch_max, within)
        async for events in batches:
            await self._until_done(agent, events, partial(self._batch, agent, handle, events, flush))
            stalls.clear(agent)
            observe.batch(agent, len(events))

    async def _batch(
        self,
        agent: str,
        handle: Callable[[faust.EventT[Any]], Awaitable[None]],
        events: Sequence[Any],
        flush: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        batch, token = open_batch()
        try:
            # In turns: handling a whole batch without a suspension held the loop (agents/turns.py).
            async for event in in_turns(events):
                with as_current(event):
                    await self._handle(agent, handle, event)
            if flush is not None:
                await flush()
        finally:
            end_batch(token)
        # Never gives up: faust acks the batch's inputs once the loop body returns.
        await batch.close(partial(_resend_after, agent))

    async def _until_done(
        self, agent: str, events: Sequence[Any], work: Callable[[], Awaitable[None]]
    ) -> None:
        """Run ``work`` (handle these events and get their outputs acked) until it succeeds.

        faust acks the events in a ``finally`` around its ``yield`` (Stream.take_events and the event
        iterator), so an exception or a cancellation leaving this loop body would commit inputs whose
        outputs were never published. A failure is therefore retried in place (handlers are idempotent:
        guarded tables are written only after the acks) with the agent reported stalled; a cancellation
        (SIGTERM) withholds the events' acks so nothing past them is committed."""
        attempt = 0
        while True:
            try:
                await work()
                return
            except asyncio.CancelledError:
                withhold_acks(events)
                raise
            except Exception as exc:
                attempt += 1
                log.exception("%s: failed to finish %d record(s), retrying (%d)", agent, len(events), attempt)
                stalls.mark(agent, f"{type(exc).__name__} while finishing its input; retrying")
                try:
                    await asyncio.sleep(min(2**attempt, 10))
                except asyncio.CancelledError:
                    withhold_acks(events)
                    raise

    async def handle_one(
        self, agent: str, handle: Callable[[faust.EventT[Any]], Awaitable[None]], event: faust.EventT[Any]
    ) -> None:
        """Handle one record as `run` does: broker errors retried, any other failure dead-letters it."""
        with as_current(event):
            await self._handle(agent, handle, event)

    async def _handle(
        self, agent: str, handle: Callable[[faust.EventT[Any]], Awaitable[None]], event: faust.EventT[Any]
    ) -> None:
        for attempt in range(1, KAFKA_RETRIES + 1):
            try:
                await handle(event)
                observe.folded(agent)
                break
            except (OutputTooLarge, *TOO_LARGE) as exc:
                reason = f"{agent}: {type(exc).__name__}: {exc}"
                await self.reject(event, Rejected(self.logical_of(event), "unpublishable", reason, ""))
                break
            except KafkaError as exc:
                stalls.mark(agent, f"broker error {type(exc).__name__} ({attempt}/{KAFKA_RETRIES})")
                if attempt == KAFKA_RETRIES:
                    raise  # Pipeline._until_done retries the record (or its batch); nothing is committed
                log.warning("%s: broker error %r, retrying (%d/%d)", agent, exc, attempt, KAFKA_RETRIES)
                await asyncio.sleep(min(2**attempt, 10))
            except Exception as exc:
                log.exception(
                    "%s: failed on %s/%d@%d",
                    agent,
                    event.message.topic,
                    event.message.partition,
                    event.message.offset,
                )
                reason = f"{agent}: {type(exc).__name__}: {exc}"
                await self.reject(event, Rejected(self.logical_of(event), "processing-error", reason, ""))
                break
        if trace.isEnabledFor(logging.DEBUG):
            message = event.message
            trace.debug(
                "handled",
                extra={
                    "agent": agent,
                    "topic": message.topic,
                    "partition": message.partition,
                    "offset": message.offset,
                },
            )

    async def reject(self, event: faust.EventT[Any], rejected: Rejected) -> None:
        message = event.message
        # The record's own timestamp, not the wall clock: a replay dead-letters identically.
        at = datetime.fromtimestamp(message.timestamp or 0, UTC)
        letter = dead_letter(
            rejected,
            message.topic,
            message.partition,
            message.offset,
            event.key,
            event.value,
            at,
            self.settings.max_message_bytes,
        )
        await publish([self.out("deadletter", message.topic, letter)])
        log.warning(
            "dead-lettered %s/%d@%d: %s: %s",
            message.topic,
            message.partition,
            message.offset,
            rejected.reason,
            rejected.message,
            extra={"topic": message.topic, "partition": message.partition, "offset": message.offset},
        )
        observe.dead_letter(self.logical_of(event), rejected.reason)
