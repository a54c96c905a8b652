"""Shared aiokafka helpers: producer / consumer / admin that fail with a helpful InfraError.

Every helper turns "cannot connect" into ``InfraError`` (exit 3) whose message says to run ``make up`` or set
KAFKA_BOOTSTRAP. Nothing here joins a consumer group: consumers are either group-less (reading, verifying)
or used only to commit offsets for a stopped group (replay).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Coroutine, Iterable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaConnectionError, KafkaError, KafkaTimeoutError

from cli.output import CliError, InfraError, kafka_hint

T = TypeVar("T")
REQUEST_TIMEOUT_MS = 15000


def default_bootstrap(value: str | None) -> str:
    if value:
        return value
    from agents.settings import Settings

    return Settings.from_env().kafka_bootstrap


def default_prefix(value: str | None) -> str:
    if value is not None:
        return value
    from agents.settings import Settings

    return Settings.from_env().topic_prefix


def run(coro: Coroutine[Any, Any, T], bootstrap: str) -> T:
    """``asyncio.run`` with connection failures turned into InfraError."""
    # aiokafka logs each failed connect at ERROR; without any handler Python prints it raw to stderr, next
    # to our own clearer message. A NullHandler stops that fallback and leaves configured logging alone.
    logging.getLogger("aiokafka").addHandler(logging.NullHandler())
    try:
        return asyncio.run(coro)
    except (KafkaConnectionError, KafkaTimeoutError) as exc:
        raise InfraError(kafka_hint(bootstrap, exc)) from None
    except OSError as exc:
        raise InfraError(kafka_hint(bootstrap, exc)) from None


async def _start(client: Any, bootstrap: str) -> None:
    try:
        await client.start()
    except (KafkaConnectionError, KafkaTimeoutError, OSError) as exc:
        # closing a client that never connected can fail in odd ways
        with contextlib.suppress(Exception):
            await client.stop() if hasattr(client, "stop") else await client.close()
        raise InfraError(kafka_hint(bootstrap, exc)) from None


@asynccontextmanager
async def producer(bootstrap: str) -> AsyncIterator[AIOKafkaProducer]:
    """An idempotent producer with acks=all."""
    client = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        enable_idempotence=True,
        request_timeout_ms=REQUEST_TIMEOUT_MS,
        max_request_size=4 * 1024 * 1024,
    )
    await _start(client, bootstrap)
    try:
        yield client
    finally:
        await client.stop()


@asynccontextmanager
async def admin(bootstrap: str) -> AsyncIterator[AIOKafkaAdminClient]:
    client = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=REQUEST_TIMEOUT_MS)
    await _start(client, bootstrap)
    try:
        yield client
    finally:
        await client.close()


@asynccontextmanager
async def consumer(bootstrap: str, group_id: str | None = None) -> AsyncIterator[AIOKafkaConsumer]:
    """A consumer that never subscribes (callers ``assign``) and never auto-commits."""
    client = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=group_id,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        request_timeout_ms=REQUEST_TIMEOUT_MS,
    )
    await _start(client, bootstrap)
    try:
        yield client
    finally:
        await client.stop()


def missing_topic_message(names: Iterable[str], prefix: str) -> str:
    listed = ", ".join(sorted(names))
    flag = f" --prefix {prefix}" if prefix else ""
    return (
        f"topic(s) {listed} do not exist on the broker (topics are never auto-created).\n"
        f"Create them with `.venv/bin/python -m agents.topology_admin{flag}`, or check --topic-prefix / "
        "STELLA_TOPIC_PREFIX."
    )


async def require_topics(bootstrap: str, names: Iterable[str], prefix: str = "") -> None:
    wanted = set(names)
    async with admin(bootstrap) as client:
        existing = set(await client.list_topics())
    missing = wanted - existing
    if missing:
        raise InfraError(missing_topic_message(missing, prefix))


async def partitions_of(client: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    """The topic's partitions (refreshing metadata once); CliError when the topic does not exist."""
    parts = client.partitions_for_topic(topic)
    if not parts:
        await client._client.force_metadata_update()
        parts = client.partitions_for_topic(topic)
    if not parts:
        raise CliError(f"topic {topic!r} does not exist", 3)
    return [TopicPartition(topic, p) for p in sorted(parts)]


def describe_kafka_error(exc: KafkaError) -> str:
    return f"{type(exc).__name__}: {exc}"
