"""Schedules: list / show / preview / catch-up (read models), and create / update / pause / resume / delete
/ run (commands to the `schedules` topic, key: tenant). Reads need scheduler.runs.read, changes
scheduler.runs.manage; every route sees only the caller's tenant."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body

from controlplane.deps import Consistent, Manager, Reader, RuntimeDep
from controlplane.errors import ApiError
from controlplane.paging import decode_cursor
from controlplane.routes_read import CursorParam, Limit, listing, owned
from controlplane.routes_write import IdempotencyKey, Strict, _all_images, content_id, idempotent, written
from controlplane.views import public
from projections.fold import SCHEDULE_RUNS, SCHEDULES, Document, schedule_doc_id
from projections.schedule_view import catchup, preview
from schemas.codec import encode
from schemas.keys import message_key
from schemas.messages import ScheduleAction, ScheduleCommand, ScheduleSpec

router = APIRouter(prefix="/api/v1")


class CreateSchedule(Strict):
    schedule_id: str
    spec: ScheduleSpec


class UpdateSchedule(Strict):
    spec: ScheduleSpec


class Note(Strict):
    reason: str = ""


async def _schedule(rt: RuntimeDep, tenant: str, schedule_id: str) -> Document:
    doc = await rt.db(lambda s: s.get(SCHEDULES, schedule_doc_id(tenant, schedule_id)))
    doc = owned(doc, tenant, "schedule", schedule_id)
    if "spec" not in doc or doc.get("status") == "deleted":
        raise ApiError(404, "not_found", f"schedule {schedule_id!r} not found")
    return doc


@router.get("/schedules")
async def list_schedules(
    principal: Reader, rt: RuntimeDep, _: None = Consistent, limit: Limit = 100, cursor: CursorParam = None
) -> dict[str, Any]:
    """The tenant's schedules (deleted ones included, with status), by id."""
    after = decode_cursor("schedules", cursor)
    where = {"tenant": principal.tenant}
    page = await rt.db(lambda s: s.find(SCHEDULES, where, after=after, limit=limit))
    return listing("schedules", page, [public(d) for d in page.items if "spec" in d])


@router.get("/schedules/{schedule_id}")
async def get_schedule(
    schedule_id: str, principal: Reader, rt: RuntimeDep, _: None = Consistent
) -> dict[str, Any]:
    return public(await _schedule(rt, principal.tenant, schedule_id))


@router.get("/schedules/{schedule_id}/runs")
async def schedule_runs(
    schedule_id: str,
    principal: Reader,
    rt: RuntimeDep,
    _: None = Consistent,
    limit: Limit = 100,
    cursor: CursorParam = None,
) -> dict[str, Any]:
    """The schedule's decided occurrences (fired and missed), by run id."""
    after = decode_cursor("schedule-runs:" + schedule_id, cursor)
    where = {"tenant": principal.tenant, "schedule_id": schedule_id}
    page = await rt.db(lambda s: s.find(SCHEDULE_RUNS, where, after=after, limit=limit))
    return listing("schedule-runs:" + schedule_id, page, [public(d) for d in page.items])


@router.get("/schedules/{schedule_id}/preview")
async def preview_schedule(
    schedule_id: str, principal: Reader, rt: RuntimeDep, _: None = Consistent
) -> dict[str, Any]:
    """How many images the schedule selects now, how many its onlyIf filters out, and how many maxJobs
    cuts; plus what a catch-up would decide now (``missed``)."""
    doc = await _schedule(rt, principal.tenant, schedule_id)
    docs, truncated = await rt.db(lambda s: _all_images(s, principal.tenant))
    now = rt.clock()
    spec = ScheduleSpec.model_validate(doc["spec"])
    return {**preview(spec, docs, now), "images_truncated": truncated, "missed": catchup(doc, now)}


@router.get("/schedules/{schedule_id}/catchup")
async def catchup_schedule(
    schedule_id: str, principal: Reader, rt: RuntimeDep, _: None = Consistent
) -> dict[str, Any]:
    """Dry run: the occurrences the worker's next tick would fire or skip under the missed-run policy."""
    return catchup(await _schedule(rt, principal.tenant, schedule_id), rt.clock())


