"""POST endpoints: impact preview (no side effect), rechecks, runtime events, run cancel / retry, dead-letter
replay. Every write answers with the Kafka position it produced."""

from __future__ import annotations

import base64
import binascii
import hashlib
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Body, Header, Request
from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError
from starlette.concurrency import run_in_threadpool

from controlplane.backends import Produced
from controlplane.deps import Manager, Reader, RuntimeDep, Writer
from controlplane.errors import ApiError
from controlplane.idempotency import once
from controlplane.routes_read import owned_deadletter, owned_run
from controlplane.views import public
from ingest.detect import parse_file
from ingest.result import IngestError
from projections.fold import IMAGES, JOBS, Document
from projections.fold import image_meta as meta_of
from projections.store import MAX_PAGE, After, ProjectionStore
from schemas.canonical import dumps
from schemas.codec import encode
from schemas.digest import digest_problems
from schemas.keys import message_key
from schemas.messages import (
    TERMINAL_RUN_STATES,
    AdvisoryDelta,
    Inventory,
    JobKind,
    PriorityClass,
    Recheck,
    RunCancelRequested,
    RuntimeEvent,
    Selector,
    VexStatement,
)
from streams.preview import preview
from streams.tenants import selector_matches

router = APIRouter(prefix="/api/v1")

IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", max_length=200)]
PREVIEW_IMAGE_CAP = 10_000


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RecheckRequest(Strict):
    selector: Selector
    reason: str = Field("", max_length=2000)
    kind: JobKind = "reevaluate"
    priority: PriorityClass | None = None


class CancelRequest(Strict):
    reason: str = Field("", max_length=2000)


class RetryRequest(Strict):
    reason: str = Field("", max_length=2000)
    only_unfinished: StrictBool = True
    priority: PriorityClass | None = None


class SbomInput(Strict):
    document: dict[str, Any]
    image_digest: str | None = None
    repository: str | None = None


class PreviewRequest(Strict):
    selector: Selector | None = None
    sboms: list[SbomInput] = Field(default=[], max_length=500)
    advisories: list[dict[str, Any]] = Field(default=[], max_length=5000, description="OSV records")
    vex: list[dict[str, Any]] = Field(default=[], max_length=500, description="VEX documents")
    window_seconds: int = Field(30, ge=1, le=86_400)


def refuse_bad_digests(message: BaseModel) -> None:
    """422 naming every image digest that breaks the rule (schemas.digest, the one definition)."""
    bad = digest_problems(message)
    if bad:
        field, problem = bad[0]
        details = [{"field": f, "message": p} for f, p in bad[:20]]
        raise ApiError(422, "validation_error", f"{field}: {problem}", details=details)


def written(produced: Produced, **extra: Any) -> dict[str, Any]:
    return {**extra, "position": produced.as_dict(), "min_position": produced.text()}


def content_id(*parts: Any) -> str:
    return hashlib.sha256(dumps(list(parts))).hexdigest()


async def idempotent(
    rt: RuntimeDep, tenant: str, route: str, key: str | None, fingerprint: str, make: Any
) -> dict[str, Any]:
    """Run ``make()`` once per (tenant, route, Idempotency-Key), concurrent repeats included
    (``controlplane.idempotency``); a repeat with another body is a conflict."""
    return await once(rt.idempotency, tenant, route, key, fingerprint, make)


# ---------------------------------------------------------------- impact preview


def _all_images(store: ProjectionStore, tenant: str) -> tuple[list[Document], bool]:
    docs: list[Document] = []
    after: After | None = None
    while len(docs) < PREVIEW_IMAGE_CAP:
        page = store.find(IMAGES, {"tenant": tenant}, after=after, limit=MAX_PAGE)
        docs.extend(page.items)
        if page.next_after is None:
            return docs, False
        after = page.next_after
    return docs[:PREVIEW_IMAGE_CAP], True


def _errors(errors: list[IngestError]) -> list[dict[str, str]]:
    return [
        {"source": e.source, "field": e.field, "message": e.message} for e in errors if e.level == "error"
    ]


