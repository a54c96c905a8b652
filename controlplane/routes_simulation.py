"""Policy simulation (``POST /api/v1/policies/simulations``): what would a candidate policy change?
docs/simulation.md.

Queue mode (the default): the selected images (from the images read model) become a ``SimulationRequest``
on ``simulation-requests``; the worker runs it as a run (id = the simulation id) of background jobs in the
queue's simulation lane, evaluated with its current knowledge and the candidate rules, and emits the
signed ``simulation-completed`` once the run is terminal. Answered 202 with the id; ``GET
.../simulations/{id}`` follows it, ``POST .../simulations/{id}/cancel`` cancels its run.

Read-model mode (``"mode": "read-model"``): the tenant's selected images' live findings judged by the
candidate rules (what failed live comes from the explain traces), answered inline and produced to
``simulations``. Nothing live is touched in either mode; the same request (and idempotency key) over the
same state gives the same simulation id and bytes.

Callback: with ``callback: {url, secret}`` the canonical simulation bytes are POSTed to ``url`` once the
simulation is terminal, signed ``X-Stella-Signature: t=..,n=..,sha256=<hmac>`` with the request's own
secret (never stored, never in an event), with ``X-Stella-Event-Id`` (sha256 of the body) for the
receiver to dedupe retries. Delivery is retried a few times, then logged and given up. In queue mode this
API process follows the read model until the simulation is terminal: a restart of the API before then
loses the callback (the result itself is not lost: read it, or its signed event).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import uuid
from typing import Annotated, Any, Literal

import httpx
from fastapi import APIRouter, BackgroundTasks, Body, Header, Query
from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from controlplane.auth import sign_body
from controlplane.deps import Consistent, Manager, Reader, RuntimeDep, Writer
from controlplane.errors import ApiError
from controlplane.paging import decode_cursor, encode_cursor
from controlplane.routes_read import owned
from controlplane.routes_write import CancelRequest, cancel_run, content_id, idempotent
from projections.fold import IMAGES, RUNS, SIMULATIONS, Document
from projections.simulation import completed_of, request_documents, simulate_documents
from projections.store import MAX_PAGE, After, ProjectionStore
from schemas.canonical import dumps
from schemas.codec import encode
from schemas.keys import message_key
from schemas.messages import PolicyRules, Selector, SimulationCompleted

log = logging.getLogger("stella.api.simulations")

router = APIRouter(prefix="/api/v1")

IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", max_length=200)]
SIMULATION_IMAGE_CAP = 10_000  # one synchronous answer; a larger estate needs the queue-backed run


CALLBACK_ATTEMPTS = 3


class Callback(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    url: AnyHttpUrl
    secret: str = Field(min_length=16, max_length=512, repr=False)


class SimulationRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    rules: PolicyRules
    selector: Selector = Selector(all=True)
    callback: Callback | None = None
    mode: Literal["queue", "read-model"] = "queue"


def callback_request(result: SimulationCompleted, secret: str) -> tuple[bytes, dict[str, str]]:
    """The callback's body (canonical JSON of the simulation) and headers: the event id and the same
    signature scheme as feed webhooks (controlplane.webhook_sig: timestamp, nonce and the kind
    ``simulation-completed`` under the HMAC), so a receiver can refuse stale or replayed deliveries."""
    body = dumps(result.model_dump(mode="json", by_alias=True))
    return body, {
        "Content-Type": "application/json",
        "X-Stella-Signature": sign_body(secret.encode(), body, "simulation-completed", time.time()),
        "X-Stella-Event-Id": hashlib.sha256(body).hexdigest(),
    }


async def notify(url: str, body: bytes, headers: dict[str, str]) -> bool:
    """POST the callback; 2xx is delivered, anything else is retried with a growing pause, then logged."""
    async with httpx.AsyncClient(timeout=10.0) as client:
        for attempt in range(1, CALLBACK_ATTEMPTS + 1):
            try:
                response = await client.post(url, content=body, headers=headers)
                if 200 <= response.status_code < 300:
                    return True
                problem = f"HTTP {response.status_code}"
            except httpx.HTTPError as exc:
                problem = f"{type(exc).__name__}: {exc}"
            log.warning("simulation callback to %s failed (attempt %d): %s", url, attempt, problem)
            if attempt < CALLBACK_ATTEMPTS:
                await asyncio.sleep(attempt)
    return False


def _tenant_images(store: ProjectionStore, tenant: str) -> list[Document]:
    docs: list[Document] = []
    after: After | None = None
    while True:
        page = store.find(IMAGES, {"tenant": tenant}, after=after, limit=MAX_PAGE)
        docs.extend(page.items)
        if len(docs) > SIMULATION_IMAGE_CAP:
            raise ApiError(
                422,
                "too_many_images",
                f"more than {SIMULATION_IMAGE_CAP} images: narrow the selector's tenant",
            )
        if page.next_after is None:
            return docs
        after = page.next_after


@router.post("/policies/simulations", status_code=202)
async def post_simulation(
    body: SimulationRequest,
    principal: Writer,
    rt: RuntimeDep,
    background: BackgroundTasks,
    idempotency_key: IdempotencyKey = None,
) -> dict[str, Any]:
    """Simulate ``rules`` over the selected images. Queue mode: 202 with the simulation id (= its run
    id), followed by GET .../simulations/{id}. Read-model mode: the simulation itself (per image verdict
    live -> simulated, findings newly failing / passing, totals) and the position of its event."""
    tenant = principal.tenant
    docs = await rt.db(lambda s: _tenant_images(s, tenant))
    if body.mode == "queue":
        req = request_documents(
            docs,
            tenant,
            body.selector,
            body.rules,
            at=rt.clock(),
            nonce=idempotency_key or uuid.uuid4().hex,
            requested_by=principal.name,
        )
        callback = body.callback

        async def make() -> dict[str, Any]:
            (sent,) = await rt.produce(
                [("simulation-requests", rt.topic("simulation-requests"), message_key(req), encode(req))]
            )
            if callback is not None:
                _follow(rt, req.simulation_id, str(callback.url), callback.secret)
            return {
                "simulation_id": req.simulation_id,
                "run_id": req.simulation_id,
                "mode": "queue",
                "state": "running",
                "images": len(req.images),
                "callback": "scheduled" if callback is not None else None,
                "position": sent.as_dict(),
                "min_position": sent.text(),
            }

        # a repeat with the same key answers the first response: one request, one callback follower
        asked = content_id("simulation", req.simulation_id, str(callback.url) if callback else "")
        return await idempotent(rt, tenant, "simulations", idempotency_key, asked, make)
    result = await run_in_threadpool(
        simulate_documents, docs, tenant, body.selector, body.rules, nonce=idempotency_key or ""
    )
    key = tenant.encode()
    (produced,) = await rt.produce([("simulations", rt.topic("simulations"), key, encode(result))])
    if body.callback is not None:
        payload, headers = callback_request(result, body.callback.secret)
        background.add_task(notify, str(body.callback.url), payload, headers)
    return {
        "simulation_id": result.simulation_id,
        "callback": "scheduled" if body.callback is not None else None,
        "simulation": result.model_dump(mode="json", by_alias=True),
        "position": produced.as_dict(),
        "min_position": produced.text(),
    }


FOLLOW_POLL_SECONDS = 1.0
FOLLOW_MAX_SECONDS = 24 * 3600.0
_following: set[asyncio.Task[None]] = set()


def _follow(rt: Any, simulation_id: str, url: str, secret: str) -> None:
    """Notify ``url`` once the queued simulation is terminal (read from the simulations read model)."""

    async def follow() -> None:
        deadline = time.monotonic() + FOLLOW_MAX_SECONDS
        while time.monotonic() < deadline:
            try:
                doc = await rt.db(lambda s: s.get(SIMULATIONS, simulation_id))
            except ApiError:  # the read models are slow right now: ask again
                doc = None
            result = completed_of(doc) if doc is not None else None
            if result is not None:
                payload, headers = callback_request(result, secret)
                await notify(url, payload, headers)
                return
            await asyncio.sleep(FOLLOW_POLL_SECONDS)
        log.warning(
            "simulation %s: not terminal after %ss, callback dropped", simulation_id, FOLLOW_MAX_SECONDS
        )

    task = asyncio.get_running_loop().create_task(follow())
    _following.add(task)
    task.add_done_callback(_following.discard)


def simulation_view(doc: Document, run: Document | None) -> dict[str, Any]:
    """A simulation as the API serves it: the document, and while it runs its run's progress."""
    view = {k: v for k, v in doc.items() if k not in ("_id", "_pos")}
    view["simulation_id"] = doc["_id"]
    if run is not None:
        view["run"] = {
            k: run.get(k) for k in ("state", "jobs_total", "jobs_done", "jobs_failed", "jobs_skipped")
        }
    return view


