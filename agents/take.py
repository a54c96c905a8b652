"""Batches of a faust stream's events that wait for the first record instead of polling for it.

faust's `Stream.take_events(max_, within)` (faust/streams.py) wakes every `within` seconds whether or not a
record came: `wait_for_stopped(buffer_full, timeout=within)` in a loop, each round a `mode` wait that creates
a task per awaitable. With `batch_wait_ms` = 5 and a dozen batched agents, an idle one-worker app woke
about 2,400 times a second and its main thread used a third of a core doing nothing (py-spy: the agents'
`take_events`, mode's `wait_first`, the loop's timer handling).

`take_events` below is faust's, with one change: a round first waits, without a timeout, for the buffer's
first record, and only then up to `within` for the buffer to fill. A record therefore still waits at most
`within` (it waited up to `within` for the next poll before), and an idle agent sleeps. What a batch holds,
the acks after the consumer's loop body (in the generator's `finally`, which agents.pipeline relies on to
withhold acks on cancellation), and the cleanup are faust's own.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator
from typing import Any

from mode.utils.futures import notify


async def take_events(stream: Any, max_: int, within: float) -> AsyncGenerator[list[Any], None]:
    """faust's `Stream.take_events` on `stream`, sleeping while no record is buffered."""
    buffer: list[Any] = []
    events: list[Any] = []
    buffer_full = asyncio.Event()
    buffer_consumed = asyncio.Event()
    buffer_started = asyncio.Event()
    stream_enable_acks: bool = stream.enable_acks
    buffer_consuming: asyncio.Future[None] | None = None
    channel_it = aiter(stream.channel)

    async def add_to_buffer(value: Any) -> Any:
        nonlocal buffer_consuming
        try:
            if buffer_consuming is not None:
                try:
                    await buffer_consuming
                finally:
                    buffer_consuming = None
            buffer.append(value)
            event = stream.current_event
            if event is None:
                raise RuntimeError("Take buffer found current_event is None")
            events.append(event)
            buffer_started.set()
            if len(buffer) >= max_:
                buffer_full.set()
                buffer_consumed.clear()
                await stream.wait(buffer_consumed)
        except asyncio.CancelledError:  # pragma: no cover
            raise
        except Exception as exc:
            stream.log.exception("Error adding to take buffer: %r", exc)
            await stream.crash(exc)
        return value

    stream.enable_acks = False  # acked below, after the caller's loop body
    stream.add_processor(add_to_buffer)
    stream._enable_passive(channel_it)
    try:
        while not stream.should_stop:
            await stream.wait_for_stopped(buffer_started)
            if not buffer_full.is_set():
                await stream.wait_for_stopped(buffer_full, timeout=within)
            if buffer:
                buffer_consuming = asyncio.get_running_loop().create_future()
                try:
                    yield list(events)
                finally:
                    buffer.clear()
                    for event in events:
                        await stream.ack(event)
                    events.clear()
                    buffer_started.clear()
                    notify(buffer_consuming)
                    buffer_full.clear()
                    buffer_consumed.set()
    finally:
        stream.enable_acks = stream_enable_acks
        stream._processors.remove(add_to_buffer)


def tracked(stream: Any, max_: int, within: float) -> AsyncGenerator[list[Any], None]:
    """`take_events`, registered on the stream as faust registers its own (`_tracks_buffer_agen`), so the
    stream's `on_stop` closes it."""
    agen = take_events(stream, max_, within)
    stream._active_agens.add(agen)
    return agen
