"""The HTTP control plane (DESIGN.md §8): reads the MongoDB read models, produces to Kafka.

``create_app(settings, deps)`` builds the FastAPI app; ``controlplane.server.main`` runs it with uvicorn.
Every read is filtered by the caller's tenant; an id that belongs to another tenant answers 404, exactly
like an id that does not exist. Writes answer with the Kafka position they produced, and reads accept
``min_position=topic:partition:offset`` to wait until the projection has folded that far.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from fastapi import FastAPI, Request
from pymongo.errors import PyMongoError
from starlette.concurrency import run_in_threadpool

from agents.settings import Settings
from agents.topology import topic_names
from controlplane.auth import AccessControl, Principal
from controlplane.backends import KafkaPublisher, MongoReadModels, Produced, Publisher, ReadModels
from controlplane.config import ApiConfig
from controlplane.errors import ApiError
from controlplane.errors import install as install_errors
from controlplane.middleware import BodyLimitMiddleware, Metrics, MetricsMiddleware
from controlplane.paging import MinPosition
from controlplane.ratelimit import RateLimiter
from projections.store import ProjectionStore

log = logging.getLogger("controlplane")

T = TypeVar("T")
API_PREFIX = "/api/v1"


def utcnow() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


@dataclass
class ApiDeps:
    """What the app talks to. Anything left ``None`` is built from the settings at startup."""

    publisher: Publisher | None = None
    read_models: ReadModels | None = None
    access: AccessControl | None = None
    metrics: Metrics | None = None
    clock: Callable[[], datetime] = utcnow


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

        try:
            return await run_in_threadpool(call)
        except PyMongoError as exc:
            log.warning("read model unavailable: %s", type(exc).__name__)
            raise ApiError(503, "unavailable", "the read-model database is unavailable") from None

    async def produce(self, records: list[tuple[str, str, bytes | None, bytes | None]]) -> list[Produced]:
        """``(logical topic, real topic, key, value)`` records, acknowledged by every in-sync replica."""
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


def build_runtime(settings: Settings, deps: ApiDeps | None, config: ApiConfig | None) -> Runtime:
    deps = deps if deps is not None else ApiDeps()
    config = config if config is not None else ApiConfig.from_env(settings)
    publisher = deps.publisher or KafkaPublisher(
        settings.kafka_bootstrap, max_request_bytes=max(settings.max_message_bytes * 2, 1_048_576)
    )
    read_models = deps.read_models or MongoReadModels(settings.mongo_url, settings.mongo_db)
    access = deps.access or AccessControl(config.tokens_path, config.webhook_secret)
    return Runtime(
        settings=settings,
        config=config,
        publisher=publisher,
        read_models=read_models,
        access=access,
        metrics=deps.metrics or Metrics(),
        clock=deps.clock,
        limiter=RateLimiter(config.feed_rate_per_second, config.feed_burst),
    )


def create_app(settings: Settings, deps: ApiDeps | None = None, config: ApiConfig | None = None) -> FastAPI:
    from controlplane import routes_feeds, routes_read, routes_simulation, routes_system, routes_write

    rt = build_runtime(settings, deps, config)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        rt._starter = asyncio.create_task(rt.start_publisher())
        with contextlib.suppress(asyncio.TimeoutError):
            # Give the producer a moment so the first write does not race the connection.
            await asyncio.wait_for(asyncio.shield(rt._starter), 10.0)
        try:
            yield
        finally:
            if rt._starter is not None and not rt._starter.done():
                rt._starter.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await rt._starter
            if rt.publisher_started:
                await rt.publisher.stop()
                rt.publisher_started = False
            await run_in_threadpool(rt.read_models.close)

    app = FastAPI(
        title="stella-sched control plane",
        version="1",
        lifespan=lifespan,
        docs_url=f"{API_PREFIX}/docs",
        openapi_url=f"{API_PREFIX}/openapi.json",
        redoc_url=None,
    )
    app.state.runtime = rt
    install_errors(app)
    app.include_router(routes_system.router)
    app.include_router(routes_read.router)
    app.include_router(routes_write.router)
    app.include_router(routes_feeds.router)
    app.include_router(routes_simulation.router)
    # Outermost last: metrics see every answer, including the body limit's 413.
    app.add_middleware(BodyLimitMiddleware, max_bytes=rt.config.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=rt.metrics)
    return app


__all__ = ["API_PREFIX", "ApiDeps", "Principal", "Runtime", "create_app", "runtime_of", "utcnow"]
