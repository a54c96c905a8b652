"""The HTTP control plane (docs/architecture.md §8): reads the MongoDB read models, produces to Kafka.

``create_app(settings, deps)`` builds the FastAPI app; ``controlplane.server.main`` runs it with uvicorn.
Every read is filtered by the caller's tenant; an id that belongs to another tenant answers 404, exactly
like an id that does not exist. Writes answer with the Kafka position they produced, and reads accept
``min_position=topic:partition:offset`` to wait until the projection has folded that far.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime

from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from agents.settings import Settings
from controlplane import (
    routes_feeds,
    routes_read,
    routes_schedules,
    routes_simulation,
    routes_system,
    routes_write,
)
from controlplane.auth import AccessControl, Principal
from controlplane.backends import KafkaPublisher, MongoReadModels, Publisher, ReadModels
from controlplane.config import ApiConfig
from controlplane.errors import install as install_errors
from controlplane.middleware import BodyLimitMiddleware, Metrics, MetricsMiddleware
from controlplane.ratelimit import RateLimiter
from controlplane.runtime import Runtime, runtime_of

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


def build_runtime(settings: Settings, deps: ApiDeps | None, config: ApiConfig | None) -> Runtime:
    deps = deps if deps is not None else ApiDeps()
    config = config if config is not None else ApiConfig.from_env(settings)
    publisher = deps.publisher or KafkaPublisher(
        settings.kafka_bootstrap, max_request_bytes=max(settings.max_message_bytes * 2, 1_048_576)
    )
    read_models = deps.read_models or MongoReadModels(
        settings.mongo_url, settings.mongo_db, timeout_ms=max(1, int(config.db_timeout_seconds * 1000))
    )
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
    app.include_router(routes_schedules.router)
    from controlplane.console.mount import install as install_console  # the console and /api/v1/stream

    install_console(app)
    # Outermost last: metrics see every answer, including the body limit's 413; the edge (authenticate
    # writes, then strict JSON) reads bodies only within the limit.
    from controlplane.guards import EdgeMiddleware

    app.add_middleware(EdgeMiddleware)
    app.add_middleware(BodyLimitMiddleware, max_bytes=rt.config.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=rt.metrics)
    return app


__all__ = ["API_PREFIX", "ApiDeps", "Principal", "Runtime", "create_app", "runtime_of", "utcnow"]
