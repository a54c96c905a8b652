"""Unauthenticated endpoints: liveness, readiness, metrics, public keys."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest
from starlette.concurrency import run_in_threadpool

from controlplane.deps import RuntimeDep
from controlplane.errors import ApiError, JsonResponse, error_response
from signing.keys import KeyFileError, load_public_keys, public_key_document

router = APIRouter()


@router.get("/healthz")
@router.get("/api/v1/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", response_model=None)
@router.get("/api/v1/readyz", response_model=None)
async def readyz(rt: RuntimeDep) -> JsonResponse:
    checks: dict[str, str] = {}
    checks["kafka"] = "ok" if rt.publisher_started and await rt.publisher.ready() else "unreachable"
    try:
        # Bounded: a stalled database makes the API not ready, it must not hang the probe.
        await asyncio.wait_for(run_in_threadpool(rt.read_models.ping), rt.config.db_timeout_seconds)
        checks["mongo"] = "ok"
    except Exception:
        checks["mongo"] = "unreachable"
    if all(v == "ok" for v in checks.values()):
        return JsonResponse({"status": "ready", "checks": checks})
    down = ", ".join(k for k, v in sorted(checks.items()) if v != "ok")
    return error_response(503, "not_ready", f"not ready: {down} unreachable", details=checks)


@router.get("/metrics")
@router.get("/api/v1/metrics")
async def metrics(rt: RuntimeDep) -> Response:
    """The project-wide metrics (default registry: ``scheduler_api_*`` feed the dashboard's API panels),
    then the app's own ``stella_api_*`` registry. The names do not overlap, so one exposition holds both."""
    body = generate_latest(REGISTRY)
    if rt.metrics.registry is not REGISTRY:
        body += generate_latest(rt.metrics.registry)
    return Response(body, media_type=CONTENT_TYPE_LATEST)


@router.get("/api/v1/keys")
async def keys(rt: RuntimeDep) -> dict[str, Any]:
    """The signers' public keys (DSSE verification; several during a rotation), sorted by keyid."""
    path = rt.settings.public_keys
    if not path:
        return {"keys": []}
    try:
        loaded = await run_in_threadpool(load_public_keys, path)
    except KeyFileError as exc:
        raise ApiError(500, "keys_unavailable", str(exc)) from None
    return {"keys": [{**public_key_document(k), "use": "sig"} for _, k in sorted(loaded.items())]}
