"""Issue 14 #2 and #3: a dead letter always fits the record limit (oversized originals travel by reference:
position, sha256, size, first bytes), and a stage whose output cannot be published dead-letters its input
instead of looping; a stage the broker keeps refusing is reported (metric + readiness), never silent."""

from __future__ import annotations

import asyncio
import base64
import hashlib
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from aiokafka.errors import KafkaConnectionError
from hypothesis import given, settings
from hypothesis import strategies as st

from agents import stalls
from agents.pipeline import OutputTooLarge, Pipeline
from agents.settings import Settings
from schemas.codec import HEAD_BYTES, Rejected, dead_letter, decode, encode
from schemas.messages import DeadLetter

T = datetime(2026, 1, 1, tzinfo=UTC)
MIB = 1_048_576


def letter_size(
    size: int, max_bytes: int = MIB, key: bytes | None = b"tenant/sha256:x"
) -> tuple[int, DeadLetter]:
    value = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
    rejected = Rejected("inventory", "oversized", "record is too large " * 400, "scheduler.inventory@1")
    letter = dead_letter(rejected, "p.inventory", 2, 77, key, value, T, max_bytes)
    encoded = encode(letter)
    return len(encoded) + len(b"p.inventory"), letter


def test_a_small_limit_still_fits() -> None:
    for size in (0, 100, 1000, 3000, 10_000):
        total, _ = letter_size(size, 4000)
        assert total <= 4000, size


def test_records_between_three_quarters_and_one_mib_are_kept_by_reference() -> None:
    # 0.78-1 MiB: the base64 copy alone would exceed the limit (the defect); now the letter is small.
    for size in (int(0.70 * MIB), int(0.78 * MIB), int(0.9 * MIB), MIB, 3 * MIB):
        total, letter = letter_size(size)
        assert total <= MIB, size
        if letter.original is not None:
            value = bytes(range(256)) * (size // 256) + b"x" * (size % 256)
            assert letter.value_b64 is None
            assert letter.original.value_size == size
            assert letter.original.value_sha256 == hashlib.sha256(value).hexdigest()
            assert base64.b64decode(letter.original.value_head_b64) == value[:HEAD_BYTES]
        assert (letter.source_topic, letter.partition, letter.offset) == ("p.inventory", 2, 77)
    assert letter_size(1000)[1].value_b64 is not None  # small originals are still copied


@settings(max_examples=60, deadline=None)
@given(
    max_bytes=st.integers(80 * 1024, 300 * 1024),
    fraction=st.floats(0, 1.5),
    key_size=st.integers(0, 20_000),
)
def test_a_dead_letter_always_fits_the_limit(max_bytes: int, fraction: float, key_size: int) -> None:
    total, letter = letter_size(int(max_bytes * fraction), max_bytes, b"k" * key_size)
    assert total <= max_bytes
    # and it decodes as a dead letter again
    decoded = decode("deadletter", b"p.inventory", encode(letter), max_bytes)
    assert not isinstance(decoded, Rejected)


class Topic:
    def __init__(self, name: str) -> None:
        self.name = name
        self.sent: list[tuple[bytes | None, bytes | None]] = []

    async def send(self, *, key: Any, value: Any, partition: Any, force: bool) -> asyncio.Future[None]:
        self.sent.append((key, value))
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut


class Event:
    def __init__(self, value: bytes) -> None:
        self.key = b"k"
        self.value = value
        self.message = SimpleNamespace(topic="job-results", partition=1, offset=9, timestamp=0)


def pipeline(max_bytes: int = 10_000) -> tuple[Pipeline, dict[str, Topic]]:
    topics = {name: Topic(name) for name in ("deadletter", "events.signed")}
    pipe = Pipeline(app=None, settings=Settings(max_message_bytes=max_bytes))  # type: ignore[arg-type]
    pipe.topics.update(topics)  # type: ignore[arg-type]
    return pipe, topics


async def test_an_output_over_the_limit_dead_letters_its_input_as_unpublishable() -> None:
    pipe, topics = pipeline()

    async def handle(event: Any) -> None:
        pipe.out("events.signed", "k", b"x" * 20_000)  # raises before anything is sent

    await pipe._handle("signer", handle, Event(b"{}"))
    assert topics["events.signed"].sent == []
    ((_, value),) = topics["deadletter"].sent
    letter = orjson.loads(value or b"")
    assert letter["reason"] == "unpublishable"
    assert (letter["partition"], letter["offset"]) == (1, 9)
    assert "record limit is 10000" in letter["error"]


def test_output_too_large_names_the_topic_and_sizes() -> None:
    pipe, _ = pipeline(100)
    with pytest.raises(OutputTooLarge, match=r"output to 'events.signed' would be 201 bytes"):
        pipe.out("events.signed", "k", b"x" * 200)


async def test_a_broker_that_keeps_refusing_is_an_alert_not_a_silent_loop() -> None:
    pipe, _ = pipeline()
    calls = 0

    async def handle(event: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise KafkaConnectionError("broker away")

    import agents.pipeline as pipeline_module

    real_sleep = pipeline_module.asyncio.sleep
    seen: list[tuple[bool, str]] = []

    async def no_wait(_: float) -> None:
        seen.append(await stalls.readiness())
        await real_sleep(0)

    pipeline_module.asyncio.sleep = no_wait  # type: ignore[assignment]
    try:
        await pipe._handle("signer", handle, Event(b"{}"))
    finally:
        pipeline_module.asyncio.sleep = real_sleep
    assert seen
    assert seen[0][0] is False
    assert "signer" in seen[0][1]
    stalls.clear("signer")  # what Pipeline.run does once the record's outputs are acked
    assert await stalls.readiness() == (True, "publishing")


async def test_a_failure_finishing_input_is_retried_and_a_cancel_withholds_the_acks() -> None:
    import agents.pipeline as pipeline_module

    pipe, _ = pipeline()
    calls = 0

    async def flaky() -> None:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise RuntimeError("changelog topic not there yet")

    real_sleep = pipeline_module.asyncio.sleep

    async def no_wait(_: float) -> None:
        await real_sleep(0)

    pipeline_module.asyncio.sleep = no_wait  # type: ignore[assignment]
    try:
        events = [Event(b"{}"), Event(b"{}")]
        await pipe._until_done("runs", events, flaky)
        assert calls == 3
        assert not any(e.message.__dict__.get("acked") for e in events)

        async def forever() -> None:
            await real_sleep(3600)

        task = asyncio.create_task(pipe._until_done("runs", events, forever))
        await real_sleep(0.01)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # faust's finally-ack is now a no-op: the offsets are never committed by this process
        assert all(e.message.acked for e in events)
    finally:
        pipeline_module.asyncio.sleep = real_sleep
        stalls.clear("runs")
