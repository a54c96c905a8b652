"""``GET /api/v1/stream``: the caller's tenant's run and job changes as Server-Sent Events (docs/console.md).

Fed from the topics the runs and jobs read models are folded from (``projections.live_feed.FEED_TOPICS``),
read by a group-less consumer per connection. Ids and the resume cut are ``projections.live_feed``'s pure
functions: a reconnect with ``Last-Event-ID`` gets every later event once. Without one the feed starts at
``since_ms`` (a page's render time, so nothing between the render and the connection is missed) or at the
end of the topics. A stream ends after ``STREAM_SECONDS``; EventSource reconnects with its last id."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Annotated, Any

import anyio
import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from controlplane.console.session import stream_principal
from controlplane.deps import RuntimeDep
from controlplane.errors import ApiError
from controlplane.runtime import Runtime
from projections.live_feed import (
    FEED_TOPICS,
    BadEventId,
    Cursor,
    FeedRecord,
    Source,
    advance,
    event_id,
    parse_event_id,
    sse_frame,
)
from schemas.codec import Decoded, decode
from schemas.messages import JobResult, RunEvent

router = APIRouter(prefix="/api/v1")
log = logging.getLogger("controlplane.stream")

STREAMS_PER_TENANT = 20  # open streams (each a Kafka consumer) per tenant and API process
STREAM_SECONDS = 300.0
KEEPALIVE_SECONDS = 10.0
POLL_MS = 500
RECONNECT_MS = 2000


def run_data(msg: RunEvent) -> dict[str, Any]:
    data = msg.model_dump(mode="json", by_alias=True, exclude={"schema_id"})
    return {"type": "run", **data}


def job_data(msg: JobResult) -> dict[str, Any]:
    return {
        "type": "job",
        "job_id": msg.job_id,
        "run_id": msg.run_id,
        "image_digest": msg.image_digest,
        "status": msg.status,
        "verdict": msg.verdict,
        "previous_verdict": msg.previous_verdict,
        "attempts": len(msg.attempts),
        "finished_at": msg.model_dump(mode="json")["finished_at"],
        "added": len(msg.delta.added),
        "removed": len(msg.delta.removed),
        "changed": len(msg.delta.changed),
    }


def feed_record(index: int, record: Any, max_bytes: int) -> FeedRecord:
    """A consumer record as the pure feed sees it: its tenant and what to send (nothing if undecodable)."""
    source: Source = (index, int(record.partition))
    found = decode(FEED_TOPICS[index], record.key, record.value, max_bytes)
    model = found.model if isinstance(found, Decoded) else None
    if isinstance(model, RunEvent):
        return FeedRecord(source, record.offset, record.timestamp, model.tenant, "run", run_data(model))
    if isinstance(model, JobResult):
        return FeedRecord(source, record.offset, record.timestamp, model.tenant, "job", job_data(model))
    return FeedRecord(source, record.offset, record.timestamp, None)


class Feed:
    """One connection's consumer, positioned at its cursor."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.names = [rt.topic(t) for t in FEED_TOPICS]
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=rt.settings.kafka_bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",  # a cursor below the log start (retention): from the start
            request_timeout_ms=15000,
        )

    async def open(self, cursor: Cursor | None, since_ms: int | None) -> Cursor:
        await self.consumer.start()
        parts: list[tuple[Source, TopicPartition]] = []
        for index, name in enumerate(self.names):
            known = self.consumer.partitions_for_topic(name)
            if not known:
                await self.consumer._client.force_metadata_update()
                known = self.consumer.partitions_for_topic(name)
            parts += [((index, p), TopicPartition(name, p)) for p in sorted(known or ())]
        if not parts:
            raise ApiError(503, "unavailable", "the feed's topics are not there yet", {"Retry-After": "2"})
        tps = [tp for _, tp in parts]
        self.consumer.assign(tps)
        if cursor is not None:
            for source, tp in parts:
                self.consumer.seek(tp, cursor.get(source, 0))
        elif since_ms is not None:
            found = await self.consumer.offsets_for_times({tp: since_ms for tp in tps})
            ends = await self.consumer.end_offsets(tps)
            for tp in tps:
                hit = found.get(tp)
                self.consumer.seek(tp, hit.offset if hit is not None else ends[tp])
        else:
            await self.consumer.seek_to_end(*tps)
        start: Cursor = {}
        for source, tp in parts:
            start[source] = (
                cursor[source]
                if cursor is not None and source in cursor
                else await self.consumer.position(tp)
            )
        return start

    async def poll(self) -> list[FeedRecord]:
        batch = await self.consumer.getmany(timeout_ms=POLL_MS, max_records=500)
        limit = self.rt.settings.max_message_bytes
        index = {name: i for i, name in enumerate(self.names)}
        return [feed_record(index[tp.topic], r, limit) for tp, records in batch.items() for r in records]

    async def close(self) -> None:
        with anyio.CancelScope(shield=True):
            await self.consumer.stop()