@router.get("/policies/simulations")
async def list_simulations(
    principal: Reader,
    rt: RuntimeDep,
    _: None = Consistent,
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 100,
    cursor: Annotated[str | None, Query(max_length=2048)] = None,
) -> dict[str, Any]:
    """The tenant's simulations (both modes), by id."""
    after = decode_cursor("simulations", cursor)
    page = await rt.db(lambda s: s.find(SIMULATIONS, {"tenant": principal.tenant}, after=after, limit=limit))
    return {
        "items": [simulation_view(d, None) for d in page.items],
        "next_cursor": encode_cursor("simulations", page.next_after),
    }


@router.get("/policies/simulations/{simulation_id}")
async def get_simulation(
    simulation_id: str, principal: Reader, rt: RuntimeDep, _: None = Consistent
) -> dict[str, Any]:
    doc = owned(
        await rt.db(lambda s: s.get(SIMULATIONS, simulation_id)),
        principal.tenant,
        "simulation",
        simulation_id,
    )
    run = await rt.db(lambda s: s.get(RUNS, simulation_id))
    return simulation_view(doc, run)


@router.post("/policies/simulations/{simulation_id}/cancel", status_code=202)
async def cancel_simulation(
    simulation_id: str,
    principal: Manager,
    rt: RuntimeDep,
    body: Annotated[CancelRequest | None, Body()] = None,
) -> dict[str, Any]:
    """Cancel a queued simulation: its run is cancelled like any run (queued jobs are skipped; the
    simulation completes as ``cancelled`` with the images evaluated so far)."""
    owned(
        await rt.db(lambda s: s.get(SIMULATIONS, simulation_id)),
        principal.tenant,
        "simulation",
        simulation_id,
    )
    return await cancel_run(simulation_id, principal, rt, body)
