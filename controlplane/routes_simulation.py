"""Policy simulation (``POST /api/v1/policies/simulations``): what would a candidate policy change?

Read-model mode: the tenant's selected images' live findings judged by the candidate rules (what failed
live comes from the explain traces). Nothing live is touched; the result is produced to the
``simulations`` topic, where the signer turns it into a signed ``simulation-completed`` event, and is
answered inline. The same request over the same state gives the same simulation id and bytes.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header
from pydantic import BaseModel, ConfigDict
from starlette.concurrency import run_in_threadpool

from controlplane.deps import RuntimeDep, Writer
from controlplane.errors import ApiError
from projections.fold import IMAGES, Document
from projections.simulation import simulate_documents
from projections.store import MAX_PAGE, After, ProjectionStore
from schemas.codec import encode
from schemas.messages import PolicyRules, Selector

router = APIRouter(prefix="/api/v1")

IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", max_length=200)]
SIMULATION_IMAGE_CAP = 10_000  # one synchronous answer; a larger estate needs the queue-backed run


class SimulationRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    rules: PolicyRules
    selector: Selector = Selector(all=True)


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
    body: SimulationRequest, principal: Writer, rt: RuntimeDep, idempotency_key: IdempotencyKey = None
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
    return {
        "simulation_id": result.simulation_id,
        "simulation": result.model_dump(mode="json", by_alias=True),
        "position": produced.as_dict(),
        "min_position": produced.text(),
    }
