"""GET endpoints over the read models, always filtered by the caller's tenant."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query

from controlplane.deps import Consistent, Reader, RuntimeDep
from controlplane.errors import ApiError
from controlplane.paging import decode_cursor, encode_cursor
from controlplane.views import cursor_view, deadletter_tenant, deadletter_view, image_view, public
from projections.explain import finding_explain
from projections.fold import (
    CURSORS,
    DEADLETTERS,
    IMAGES,
    JOBS,
    RUNS,
    SCHEDULE_RUNS,
    WINDOWS,
    Document,
    image_id,
    window_view,
)
from projections.store import MAX_PAGE, After, Page, ProjectionStore
from schemas.canonical import format_time
from schemas.messages import JobStatus, RunState
from streams.simulation import SIMULATION_END, SIMULATION_PREFIX

router = APIRouter(prefix="/api/v1")

Limit = Annotated[int, Query(ge=1, le=MAX_PAGE, description="page size")]
CursorParam = Annotated[str | None, Query(max_length=2048, description="next_cursor of the previous page")]
RunStateParam = RunState
JobStatusParam = JobStatus
DEADLETTER_SCAN = 2000  # documents examined per request at most; the cursor continues the scan


def listing(kind: str, page: Page, items: list[dict[str, Any]]) -> dict[str, Any]:
    return {"items": items, "next_cursor": encode_cursor(kind, page.next_after)}


def not_found(what: str, ident: str) -> ApiError:
    return ApiError(404, "not_found", f"{what} {ident!r} not found")


def owned(doc: Document | None, tenant: str, what: str, ident: str) -> Document:
    """The document if it exists and belongs to ``tenant``; else 404 (another tenant's looks absent)."""
    if doc is None or doc.get("tenant") != tenant:
        raise not_found(what, ident)
    return doc


RunTrigger = Literal["schedule", "retry", "event", "simulation"]
SCHEDULE_RUN_IDS = 5000  # a schedule filter looks at this many of the tenant's (newest) schedule runs at most


def _schedule_run_ids(store: ProjectionStore, tenant: str, schedule_id: str | None) -> list[str]:
    """Run ids of the tenant's fired schedule occurrences (of one schedule, or all), newest first, bounded."""
    where: dict[str, Any] = {"tenant": tenant, "fired": True}
    if schedule_id is not None:
        where["schedule_id"] = schedule_id
    ids: list[str] = []
    after: After | None = None
    while len(ids) < SCHEDULE_RUN_IDS:
        page = store.find(SCHEDULE_RUNS, where, sort="nominal", after=after, limit=MAX_PAGE, descending=True)
        ids += [str(d["_id"]) for d in page.items]
        if page.next_after is None:
            break
        after = page.next_after
    return ids[:SCHEDULE_RUN_IDS]


def run_filter(
    store: ProjectionStore,
    tenant: str,
    state: str | None,
    trigger: RunTrigger | None,
    schedule_id: str | None,
    since: datetime | None,
    until: datetime | None,
) -> dict[str, Any]:
    """The runs query for these filters (the one definition; the console's runs page uses it too).

    A run's trigger: ``simulation`` for a queued policy simulation (``streams.simulation.is_simulation_run``),
    ``schedule`` when a schedule fired it (its occurrence is in ``schedule_runs``), ``retry``
    when it retries another run, else ``event`` (an intel, inventory, runtime, policy or recheck delta)."""
    where: dict[str, Any] = {"tenant": tenant}
    if state is not None:
        where["state"] = state
    created: dict[str, str] = {}
    if since is not None:
        created["$gte"] = format_time(since)
    if until is not None:
        created["$lt"] = format_time(until)
    if created:
        where["created_at"] = created
    if schedule_id is not None or trigger in ("schedule", "event"):
        ids = _schedule_run_ids(store, tenant, schedule_id)
        where["_id"] = {"$nin": ids} if trigger == "event" and schedule_id is None else {"$in": ids}
    if trigger == "simulation":
        where["_id"] = {**where.get("_id", {}), "$gte": SIMULATION_PREFIX, "$lt": SIMULATION_END}
    elif trigger is not None:
        # every other run id starts "run-", which sorts before the simulations' prefix
        where["_id"] = {**where.get("_id", {}), "$lt": SIMULATION_PREFIX}
    if trigger == "retry":
        where["retry_of"] = {"$ne": None}
    elif trigger in ("event", "schedule"):
        where["retry_of"] = None
    return where


@router.get("/runs")
async def list_runs(
    principal: Reader,
    rt: RuntimeDep,
    _: None = Consistent,
    state: RunStateParam | None = None,
    trigger: Annotated[RunTrigger | None, Query(description="schedule | retry | event | simulation")] = None,
    schedule_id: Annotated[str | None, Query(max_length=200, description="runs this schedule fired")] = None,
    since: Annotated[datetime | None, Query(description="created at or after (ISO 8601)")] = None,
    until: Annotated[datetime | None, Query(description="created before (ISO 8601)")] = None,
    order: Annotated[Literal["asc", "desc"], Query(description="by (created_at, id)")] = "asc",
    limit: Limit = 100,
    cursor: CursorParam = None,
) -> dict[str, Any]:
    """Runs ordered by (created_at, id), oldest first (``order=desc``: newest first)."""
    tenant = principal.tenant
    for name, value in (("since", since), ("until", until)):
        if value is not None and value.tzinfo is None:
            raise ApiError(422, "validation_error", f"{name}: give a time zone (e.g. Z)")
    kind = "runs" if order == "asc" else "runs:desc"
    after = decode_cursor(kind, cursor)

    def query(s: ProjectionStore) -> Page:
        where = run_filter(s, tenant, state, trigger, schedule_id, since, until)
        return s.find(RUNS, where, sort="created_at", after=after, limit=limit, descending=order == "desc")

    page = await rt.db(query)
    return listing(kind, page, [public(d) for d in page.items])


async def owned_run(rt: RuntimeDep, tenant: str, run_id: str) -> Document:
    """The tenant's run. The promise (issue 14 #13): a run that one of the tenant's jobs names never answers
    404. The job and the run are folded from different topics, so the run's document can lag the job's;
    meanwhile this answers 503 ``not_caught_up`` with Retry-After, and clients wait on that."""
    doc = await rt.db(lambda s: s.get(RUNS, run_id))
    if doc is None:
        named = await rt.db(lambda s: s.find(JOBS, {"tenant": tenant, "run_id": run_id}, limit=1).items)
        if named:
            raise ApiError(
                503,
                "not_caught_up",
                f"run {run_id!r} is named by a job but the read models have not folded it yet",
                {"Retry-After": "1"},
            )
    return owned(doc, tenant, "run", run_id)


@router.get("/runs/{run_id}")
async def get_run(run_id: str, principal: Reader, rt: RuntimeDep, _: None = Consistent) -> dict[str, Any]:
    return public(await owned_run(rt, principal.tenant, run_id))


def job_delta(doc: Document) -> dict[str, Any]:
    keys = ("image_digest", "status", "verdict", "previous_verdict", "delta", "counts", "kev_hits", "error")
    return {"job_id": doc["_id"], **{k: doc.get(k) for k in keys}}


@router.get("/runs/{run_id}/deltas")
async def run_deltas(
    run_id: str,
    principal: Reader,
    rt: RuntimeDep,
    _: None = Consistent,
    limit: Limit = 100,
    cursor: CursorParam = None,
) -> dict[str, Any]:
    """The run's DeltaSummary and its jobs' findings deltas (paged by job id)."""
    run = await owned_run(rt, principal.tenant, run_id)
    after = decode_cursor("deltas:" + run_id, cursor)
    where = {"tenant": principal.tenant, "run_id": run_id}
    page = await rt.db(lambda s: s.find(JOBS, where, after=after, limit=limit))
    return {
        "run_id": run_id,
        "state": run.get("state"),
        "summary": run.get("summary"),
        "jobs": [job_delta(d) for d in page.items],
        "next_cursor": encode_cursor("deltas:" + run_id, page.next_after),
    }


@router.get("/jobs")
async def list_jobs(
    principal: Reader,
    rt: RuntimeDep,
    _: None = Consistent,
    run_id: Annotated[str | None, Query(max_length=200)] = None,
    status: JobStatusParam | None = None,
    image_digest: Annotated[str | None, Query(max_length=300)] = None,
    limit: Limit = 100,
    cursor: CursorParam = None,
) -> dict[str, Any]:
    """Jobs ordered by id."""
    where: dict[str, Any] = {"tenant": principal.tenant}
    for key, value in (("run_id", run_id), ("status", status), ("image_digest", image_digest)):
        if value is not None:
            where[key] = value
    after = decode_cursor("jobs", cursor)
    page = await rt.db(lambda s: s.find(JOBS, where, after=after, limit=limit))
    return listing("jobs", page, [public(d) for d in page.items])


@router.get("/jobs/{job_id}")
async def get_job(job_id: str, principal: Reader, rt: RuntimeDep, _: None = Consistent) -> dict[str, Any]:
    return public(owned(await rt.db(lambda s: s.get(JOBS, job_id)), principal.tenant, "job", job_id))


@router.get("/images")
async def list_images(
    principal: Reader,
    rt: RuntimeDep,
    _: None = Consistent,
    verdict: Literal["pass", "fail", "unknown"] | None = None,
    limit: Limit = 100,
    cursor: CursorParam = None,
) -> dict[str, Any]:
    """The tenant's images (latest status and findings), ordered by digest."""
    where: dict[str, Any] = {"tenant": principal.tenant}
    if verdict is not None:
        where["verdict"] = verdict
    after = decode_cursor("images", cursor)
    page = await rt.db(lambda s: s.find(IMAGES, where, after=after, limit=limit))
    return listing("images", page, [image_view(d) for d in page.items])


@router.get("/images/{digest}")
async def get_image(digest: str, principal: Reader, rt: RuntimeDep, _: None = Consistent) -> dict[str, Any]:
    doc = await rt.db(lambda s: s.get(IMAGES, image_id(principal.tenant, digest)))
    return image_view(owned(doc, principal.tenant, "image", digest))


@router.get("/windows")
async def list_windows(
    principal: Reader,
    rt: RuntimeDep,
    _: None = Consistent,
    limit: Limit = 100,
    cursor: CursorParam = None,
) -> dict[str, Any]:
    """Impact windows ordered by start."""
    after = decode_cursor("windows", cursor)
    where = {"tenant": principal.tenant}
    page = await rt.db(lambda s: s.find(WINDOWS, where, sort="window_start", after=after, limit=limit))
    return listing("windows", page, [public(window_view(d)) for d in page.items])


def _scan_deadletters(store: ProjectionStore, tenant: str, after: After | None, limit: int) -> Page:
    """The tenant's dead letters by id. Attribution needs the document, so this scans by id; a page stops
    after ``DEADLETTER_SCAN`` documents and may then hold fewer than ``limit`` items (never wrong ones)."""
    items: list[Document] = []
    examined = 0
    cursor = after
    while True:
        batch = store.find(DEADLETTERS, None, after=cursor, limit=min(MAX_PAGE, max(limit + 1, 200)))
        for doc in batch.items:
            examined += 1
            if deadletter_tenant(doc) == tenant:
                if len(items) == limit:
                    last = items[-1]["_id"]
                    return Page(items, (last, last))
                items.append(doc)
            cursor = (doc["_id"], doc["_id"])
            if examined >= DEADLETTER_SCAN and batch.items:
                return Page(items, cursor)
        if batch.next_after is None:
            return Page(items, None)


@router.get("/deadletters")
async def list_deadletters(
    principal: Reader,
    rt: RuntimeDep,
    _: None = Consistent,
    limit: Limit = 100,
    cursor: CursorParam = None,
) -> dict[str, Any]:
    """Dead letters attributable to the tenant (failed jobs, tenant-scoped inputs), ordered by id."""
    after = decode_cursor("deadletters", cursor)
    page = await rt.db(lambda s: _scan_deadletters(s, principal.tenant, after, limit))
    return listing("deadletters", page, [deadletter_view(d) for d in page.items])


async def owned_deadletter(rt: RuntimeDep, tenant: str, dl_id: str) -> Document:
    doc = await rt.db(lambda s: s.get(DEADLETTERS, dl_id))
    if doc is None or deadletter_tenant(doc) != tenant:
        raise not_found("dead letter", dl_id)
    return doc


@router.get("/deadletters/{dl_id:path}")
async def get_deadletter(
    dl_id: str, principal: Reader, rt: RuntimeDep, _: None = Consistent
) -> dict[str, Any]:
    return deadletter_view(await owned_deadletter(rt, principal.tenant, dl_id))


@router.get("/cursors")
async def list_cursors(principal: Reader, rt: RuntimeDep, _: None = Consistent) -> dict[str, Any]:
    """How far each source feed has been folded (global feeds; other tenants' policy ids redacted)."""
    page = await rt.db(lambda s: s.find(CURSORS, None, limit=MAX_PAGE))
    return {"items": [cursor_view(d, principal.tenant) for d in page.items]}


@router.get("/images/{digest}/findings/{vuln}/explain")
async def explain_finding(
    digest: str, vuln: str, principal: Reader, rt: RuntimeDep, _: None = Consistent
) -> dict[str, Any]:
    """Why the image's last evaluation reports (or VEX-suppresses) ``vuln``: advisory, range event pair,
    VEX statements considered, policy rule. 404 when the image has no trace for it."""
    doc = owned(
        await rt.db(lambda s: s.get(IMAGES, image_id(principal.tenant, digest))),
        principal.tenant,
        "image",
        digest,
    )
    answer = finding_explain(doc, vuln)
    if answer is None:
        raise not_found("finding", f"{vuln} in image {digest}")
    return answer
