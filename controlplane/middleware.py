"""ASGI middleware: request body limit (413 before the whole body is read) and request metrics."""

from __future__ import annotations

import asyncio
import time

from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from controlplane.errors import ApiError, error_response
from telemetry.metrics import observe_api_request


class BodyTooLarge(ApiError):
    def __init__(self, limit: int) -> None:
        super().__init__(413, "payload_too_large", f"request body exceeds {limit} bytes")


DRAIN_BYTES = 8 * 1_048_576
DRAIN_SECONDS = 2.0


async def drain(receive: Receive, more: bool = True) -> None:
    """Read and discard what is left of a refused body (bounded), so the client reads the 413 instead of a
    connection reset; nothing is kept in memory."""
    if not more:
        return
    budget = DRAIN_BYTES
    deadline = time.monotonic() + DRAIN_SECONDS
    while budget > 0:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return
        try:
            message = await asyncio.wait_for(receive(), remaining)
        except TimeoutError:
            return
        if message["type"] != "http.request":
            return
        budget -= len(message.get("body", b""))
        if not message.get("more_body", False):
            return


class BodyLimitMiddleware:
    """Refuses a declared Content-Length over the limit at once (without buffering the body); counts
    streamed bytes otherwise and stops (raising 413 into the handler) as soon as the limit is passed."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = -1
                if declared < 0:
                    response = error_response(
                        400, "bad_request", "invalid Content-Length", {"Connection": "close"}
                    )
                    await response(scope, receive, send)
                    return
                if declared > self.max_bytes:
                    if declared <= DRAIN_BYTES:
                        await drain(receive)
                    message = f"request body of {declared} bytes exceeds the limit of {self.max_bytes} bytes"
                    response = error_response(413, "payload_too_large", message, {"Connection": "close"})
                    await response(scope, receive, send)
                    return
        seen = 0
        limit = self.max_bytes

        async def limited() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    await drain(receive, bool(message.get("more_body", False)))
                    raise BodyTooLarge(limit)
            return message

        await self.app(scope, limited, send)


class Metrics:
    """The API's own prometheus metrics, on their own registry (several apps may live in one process).

    Request counts and latencies are also recorded in the project-wide metrics (``telemetry.metrics``:
    ``scheduler_api_requests_total``, ``scheduler_api_request_seconds``) that the dashboard reads; ``/metrics``
    exposes both registries."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.requests = Counter(
            "stella_api_requests_total",
            "HTTP requests by route template, method and status",
            ["route", "method", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "stella_api_request_duration_seconds",
            "HTTP request latency by route template",
            ["route", "method"],
            registry=self.registry,
        )
        self.produced = Counter(
            "stella_api_messages_produced_total",
            "Messages the API produced to Kafka, by logical topic",
            ["topic"],
            registry=self.registry,
        )
        self.webhook_rejected = Counter(
            "stella_api_webhook_rejected_total",
            "Feed webhook requests refused, by reason",
            ["reason"],
            registry=self.registry,
        )
        self.min_position_wait = Histogram(
            "stella_api_min_position_wait_seconds",
            "Time reads waited for the projection to reach min_position",
            registry=self.registry,
        )


class MetricsMiddleware:
    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def capture(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, capture)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            method = scope.get("method", "GET")
            elapsed = time.perf_counter() - started
            self.metrics.requests.labels(template, method, str(status)).inc()
            self.metrics.latency.labels(template, method).observe(elapsed)
            observe_api_request(template, method, status, elapsed)