def _full_preview(body: PreviewRequest, tenant: str, now: Any) -> dict[str, Any]:
    inventories: list[Inventory] = []
    advisories: list[AdvisoryDelta] = []
    vex: list[VexStatement] = []
    problems: list[dict[str, str]] = []
    for i, sbom in enumerate(body.sboms):
        result = parse_file(
            "sbom",
            orjson.dumps(sbom.document),
            f"sboms[{i}]",
            tenant=tenant,
            image_digest=sbom.image_digest,
            repository=sbom.repository,
        )
        problems += _errors(result.errors)
        inventories += [m for m in result.messages if isinstance(m, Inventory)]
    for i, doc in enumerate(body.advisories):
        result = parse_file("osv", orjson.dumps(doc), f"advisories[{i}]")
        problems += _errors(result.errors)
        advisories += [m for m in result.messages if isinstance(m, AdvisoryDelta)]
    for i, doc in enumerate(body.vex):
        result = parse_file("vex", orjson.dumps(doc), f"vex[{i}]", tenant=tenant)
        problems += _errors(result.errors)
        vex += [m for m in result.messages if isinstance(m, VexStatement)]
    if problems:
        first = problems[0]
        raise ApiError(
            422,
            "invalid_document",
            f"{first['source']}: {first['field']}: {first['message']}",
            details=problems,
        )
    rechecks = []
    if body.selector is not None:
        rechecks.append(
            Recheck(
                tenant=tenant,
                recheck_id="preview",
                requested_at=now,
                selector=body.selector,
                reason="preview",
            )
        )
    outcome = preview(inventories, advisories, vex, rechecks=rechecks, window=body.window_seconds)
    jobs = [j for j in outcome.jobs if j.tenant == tenant]
    return {
        "mode": "inline",
        "jobs": [j.model_dump(mode="json", by_alias=True) for j in jobs],
        "images": sorted({j.image_digest for j in jobs}),
        "explanations": {
            key.split("/", 1)[1]: [
                {
                    "advisory_id": c.advisory_id,
                    "package": c.package,
                    "version": c.version,
                    "status": c.status,
                    "reason": c.reason,
                }
                for c in lines
            ]
            for key, lines in outcome.explanations.items()
            if key.startswith(f"{tenant}/")
        },
        "impacts": outcome.impacts,
        "late": outcome.late,
        "inventories": outcome.images,
    }


@router.post("/impact-preview")
async def impact_preview(body: PreviewRequest, principal: Reader, rt: RuntimeDep) -> dict[str, Any]:
    """Which of the tenant's images a selector covers (read model), or, with inline documents, the jobs the
    stream would emit for them (``streams.preview``)."""
    tenant = principal.tenant
    if body.sboms or body.advisories or body.vex:
        now = rt.clock()
        return await run_in_threadpool(_full_preview, body, tenant, now)
    if body.selector is None:
        raise ApiError(422, "validation_error", "selector: required unless documents are posted inline")
    selector = body.selector
    docs, truncated = await rt.db(lambda s: _all_images(s, tenant))
    # A removed image (inventory tombstone) is no longer a candidate, as in the stream's catalog.
    chosen = [d for d in docs if not d.get("removed") and selector_matches(meta_of(d), selector)]
    return {
        "mode": "read-model",
        "images": [
            {
                "image_digest": d.get("image_digest"),
                "verdict": d.get("verdict"),
                "status": d.get("status"),
                "finished_at": d.get("finished_at"),
            }
            for d in chosen
        ],
        "count": len(chosen),
        "truncated": truncated,
    }


# ---------------------------------------------------------------- rechecks and runtime events


@router.post("/rechecks", status_code=202)
async def post_recheck(
    body: RecheckRequest, principal: Writer, rt: RuntimeDep, idempotency_key: IdempotencyKey = None
) -> dict[str, Any]:
    """Produce a Recheck (key: tenant). Its id hashes the tenant, the body and the Idempotency-Key."""
    tenant = principal.tenant
    refuse_bad_digests(body)
    request = body.model_dump(mode="json")
    recheck_id = content_id("recheck", tenant, request, idempotency_key or "")

    async def make() -> dict[str, Any]:
        message = Recheck(
            tenant=tenant,
            recheck_id=recheck_id,
            requested_at=rt.clock(),
            selector=body.selector,
            reason=body.reason,
            kind=body.kind,
            priority=body.priority,
        )
        (produced,) = await rt.produce(
            [("rechecks", rt.topic("rechecks"), message_key(message), encode(message))]
        )
        return written(produced, recheck_id=recheck_id)

    return await idempotent(rt, tenant, "rechecks", idempotency_key, recheck_id, make)


@router.post("/runtime-events", status_code=202)
async def post_runtime_event(
    principal: Writer, rt: RuntimeDep, body: Annotated[dict[str, Any], Body()]
) -> dict[str, Any]:
    """Produce a RuntimeEvent (key: image digest). ``tenant`` may be omitted; if given it must be yours."""
    tenant = principal.tenant
    if body.get("tenant", tenant) != tenant:
        raise ApiError(403, "forbidden", "tenant does not match the token's tenant")
    try:
        event = RuntimeEvent.model_validate({**body, "tenant": tenant})
    except ValidationError as exc:
        errors = exc.errors()
        where = ".".join(str(p) for p in errors[0]["loc"]) or "$"
        raise ApiError(
            422,
            "validation_error",
            f"{where}: {errors[0]['msg']}",
            details=[{"field": ".".join(str(p) for p in e["loc"]), "message": e["msg"]} for e in errors[:20]],
        ) from None
    refuse_bad_digests(event)
    (produced,) = await rt.produce([("runtime", rt.topic("runtime"), message_key(event), encode(event))])
    return written(produced, image_digest=event.image_digest)


# ---------------------------------------------------------------- run management


