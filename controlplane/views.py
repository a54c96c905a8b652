"""Read-model documents as the API serves them, and the tenant rules for documents without a tenant field."""

from __future__ import annotations

import base64
import binascii
from typing import Any

import orjson

from projections.fold import POS, Document, image_fields, unfield_key

POLICY_CURSOR = "policy"


def public(doc: Document) -> dict[str, Any]:
    """A read-model document without its internal fields; ``_id`` becomes ``id``."""
    out = {k: v for k, v in doc.items() if k not in {"_id", POS}}
    return {"id": doc["_id"], **out}


def image_view(doc: Document) -> dict[str, Any]:
    """The image as served: labels as a map, ``running`` / ``running_sites`` derived from the runtime sites."""
    view = public(doc)
    view.pop("sites", None)
    view.pop("traces", None)  # served by the explain route, one finding at a time
    view["id"] = doc.get("image_digest", view["id"])
    view.update(image_fields(doc))
    return view


def deadletter_tenant(doc: Document) -> str | None:
    """Whose dead letter this is: the failed job's tenant, else the ``tenant`` of the original message.

    Dead letters of tenant-less inputs (advisories, global VEX, undecodable bytes) belong to no tenant and
    are not served over the tenant API (operators use the CLI for those).
    """
    job = doc.get("job")
    if isinstance(job, dict) and isinstance(job.get("tenant"), str):
        return str(job["tenant"])
    raw = doc.get("value_b64")
    if not isinstance(raw, str):
        return None
    try:
        value = orjson.loads(base64.b64decode(raw, validate=True))
    except (binascii.Error, ValueError):
        return None
    tenant = value.get("tenant") if isinstance(value, dict) else None
    return tenant if isinstance(tenant, str) and tenant else None


def deadletter_view(doc: Document) -> dict[str, Any]:
    return public(doc)


def cursor_view(doc: Document, tenant: str) -> dict[str, Any]:
    """Feed cursors are global, except the policy cursor's ids name tenants: other tenants' are redacted."""
    view = public(doc)
    if doc.get("source") != POLICY_CURSOR and doc.get("_id") != POLICY_CURSOR:
        return view
    view.pop("modified", None)
    parts: dict[str, Any] = {}
    for name, entry in (doc.get("partitions") or {}).items():
        if not isinstance(entry, dict):
            continue
        last = str(entry.get("last_id", ""))
        # Another tenant's entry is left out entirely: even its offset tells when that tenant changed
        # policy. Names are stored escaped for MongoDB (projections.fold.field_key); serve them plain.
        if last.startswith(f"{tenant}/"):
            parts[unfield_key(name)] = entry
    view["partitions"] = parts
    return view
