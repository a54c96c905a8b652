"""agents/take.py: faust's take_events without the idle poll. Driven through a stand-in for the few Stream
members it uses (the passive reader that calls the buffering processor is faust's; here the test calls it)."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import faust

from agents.take import take_events, tracked


@dataclass
class Event:
    value: int


@dataclass
class StandInStream:
    enable_acks: bool = True
    current_event: Event | None = None
    should_stop: bool = False
    waits: int = 0
    acked: list[int] = field(default_factory=list)
    _processors: list[Any] = field(default_factory=list)
    _active_agens: set[Any] = field(default_factory=set)

    @property
    def channel(self) -> AsyncIterator[Any]:
        async def nothing() -> AsyncIterator[Any]:
            if False:  # pragma: no cover
                yield None

        return nothing()

    def add_processor(self, processor: Any) -> None:
        self._processors.append(processor)

    def _enable_passive(self, channel_it: Any) -> None:
        pass

    async def wait_for_stopped(self, event: asyncio.Event, timeout: float | None = None) -> None:
        self.waits += 1
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)

    async def wait(self, event: asyncio.Event) -> None:
        await event.wait()

    async def ack(self, event: Event) -> None:
        self.acked.append(event.value)

    async def feed(self, value: int) -> None:
        """What faust's passive reader does with each record: set it current and run the processors."""
        self.current_event = Event(value)
        for processor in self._processors:
            await processor(value)


async def test_an_idle_stream_does_not_wake_its_agent() -> None:
    stream = StandInStream()
    agen = take_events(stream, 10, 0.005)
    task = asyncio.ensure_future(agen.__anext__())
    await asyncio.sleep(0.3)
    # faust's own take_events would have polled about 60 times by now
    assert stream.waits == 1
    task.cancel()


async def test_batches_hold_at_most_max_close_within_and_ack_after_the_body() -> None:
    stream = StandInStream()
    batches: list[tuple[list[int], float, list[int]]] = []

    async def consume() -> None:
        async for events in take_events(stream, 3, 0.05):
            batches.append(([e.value for e in events], time.monotonic(), list(stream.acked)))
            if sum(len(b[0]) for b in batches) == 7:
                return

    task = asyncio.ensure_future(consume())
    await asyncio.sleep(0.05)
    start = time.monotonic()
    for value in range(7):
        await stream.feed(value)
    await asyncio.wait_for(task, 5)
    assert [b[0] for b in batches] == [[0, 1, 2], [3, 4, 5], [6]]
    # each batch is seen before any of its own records is acked; the last one closes on `within`
    assert [b[2] for b in batches] == [[], [0, 1, 2], [0, 1, 2, 3, 4, 5]]
    assert batches[-1][1] - start < 1.0
    assert stream.acked[:6] == [0, 1, 2, 3, 4, 5]
    assert stream.enable_acks is True
    assert stream._processors == []


async def test_a_record_waits_at_most_about_within() -> None:
    stream = StandInStream()
    seen: list[float] = []

    async def consume() -> None:
        async for _ in take_events(stream, 100, 0.2):
            seen.append(time.monotonic())
            return

    task = asyncio.ensure_future(consume())
    await asyncio.sleep(0.05)
    start = time.monotonic()
    await stream.feed(1)
    await asyncio.wait_for(task, 5)
    assert 0.15 <= seen[0] - start < 2.0


def test_tracked_registers_the_generator_for_faust_to_close() -> None:
    stream = StandInStream()
    agen = tracked(stream, 1, 0.01)
    assert agen in stream._active_agens


def test_faust_still_polls_in_take_events() -> None:
    # When this fails, faust's take_events may wait for the first record itself: drop agents/take.py.
    source = inspect.getsource(faust.Stream.take_events)
    assert "await self.wait_for_stopped(" in source
    assert "timeout=timeout" in source
    assert "self._enable_passive(" in source
    assert "self._active_agens" in inspect.getsource(faust.streams)