@router.post("/runs/{run_id}/cancel", status_code=202)
async def cancel_run(
    run_id: str,
    principal: Manager,
    rt: RuntimeDep,
    body: Annotated[CancelRequest | None, Body()] = None,
) -> dict[str, Any]:
    """Produce a RunCancelRequested (key: run id) to ``run-inputs``; a terminal run answers 409."""
    run = await owned_run(rt, principal.tenant, run_id)
    if run.get("state") in TERMINAL_RUN_STATES:
        raise ApiError(409, "conflict", f"run {run_id!r} is already {run.get('state')}")
    message = RunCancelRequested(
        run_id=run_id,
        tenant=principal.tenant,
        at=rt.clock(),
        reason=body.reason if body else "",
        requested_by=principal.name,
    )
    (produced,) = await rt.produce(
        [("run-inputs", rt.topic("run-inputs"), message_key(message), encode(message))]
    )
    return written(produced, run_id=run_id)


def _run_digests(store: ProjectionStore, tenant: str, run_id: str, only_unfinished: bool) -> list[str]:
    every: set[str] = set()
    unfinished: set[str] = set()
    after: After | None = None
    while True:
        page = store.find(JOBS, {"tenant": tenant, "run_id": run_id}, after=after, limit=MAX_PAGE)
        for job in page.items:
            digest = job.get("image_digest")
            if isinstance(digest, str):
                every.add(digest)
                if job.get("status") != "completed":
                    unfinished.add(digest)
        if page.next_after is None:
            break
        after = page.next_after
    chosen = unfinished if only_unfinished and unfinished else every
    return sorted(chosen)


@router.post("/runs/{run_id}/retry", status_code=202)
async def retry_run(
    run_id: str,
    principal: Manager,
    rt: RuntimeDep,
    body: Annotated[RetryRequest | None, Body()] = None,
    idempotency_key: IdempotencyKey = None,
) -> dict[str, Any]:
    """Produce a Recheck with ``retry_of`` for the run's images (by default those whose job did not
    complete; all of them when every job completed). Only a terminal run can be retried (else 409)."""
    tenant = principal.tenant
    req = body or RetryRequest()
    run = await owned_run(rt, tenant, run_id)
    if run.get("state") not in TERMINAL_RUN_STATES:
        raise ApiError(
            409, "conflict", f"run {run_id!r} is {run.get('state')}; only a finished run can be retried"
        )
    digests = await rt.db(lambda s: _run_digests(s, tenant, run_id, req.only_unfinished))
    if not digests:
        raise ApiError(409, "conflict", f"run {run_id!r} has no known jobs to retry")
    recheck_id = content_id("retry", tenant, run_id, req.model_dump(mode="json"), idempotency_key or "")

    async def make() -> dict[str, Any]:
        message = Recheck(
            tenant=tenant,
            recheck_id=recheck_id,
            requested_at=rt.clock(),
            selector=Selector(digests=digests),
            reason=req.reason or f"retry of run {run_id}",
            priority=req.priority,
            retry_of=run_id,
        )
        (produced,) = await rt.produce(
            [("rechecks", rt.topic("rechecks"), message_key(message), encode(message))]
        )
        return written(produced, recheck_id=recheck_id, retry_of=run_id, images=len(digests))

    return await idempotent(rt, tenant, "retry:" + run_id, idempotency_key, recheck_id, make)


# ---------------------------------------------------------------- dead letters


def _b64(text: Any, what: str) -> bytes | None:
    if text is None:
        return None
    try:
        return base64.b64decode(str(text), validate=True)
    except (binascii.Error, ValueError):
        raise ApiError(409, "conflict", f"the dead letter's {what} is not valid base64") from None


@router.post("/deadletters/{dl_id:path}/replay", status_code=202)
async def replay_deadletter(
    dl_id: str, principal: Manager, rt: RuntimeDep, request: Request
) -> dict[str, Any]:
    """Produce the original key and value bytes again to the topic they came from."""
    doc = await owned_deadletter(rt, principal.tenant, dl_id)
    source = str(doc.get("source_topic", ""))
    known = rt.known_topics()
    topic = source if source in known else rt.topic(source)
    if topic not in known:
        raise ApiError(409, "conflict", f"source topic {source!r} is not one of the scheduler's topics")
    key, value = _b64(doc.get("key_b64"), "key"), _b64(doc.get("value_b64"), "value")
    if value is None:
        original = doc.get("original")
        if isinstance(original, dict):
            raise ApiError(
                409,
                "conflict",
                f"the original ({original.get('value_size')} bytes, sha256 {original.get('value_sha256')}) was "
                f"too large to copy into the dead letter; it is at {source} "
                f"{doc.get('partition')}@{doc.get('offset')}: replay it with `stella-sched deadletter replay`",
            )
        raise ApiError(409, "conflict", "the dead letter carries no original value to replay")
    logical = topic[len(rt.settings.topic_prefix) :]
    (produced,) = await rt.produce([(logical, topic, key, value)])
    return written(produced, deadletter=public(doc)["id"], topic=topic)