async def _command(
    rt: RuntimeDep,
    tenant: str,
    action: ScheduleAction,
    schedule_id: str,
    key: str | None,
    spec: ScheduleSpec | None = None,
    reason: str = "",
    by: str = "",
) -> dict[str, Any]:
    fingerprint = content_id(
        "schedule", action, tenant, schedule_id, spec.model_dump(mode="json") if spec else None, reason
    )

    async def make() -> dict[str, Any]:
        try:
            command = ScheduleCommand(
                action=action,
                tenant=tenant,
                schedule_id=schedule_id,
                at=rt.clock(),
                spec=spec,
                requested_by=by,
                reason=reason,
            )
        except ValueError as exc:
            raise ApiError(422, "validation_error", str(exc)) from None
        (produced,) = await rt.produce(
            [("schedules", rt.topic("schedules"), message_key(command), encode(command))]
        )
        return written(
            produced, schedule_id=schedule_id, action=action, at=command.model_dump(mode="json")["at"]
        )

    return await idempotent(rt, tenant, f"schedules:{action}:{schedule_id}", key, fingerprint, make)


@router.post("/schedules", status_code=202)
async def create_schedule(
    body: CreateSchedule, principal: Manager, rt: RuntimeDep, idempotency_key: IdempotencyKey = None
) -> dict[str, Any]:
    """Create a schedule (409 when one with that id exists and is not deleted)."""
    doc = await rt.db(lambda s: s.get(SCHEDULES, schedule_doc_id(principal.tenant, body.schedule_id)))
    exists = (
        doc is not None
        and doc.get("tenant") == principal.tenant
        and doc.get("status") not in (None, "deleted")
    )
    route = f"schedules:create:{body.schedule_id}"
    replay = (
        bool(idempotency_key)
        and rt.idempotency.get(principal.tenant, route, idempotency_key or "") is not None
    )
    if exists and not replay:
        raise ApiError(409, "conflict", f"schedule {body.schedule_id!r} exists (use PUT to update)")
    return await _command(
        rt, principal.tenant, "create", body.schedule_id, idempotency_key, body.spec, by=principal.name
    )


@router.put("/schedules/{schedule_id}", status_code=202)
async def update_schedule(
    schedule_id: str,
    body: UpdateSchedule,
    principal: Manager,
    rt: RuntimeDep,
    idempotency_key: IdempotencyKey = None,
) -> dict[str, Any]:
    await _schedule(rt, principal.tenant, schedule_id)
    return await _command(
        rt, principal.tenant, "update", schedule_id, idempotency_key, body.spec, by=principal.name
    )


async def _simple(
    action: ScheduleAction,
    schedule_id: str,
    principal: Any,
    rt: RuntimeDep,
    body: Note | None,
    key: str | None,
) -> dict[str, Any]:
    await _schedule(rt, principal.tenant, schedule_id)
    reason = body.reason if body else ""
    return await _command(rt, principal.tenant, action, schedule_id, key, reason=reason, by=principal.name)


@router.post("/schedules/{schedule_id}/pause", status_code=202)
async def pause_schedule(
    schedule_id: str,
    principal: Manager,
    rt: RuntimeDep,
    body: Annotated[Note | None, Body()] = None,
    idempotency_key: IdempotencyKey = None,
) -> dict[str, Any]:
    return await _simple("pause", schedule_id, principal, rt, body, idempotency_key)


@router.post("/schedules/{schedule_id}/resume", status_code=202)
async def resume_schedule(
    schedule_id: str,
    principal: Manager,
    rt: RuntimeDep,
    body: Annotated[Note | None, Body()] = None,
    idempotency_key: IdempotencyKey = None,
) -> dict[str, Any]:
    """Resume from now: occurrences during the pause are neither fired nor counted as missed."""
    return await _simple("resume", schedule_id, principal, rt, body, idempotency_key)


@router.post("/schedules/{schedule_id}/run", status_code=202)
async def run_schedule(
    schedule_id: str,
    principal: Manager,
    rt: RuntimeDep,
    body: Annotated[Note | None, Body()] = None,
    idempotency_key: IdempotencyKey = None,
) -> dict[str, Any]:
    """A manual run now (its run id derives from the request time; an Idempotency-Key makes a retried
    request answer the first run instead of starting another)."""
    return await _simple("run", schedule_id, principal, rt, body, idempotency_key)


@router.delete("/schedules/{schedule_id}", status_code=202)
async def delete_schedule(
    schedule_id: str, principal: Manager, rt: RuntimeDep, idempotency_key: IdempotencyKey = None
) -> dict[str, Any]:
    return await _simple("delete", schedule_id, principal, rt, None, idempotency_key)
