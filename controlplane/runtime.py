"""What every request handler reaches through ``request.app.state.runtime``: the settings, the backends
(publisher, read models), access control, metrics and the per-process caches. Its own module so the route
modules (through controlplane.deps) and the app factory both import it without importing each other."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from fastapi import Request
from pymongo.errors import PyMongoError
from starlette.concurrency import run_in_threadpool

from agents.settings import Settings
from agents.topology import topic_names
from controlplane.auth import AccessControl
from controlplane.backends import Produced, Publisher, ReadModels
from controlplane.config import ApiConfig
from controlplane.errors import ApiError
from controlplane.middleware import Metrics
from controlplane.paging import MinPosition
from controlplane.ratelimit import RateLimiter
from projections.store import ProjectionStore

log = logging.getLogger("controlplane")

T = TypeVar("T")
RETRY_DB = {"Retry-After": "2"}


class IdempotencyCache:
    """Responses of writes sent with an ``Idempotency-Key``, per tenant, in memory (bounded, LRU)."""

    def __init__(self, capacity: int = 10_000) -> None:
        self.capacity = capacity
        self._items: dict[tuple[str, str, str], tuple[str, dict[str, Any]]] = {}

    def get(self, tenant: str, route: str, key: str) -> tuple[str, dict[str, Any]] | None:
        item = self._items.pop((tenant, route, key), None)
        if item is not None:
            self._items[(tenant, route, key)] = item
        return item

    def put(self, tenant: str, route: str, key: str, fingerprint: str, response: dict[str, Any]) -> None:
        self._items[(tenant, route, key)] = (fingerprint, response)
        while len(self._items) > self.capacity:
            self._items.pop(next(iter(self._items)))


@dataclass
class Runtime:
    settings: Settings
    config: ApiConfig
    publisher: Publisher
    read_models: ReadModels
    access: AccessControl
    metrics: Metrics
    clock: Callable[[], datetime]
    limiter: RateLimiter
    idempotency: IdempotencyCache = field(default_factory=IdempotencyCache)
    publisher_started: bool = False
    publisher_error: str = ""
    _starter: asyncio.Task[None] | None = None

    def topic(self, logical: str) -> str:
        return self.settings.topic(logical)

    def known_topics(self) -> set[str]:
        return {self.settings.topic(name) for name in topic_names("")}

    async def db(self, fn: Callable[[ProjectionStore], T]) -> T:
        """Run a read-model call in the thread pool; database trouble becomes 503."""

        def call() -> T:
            return fn(self.read_models.store())

        bound = self.config.db_timeout_seconds
        try:
            # The thread itself is bounded by the client's timeouts (MongoReadModels); this bounds the wait.
            return await asyncio.wait_for(run_in_threadpool(call), bound)
        except TimeoutError:
            log.warning("read model did not answer within %gs", bound)
            raise ApiError(
                503, "unavailable", f"the read-model database did not answer within {bound:g}s", RETRY_DB
            ) from None
        except PyMongoError as exc:
            log.warning("read model unavailable: %s", type(exc).__name__)
            raise ApiError(503, "unavailable", "the read-model database is unavailable", RETRY_DB) from None

    async def produce(self, records: list[tuple[str, str, bytes | None, bytes | None]]) -> list[Produced]:
        """``(logical topic, real topic, key, value)`` records, acknowledged by every in-sync replica."""
        limit = self.settings.max_message_bytes
        for logical, _, key, value in records:
            size = len(key or b"") + len(value or b"")
            if size > limit:
                # Refused here: the broker would refuse it anyway, and a retry would not help (413, not 503).
                message = f"the {logical} message would be {size} bytes; the record limit is {limit}"
                raise ApiError(413, "payload_too_large", message)
        if not self.publisher_started:
            raise ApiError(503, "unavailable", "Kafka is not connected yet", {"Retry-After": "2"})
        try:
            produced = await self.publisher.send_many([(t, k, v) for _, t, k, v in records])
        except Exception as exc:
            log.warning("produce failed: %r", exc)
            raise ApiError(
                503, "unavailable", "Kafka did not acknowledge the message", {"Retry-After": "2"}
            ) from None
        for logical, *_ in records:
            self.metrics.produced.labels(logical).inc()
        return produced

    async def wait_for(self, positions: list[MinPosition]) -> None:
        """Wait (bounded) until the projector's checkpoints reach every position."""
        known = self.known_topics()
        for pos in positions:
            if pos.topic not in known:
                raise ApiError(422, "invalid_min_position", f"unknown topic {pos.topic!r}")
            if pos.partition >= self.settings.partitions:
                # Refused at once: waiting could never succeed.
                raise ApiError(
                    422,
                    "invalid_min_position",
                    f"{pos.topic} has partitions 0-{self.settings.partitions - 1}, not {pos.partition}",
                )
        if not positions:
            return
        group = self.config.projector_group
        started = time.monotonic()
        deadline = started + self.config.min_position_timeout_seconds
        delay = 0.05
        pending = list(positions)
        while True:
            still: list[MinPosition] = []
            for pos in pending:
                done = await self.db(_checkpoint_reader(group, pos))
                if done is None or done < pos.offset:
                    still.append(pos)
            pending = still
            if not pending:
                self.metrics.min_position_wait.observe(time.monotonic() - started)
                return
            if time.monotonic() >= deadline:
                first = pending[0]
                raise ApiError(
                    503,
                    "not_caught_up",
                    f"the read models have not reached {first.topic}:{first.partition}:{first.offset} "
                    f"within {self.config.min_position_timeout_seconds:g}s",
                    {"Retry-After": "1"},
                )
            await asyncio.sleep(min(delay, max(deadline - time.monotonic(), 0.0)))
            delay = min(delay * 2, 0.5)

    async def start_publisher(self) -> None:
        while True:
            try:
                await self.publisher.start()
                self.publisher_started = True
                self.publisher_error = ""
                log.info("Kafka producer started (%s)", self.settings.kafka_bootstrap)
                return
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.publisher_error = f"{type(exc).__name__}: {exc}"
                log.warning("Kafka producer not started, retrying: %s", self.publisher_error)
                await asyncio.sleep(2.0)


def _checkpoint_reader(group: str, pos: MinPosition) -> Callable[[ProjectionStore], int | None]:
    def read(store: ProjectionStore) -> int | None:
        return store.get_checkpoint(group, pos.topic, pos.partition)

    return read


def runtime_of(request: Request) -> Runtime:
    rt = request.app.state.runtime
    assert isinstance(rt, Runtime)
    return rt
