"""Policy simulation over the images read model (``stella-sched simulate``). Pure: documents in, a
``SimulationCompleted`` (read-model mode) or a ``SimulationRequest`` (queue mode: the selected images) out;
the live documents are only read."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from projections.fold import image_meta
from schemas.canonical import parse_time
from schemas.messages import Finding, PolicyRules, Selector, SimulationCompleted, SimulationRequest
from streams.simulation import LiveImage, finding_label, request, simulate
from streams.tenants import selector_matches

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def live_image(doc: Mapping[str, Any]) -> LiveImage:
    digest = str(doc.get("image_digest", ""))
    if not doc.get("evaluated_job_id"):
        return LiveImage(digest, "unknown")
    findings = tuple(Finding.model_validate(f) for f in doc.get("findings") or [])
    traces = doc.get("traces")
    failing = None
    if isinstance(traces, list) and (traces or not findings):
        failing = frozenset(
            finding_label(str(t["id"]), str(t["package"]))
            for t in traces
            if t.get("outcome") == "reported" and (t.get("policy") or {}).get("effect") == "fail"
        )
    verdict = doc.get("verdict")
    return LiveImage(digest, verdict if verdict in ("pass", "fail") else "unknown", findings, failing)


def simulate_documents(
    docs: Iterable[Mapping[str, Any]],
    tenant: str,
    selector: Selector,
    candidate: PolicyRules,
    *,
    at: datetime | None = None,
    live_rules: PolicyRules | None = None,
    nonce: str = "",
) -> SimulationCompleted:
    """Simulate ``candidate`` over the tenant's selected, present images. ``at`` defaults to the latest
    evaluation among them (event time: the state the answer describes), so equal state gives equal bytes."""
    selected = selected_documents(docs, tenant, selector)
    if at is None:
        stamps = sorted(str(d["evaluated_at"]) for d in selected if d.get("evaluated_at"))
        at = parse_time(stamps[-1]) if stamps else EPOCH
    chosen = [live_image(d) for d in selected]
    return simulate(tenant, selector, candidate, live_rules or PolicyRules(), chosen, at=at, nonce=nonce)


def selected_documents(
    docs: Iterable[Mapping[str, Any]], tenant: str, selector: Selector
) -> list[Mapping[str, Any]]:
    """The tenant's present images the selector picks (the one selection rule of both modes)."""
    return [
        d
        for d in docs
        if d.get("tenant") == tenant and not d.get("removed") and selector_matches(image_meta(d), selector)
    ]


def request_documents(
    docs: Iterable[Mapping[str, Any]],
    tenant: str,
    selector: Selector,
    candidate: PolicyRules,
    *,
    at: datetime,
    nonce: str,
    requested_by: str = "",
) -> SimulationRequest:
    """A queued simulation of ``candidate`` over the selected images (docs/simulation.md)."""
    digests = [str(d.get("image_digest", "")) for d in selected_documents(docs, tenant, selector)]
    return request(tenant, selector, candidate, digests, at=at, nonce=nonce, requested_by=requested_by)


TERMINAL_SIMULATION_STATES = frozenset({"completed", "cancelled", "error"})


def completed_of(doc: Mapping[str, Any]) -> SimulationCompleted | None:
    """The completed simulation a read-model document holds (the signed predicate's very fields), or None
    while it is still running."""
    if doc.get("state") not in TERMINAL_SIMULATION_STATES or "totals" not in doc:
        return None
    fields = {k: doc[k] for k in SimulationCompleted.model_fields if k != "schema_id" and k in doc}
    return SimulationCompleted.model_validate({**fields, "simulation_id": doc["_id"]})
