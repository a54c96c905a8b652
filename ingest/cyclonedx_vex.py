"""CycloneDX VEX (``vulnerabilities[]`` with ``analysis``) → one VexStatement per vulnerability.

``affects[].ref`` is resolved, never guessed: a bom-ref of a component in this BOM (metadata.component
or ``components``, nested ones included) that carries a purl, a purl written directly as the ref, or a
BOM-Link ``urn:cdx:<serial>/<version>#<bom-ref>`` whose fragment is one of those. A container component
whose version is a digest resolves to that image. Everything else is reported as unresolved.
``affects[].versions`` (per-version status lists) is not interpreted; such refs are counted.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any, Literal
from urllib.parse import unquote

from pydantic import ValidationError

from ingest.document import as_dict, as_list, load_json, text, timestamp
from ingest.result import IngestError, IngestResult, count
from ingest.vex_products import dedupe, product_for
from schemas.messages import VexProduct, VexStatement, VexStatus

STATE_MAP: dict[str, VexStatus] = {
    "not_affected": "not_affected",
    "false_positive": "not_affected",
    "exploitable": "affected",
    "in_triage": "under_investigation",
    "resolved": "fixed",
    "resolved_with_pedigree": "fixed",
}


def component_index(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """bom-ref → component, for metadata.component and every (nested) component."""
    index: dict[str, dict[str, Any]] = {}
    stack: list[Any] = [
        (as_dict(doc.get("metadata")) or {}).get("component"),
        *as_list(doc.get("components")),
    ]
    while stack:
        comp = stack.pop()
        if not isinstance(comp, dict):
            continue
        ref = text(comp.get("bom-ref"))
        if ref is not None:
            index.setdefault(ref, comp)
        stack.extend(as_list(comp.get("components")))
    return index


def _component_product(comp: dict[str, Any]) -> VexProduct | None:
    purl = text(comp.get("purl"))
    if purl is not None:
        return product_for(purl)
    version = text(comp.get("version")) or ""
    if comp.get("type") == "container":
        return product_for(version)
    return None


def resolve_ref(ref: str, index: dict[str, dict[str, Any]]) -> VexProduct | None:
    target = ref.strip()
    if target.startswith("urn:cdx:"):
        _, hash_sign, fragment = target.partition("#")
        if not hash_sign:
            return None
        target = unquote(fragment)
    comp = index.get(target)
    if comp is not None:
        return _component_product(comp)
    return product_for(target) if target.lower().startswith("pkg:") else None


def parse_cyclonedx_vex(data: bytes, source: str, *, tenant: str | None = None) -> IngestResult[VexStatement]:
    doc = load_json(data, source)
    report: dict[str, int] = {"statements": 0, "statements_skipped": 0}
    if isinstance(doc, IngestError):
        return IngestResult(errors=[doc], report=report, format="cyclonedx-vex")
    errors: list[IngestError] = []

    def err(field: str, message: str, level: Literal["error", "warning"] = "error") -> None:
        errors.append(IngestError(source, field, message, level))

    if not isinstance(doc, dict) or doc.get("bomFormat") != "CycloneDX":
        err("bomFormat", "a CycloneDX document has bomFormat 'CycloneDX'")
        return IngestResult(errors=errors, report=report, format="cyclonedx-vex")
    vulns = doc.get("vulnerabilities")
    if not isinstance(vulns, list):
        err("vulnerabilities", "a CycloneDX VEX document has a 'vulnerabilities' list")
        return IngestResult(errors=errors, report=report, format="cyclonedx-vex")
    serial = text(doc.get("serialNumber"))
    doc_id = (
        f"{serial}/{doc.get('version', 1)}" if serial else "urn:sha256:" + hashlib.sha256(data).hexdigest()
    )
    doc_time = timestamp((as_dict(doc.get("metadata")) or {}).get("timestamp"))
    index = component_index(doc)
    messages: list[VexStatement] = []
    for i, vuln in enumerate(vulns):
        count(report, "statements")
        stmt = _statement(vuln, f"vulnerabilities[{i}]", doc_id, i, doc_time, index, tenant, err, report)
        if stmt is None:
            count(report, "statements_skipped")
        else:
            messages.append(stmt)
    return IngestResult(messages=messages, errors=errors, report=report, format="cyclonedx-vex")


def _statement(
    vuln: Any,
    at: str,
    doc_id: str,
    index_no: int,
    doc_time: datetime | None,
    index: dict[str, dict[str, Any]],
    tenant: str | None,
    err: Any,
    report: dict[str, int],
) -> VexStatement | None:
    if not isinstance(vuln, dict):
        err(at, "a vulnerability is an object")
        return None
    vid = text(vuln.get("id"))
    analysis = as_dict(vuln.get("analysis")) or {}
    state = analysis.get("state")
    when = (
        timestamp(analysis.get("lastUpdated"))
        or timestamp(vuln.get("updated"))
        or timestamp(vuln.get("published"))
        or doc_time
    )
    ok = True
    if vid is None:
        err(f"{at}.id", "required: the vulnerability id")
        ok = False
    if not isinstance(state, str) or state not in STATE_MAP:
        err(f"{at}.analysis.state", f"must be one of {', '.join(STATE_MAP)}, got {state!r}")
        ok = False
    if when is None:
        err(f"{at}.analysis.lastUpdated", "no timestamp here, in updated/published or metadata.timestamp")
        ok = False
    affects = vuln.get("affects")
    if not isinstance(affects, list) or not affects:
        err(f"{at}.affects", "required: a non-empty list")
        return None
    products: list[VexProduct] = []
    for j, target in enumerate(affects):
        ref = text((as_dict(target) or {}).get("ref"))
        product = resolve_ref(ref, index) if ref else None
        if as_list((as_dict(target) or {}).get("versions")):
            count(report, "affects_versions_ignored")
        if product is None:
            count(report, "products_unresolved")
            err(f"{at}.affects[{j}].ref", f"{ref!r} does not resolve to a purl or image digest", "warning")
        else:
            products.append(product)
    if not ok:
        return None
    if not products:
        err(f"{at}.affects", "no affected ref resolves; statement skipped", "warning")
        return None
    aliases = sorted(
        {r for r in (text((as_dict(x) or {}).get("id")) for x in as_list(vuln.get("references"))) if r}
        - {vid}
    )
    try:
        return VexStatement.model_validate(
            {
                "document_id": doc_id,
                "statement_id": text(vuln.get("bom-ref")) or f"{doc_id}#{index_no}",
                "vulnerability": str(vid),
                "aliases": aliases,
                "products": dedupe(products),
                "status": STATE_MAP[str(state)],
                "justification": text(analysis.get("justification")),
                "timestamp": when,
                "tenant": tenant,
                "format": "cyclonedx",
            }
        )
    except ValidationError as exc:
        err(at, f"does not fit the VEX contract: {exc.errors()[0]['msg']}")
        return None
