"""OpenVEX 0.0.1 and 0.2.0 → one VexStatement per statement.

The two versions differ in shape, and documents in the wild mix them, so each field is read in both
forms: ``vulnerability`` as a string (0.0.1) or ``{"name", "@id", "aliases"}`` (0.2.0); ``products`` as
strings (0.0.1) or ``{"@id", "identifiers", "hashes", "subcomponents"}`` (0.2.0); 0.0.1's statement-level
``subcomponents`` as strings.

Subcomponents of an image product become that package scoped to that image digest. Subcomponents of a
product that is not an image are not widened to "that package everywhere": the statement then covers the
product itself and the subcomponents are counted as ``subcomponents_unscoped``.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any, Literal

from pydantic import ValidationError

from ingest.document import as_dict, as_list, load_json, text, timestamp
from ingest.result import IngestError, IngestResult, count
from ingest.vex_products import dedupe, product_for, scoped
from schemas.messages import VexProduct, VexStatement

STATUSES = ("not_affected", "affected", "fixed", "under_investigation")


def parse_openvex(data: bytes, source: str, *, tenant: str | None = None) -> IngestResult[VexStatement]:
    doc = load_json(data, source)
    errors: list[IngestError] = []
    report: dict[str, int] = {"statements": 0, "statements_skipped": 0}
    if isinstance(doc, IngestError):
        return IngestResult(errors=[doc], report=report, format="openvex")
    if not isinstance(doc, dict) or not isinstance(doc.get("statements"), list):
        errors.append(IngestError(source, "statements", "an OpenVEX document has a 'statements' list"))
        return IngestResult(errors=errors, report=report, format="openvex")

    def err(field: str, message: str, level: Literal["error", "warning"] = "error") -> None:
        errors.append(IngestError(source, field, message, level))

    doc_id = text(doc.get("@id")) or text(doc.get("id")) or "urn:sha256:" + hashlib.sha256(data).hexdigest()
    doc_time = timestamp(doc.get("timestamp"))
    if doc.get("timestamp") is not None and doc_time is None:
        err("timestamp", f"not an RFC 3339 timestamp: {doc.get('timestamp')!r}")
    messages: list[VexStatement] = []
    for i, raw in enumerate(doc["statements"]):
        count(report, "statements")
        statement = _statement(raw, f"statements[{i}]", i, doc_id, doc_time, tenant, err, report)
        if statement is None:
            count(report, "statements_skipped")
        else:
            messages.append(statement)
    return IngestResult(messages=messages, errors=errors, report=report, format="openvex")


def _statement(
    raw: Any,
    at: str,
    index: int,
    doc_id: str,
    doc_time: datetime | None,
    tenant: str | None,
    err: Any,
    report: dict[str, int],
) -> VexStatement | None:
    if not isinstance(raw, dict):
        err(at, "a statement is an object")
        return None
    vuln_raw = raw.get("vulnerability")
    vuln_obj = as_dict(vuln_raw) or {}
    vulnerability = text(vuln_raw) or text(vuln_obj.get("name")) or text(vuln_obj.get("@id"))
    aliases = sorted({a for a in as_list(vuln_obj.get("aliases")) if isinstance(a, str) and a.strip()})
    status = raw.get("status")
    when = timestamp(raw.get("timestamp")) or doc_time
    ok = True
    if vulnerability is None:
        err(f"{at}.vulnerability", 'required: a name (0.0.1: a string; 0.2.0: {"name": ...})')
        ok = False
    if status not in STATUSES:
        err(f"{at}.status", f"must be one of {', '.join(STATUSES)}, got {status!r}")
        ok = False
    if when is None:
        err(f"{at}.timestamp", "no valid statement or document timestamp")
        ok = False
    if not isinstance(raw.get("products"), list) or not raw["products"]:
        err(f"{at}.products", "required: a non-empty list")
        return None
    products = _products(raw["products"], as_list(raw.get("subcomponents")), at, err, report)
    if not ok:
        return None
    if not products:
        err(f"{at}.products", "no product resolves to a purl or image digest; statement skipped", "warning")
        return None
    justification = text(raw.get("justification"))
    try:
        return VexStatement.model_validate(
            {
                "document_id": doc_id,
                "statement_id": text(raw.get("@id")) or f"{doc_id}#{index}",
                "vulnerability": str(vulnerability),
                "aliases": [a for a in aliases if a != vulnerability],
                "products": products,
                "status": status,
                "justification": justification,
                "timestamp": when,
                "tenant": tenant,
                "format": "openvex",
            }
        )
    except ValidationError as exc:
        err(at, f"does not fit the VEX contract: {exc.errors()[0]['msg']}")
        return None


def _identifier(entry: Any) -> tuple[str | None, list[Any]]:
    """(identifier, subcomponents) for a product in either shape."""
    if isinstance(entry, str):
        return text(entry), []
    obj = as_dict(entry) or {}
    identifiers = as_dict(obj.get("identifiers")) or {}
    ident = text(obj.get("@id"))
    if ident is None or not ident.lower().startswith("pkg:"):
        ident = text(identifiers.get("purl")) or ident
    if ident is None or product_for(ident) is None:
        hashes = as_dict(obj.get("hashes")) or {}
        digest = text(hashes.get("sha-256")) or text(hashes.get("sha256"))
        ident = f"sha256:{digest}" if digest else ident
    return ident, as_list(obj.get("subcomponents"))


def _products(
    entries: list[Any], statement_subs: list[Any], at: str, err: Any, report: dict[str, int]
) -> list[VexProduct]:
    out: list[VexProduct] = []
    for j, entry in enumerate(entries):
        pat = f"{at}.products[{j}]"
        ident, subs = _identifier(entry)
        product = product_for(ident) if ident else None
        if product is None:
            count(report, "products_unresolved")
            err(pat, f"cannot resolve product {ident!r} to a purl or image digest", "warning")
            continue
        subs = subs or statement_subs
        if not subs:
            out.append(product)
            continue
        if product.image_digest is None:
            count(report, "subcomponents_unscoped", len(subs))
            out.append(product)
            continue
        for k, sub in enumerate(subs):
            sub_ident, _ = _identifier(sub)
            component = product_for(sub_ident) if sub_ident else None
            if component is None or component.package is None:
                count(report, "products_unresolved")
                err(f"{pat}.subcomponents[{k}]", f"cannot resolve subcomponent {sub_ident!r}", "warning")
                continue
            out.append(scoped(component, product))
    return dedupe(out)