class OpenStreams:
    """Streams open per tenant in this process (``app.state.open_streams``)."""

    def __init__(self) -> None:
        self.count: dict[str, int] = {}

    def enter(self, tenant: str) -> None:
        if self.count.get(tenant, 0) >= STREAMS_PER_TENANT:
            raise ApiError(
                429,
                "rate_limited",
                f"{STREAMS_PER_TENANT} live streams are open for this tenant already",
                {"Retry-After": "5"},
            )
        self.count[tenant] = self.count.get(tenant, 0) + 1

    def leave(self, tenant: str) -> None:
        self.count[tenant] = max(0, self.count.get(tenant, 0) - 1)


def open_streams(request: Request) -> OpenStreams:
    found = getattr(request.app.state, "open_streams", None)
    if not isinstance(found, OpenStreams):
        found = OpenStreams()
        request.app.state.open_streams = found
    return found


class FeedResponse(StreamingResponse):
    """Releases the feed (consumer, stream count) once, however the response ends: also when the client
    left before the first byte and the event generator never started."""

    def __init__(
        self, content: AsyncIterator[str], release: Callable[[], Awaitable[None]], **kw: Any
    ) -> None:
        super().__init__(content, **kw)
        self.release = release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            await self.release()


def releaser(streams: OpenStreams, tenant: str, feed: Feed) -> Callable[[], Awaitable[None]]:
    done = False

    async def release() -> None:
        nonlocal done
        if not done:
            done = True
            streams.leave(tenant)
            await feed.close()

    return release


async def events(
    request: Request, cursor: Cursor, tenant: str, feed: Feed, release: Callable[[], Awaitable[None]]
) -> AsyncIterator[str]:
    try:
        yield f"retry: {RECONNECT_MS}\n\n"
        yield sse_frame("ready", orjson.dumps({"tenant": tenant}).decode(), event_id(cursor))
        started = last_sent = time.monotonic()
        while time.monotonic() - started < STREAM_SECONDS:
            if await request.is_disconnected():
                return
            deliveries, cursor = advance(cursor, await feed.poll(), tenant)
            for d in deliveries:
                yield sse_frame(d.event, orjson.dumps(d.data).decode(), d.event_id)
                last_sent = time.monotonic()
            if time.monotonic() - last_sent >= KEEPALIVE_SECONDS:
                yield ": keepalive\n\n"
                last_sent = time.monotonic()
    finally:
        await release()


@router.get(
    "/stream",
    response_class=StreamingResponse,
    responses={
        200: {
            "description": "Server-Sent Events: `ready` (the start cursor), then `run` (a run's state, counts "
            "and DeltaSummary) and `job` (a job's outcome) events of the caller's tenant. Each id is a "
            "cursor; send it back as `Last-Event-ID` to resume with no gap and no duplicate.",
            "content": {"text/event-stream": {}},
        }
    },
)
async def stream(
    request: Request,
    rt: RuntimeDep,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", max_length=4096)] = None,
    from_id: Annotated[
        str | None, Query(alias="from", max_length=4096, description="an event id (as Last-Event-ID)")
    ] = None,
    since_ms: Annotated[
        int | None, Query(ge=0, le=2**53, description="no id: start at records written since (epoch ms)")
    ] = None,
) -> StreamingResponse:
    """The tenant's live run and job changes (auth: bearer token with the read scope, or a console session)."""
    principal = stream_principal(request)
    text = last_event_id or from_id
    try:
        cursor = parse_event_id(text) if text else None
    except BadEventId as exc:
        raise ApiError(422, "invalid_event_id", f"Last-Event-ID: {exc}") from None
    streams = open_streams(request)
    streams.enter(principal.tenant)
    feed = Feed(rt)
    release = releaser(streams, principal.tenant, feed)
    try:
        start = await asyncio.wait_for(feed.open(cursor, since_ms), rt.config.db_timeout_seconds * 3)
    except ApiError:
        await release()
        raise
    except Exception as exc:
        await release()
        log.warning("live feed unavailable: %r", exc)
        raise ApiError(
            503, "unavailable", "Kafka is not reachable for the live feed", {"Retry-After": "2"}
        ) from None
    headers = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
    return FeedResponse(
        events(request, start, principal.tenant, feed, release),
        release,
        media_type="text/event-stream",
        headers=headers,
    )
