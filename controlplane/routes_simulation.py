"""Policy simulation (``POST /api/v1/policies/simulations``): what would a candidate policy change?

Read-model mode: the tenant's selected images' live findings judged by the candidate rules (what failed
live comes from the explain traces). Nothing live is touched; the result is produced to the
``simulations`` topic, where the signer turns it into a signed ``simulation-completed`` event, and is
answered inline. The same request over the same state gives the same simulation id and bytes.

Callback: with ``callback: {url, secret}`` the canonical simulation bytes are POSTed to ``url`` once the
simulation is terminal (here: right after the answer), signed ``X-Stella-Signature: sha256=<hmac>`` with the
request's own secret (never stored, never in the event), with ``X-Stella-Event-Id`` (sha256 of the body)
for the receiver to dedupe retries. Delivery is retried a few times, then logged and given up.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from typing import Annotated, Any

import httpx
from fastapi import APIRouter, BackgroundTasks, Header
from pydantic import AnyHttpUrl, BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from controlplane.auth import sign_body
from controlplane.deps import RuntimeDep, Writer
from controlplane.errors import ApiError
from projections.fold import IMAGES, Document
from projections.simulation import simulate_documents
from projections.store import MAX_PAGE, After, ProjectionStore
from schemas.canonical import dumps
from schemas.codec import encode
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
    """Simulate ``rules`` over the selected images; the answer holds the simulation (per image verdict
    live -> simulated, findings newly failing / passing, totals) and the position of its event."""
    tenant = principal.tenant
    docs = await rt.db(lambda s: _tenant_images(s, tenant))
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
