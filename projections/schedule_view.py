"""Schedules over the read models (pure): what the API and the CLI need to preview a schedule against the
images read model and to list what a catch-up would decide, with the worker's own core.

The images read model knows each image's last report (``finished_at`` of its last job result), so the
preview applies ``onlyIf`` with real report times.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from projections.fold import image_meta
from schemas.canonical import format_time, parse_time
from schemas.messages import ScheduleSpec
from streams.schedules import Decision, ScheduleState, preview_missed, select_images
from streams.tenants import ImageMeta, TenantCatalog


def catalog_of(docs: Iterable[Mapping[str, Any]]) -> tuple[TenantCatalog, dict[str, datetime]]:
    """The tenant's catalog (removed images left out) and each image's last report time."""
    images: dict[str, ImageMeta] = {}
    reports: dict[str, datetime] = {}
    for doc in docs:
        if doc.get("removed"):
            continue
        meta = image_meta(doc)
        images[meta.digest] = meta
        if doc.get("finished_at"):
            reports[meta.digest] = parse_time(str(doc["finished_at"]))
    return TenantCatalog(images), reports


def preview(spec: ScheduleSpec, docs: Iterable[Mapping[str, Any]], now: datetime) -> dict[str, Any]:
    catalog, reports = catalog_of(docs)
    sel = select_images(spec, catalog, now, reports)
    return {
        "at": format_time(now),
        "selected": sel.selected,
        "filtered_only_if": sel.filtered_only_if,
        "truncated": sel.truncated,
        "jobs": len(sel.images),
        "images": [m.digest for m in sel.images],
    }


def state_of(doc: Mapping[str, Any]) -> ScheduleState:
    """A schedule document as the fold's state (``decided_until`` is the cursor)."""
    return ScheduleState(
        tenant=doc["tenant"],
        schedule_id=doc["schedule_id"],
        spec=ScheduleSpec.model_validate(doc["spec"]),
        status=doc["status"],
        created_at=doc.get("at") or doc["decided_until"],
        updated_at=doc.get("at") or doc["decided_until"],
        cursor=parse_time(str(doc["decided_until"])),
        last_fired=parse_time(str(doc["last_fired"])) if doc.get("last_fired") else None,
        fired_total=int(doc.get("fired_total", 0)),
        missed_total=int(doc.get("missed_total", 0)),
    )


def catchup(doc: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    """What the worker's next tick at ``now`` would decide for this schedule (fires nothing)."""
    state = state_of(doc)
    decisions: list[Decision] = preview_missed(state, now)
    return {
        "at": format_time(now),
        "status": state.status,
        "policy": state.spec.missed.policy,
        "decided_until": format_time(state.cursor),
        "would_fire": [format_time(d.nominal) for d in decisions if d.fire],
        "would_skip": [format_time(d.nominal) for d in decisions if not d.fire],
        "decisions": [{"nominal": format_time(d.nominal), "fire": d.fire, "why": d.why} for d in decisions],
    }
