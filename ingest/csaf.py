"""CSAF 2.0 VEX → VexStatements, one per (vulnerability, status, justification).

Product ids resolve through ``product_tree``: ``branches`` (recursively), ``full_product_names`` and
``relationships``. A product resolves when its ``product_identification_helper.purl`` does (or a
``hashes`` sha256 for an image). A relationship product ("X default_component_of Y") is X's purl, scoped
to Y's digest when Y is an image; when Y is not an image (a platform such as "RHEL 9") it stays X's purl,
which is how CSAF VEX feeds name packages. Product ids that resolve to nothing are reported.

Status groups: known_affected / first_affected / last_affected → affected; known_not_affected →
not_affected; fixed / first_fixed → fixed; under_investigation. ``recommended`` carries no status.
Justifications come from ``flags[].label`` for the products they list.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ValidationError

from ingest.document import as_dict, as_list, load_json, text, timestamp
from ingest.result import IngestError, IngestResult, count
from ingest.vex_products import dedupe, product_for, scoped
from schemas.messages import VexProduct, VexStatement, VexStatus

STATUS_GROUPS: dict[str, VexStatus] = {
    "known_affected": "affected",
    "first_affected": "affected",
    "last_affected": "affected",
    "known_not_affected": "not_affected",
    "fixed": "fixed",
    "first_fixed": "fixed",
    "under_investigation": "under_investigation",
}


def _helper_product(full_name: Any) -> VexProduct | None:
    helper = as_dict((as_dict(full_name) or {}).get("product_identification_helper")) or {}
    purl = text(helper.get("purl"))
    if purl is not None:
        return product_for(purl)
    for file_hash in as_list(helper.get("hashes")):
        for h in as_list((as_dict(file_hash) or {}).get("file_hashes")):
            h = as_dict(h) or {}
            if str(h.get("algorithm", "")).lower() == "sha256" and text(h.get("value")):
                return product_for(f"sha256:{h['value']}")
    return None


def product_index(tree: dict[str, Any]) -> dict[str, VexProduct | None]:
    """product_id → product (None: known id that resolves to nothing)."""
    index: dict[str, VexProduct | None] = {}

    def add(full_name: Any) -> None:
        pid = text((as_dict(full_name) or {}).get("product_id"))
        if pid is not None and index.get(pid) is None:
            index[pid] = _helper_product(full_name)

    stack = list(as_list(tree.get("branches")))
    while stack:
        branch = as_dict(stack.pop()) or {}
        if "product" in branch:
            add(branch["product"])
        stack.extend(as_list(branch.get("branches")))
    for full_name in as_list(tree.get("full_product_names")):
        add(full_name)
    for rel in as_list(tree.get("relationships")):
        rel = as_dict(rel) or {}
        pid = text((as_dict(rel.get("full_product_name")) or {}).get("product_id"))
        if pid is None:
            continue
        component = index.get(str(rel.get("product_reference")))
        parent = index.get(str(rel.get("relates_to_product_reference")))
        if component is not None and component.package is not None and parent and parent.image_digest:
            index[pid] = scoped(component, parent)
        else:
            index[pid] = component or _helper_product(rel.get("full_product_name"))
    return index


def parse_csaf(data: bytes, source: str, *, tenant: str | None = None) -> IngestResult[VexStatement]:
    doc = load_json(data, source)
    report: dict[str, int] = {"statements": 0}
    if isinstance(doc, IngestError):
        return IngestResult(errors=[doc], report=report, format="csaf")
    errors: list[IngestError] = []

    def err(field: str, message: str, level: Literal["error", "warning"] = "error") -> None:
        errors.append(IngestError(source, field, message, level))

    document = as_dict(doc.get("document")) if isinstance(doc, dict) else None
    if document is None or not isinstance(doc, dict):
        err("document", "a CSAF document has a 'document' object")
        return IngestResult(errors=errors, report=report, format="csaf")
    tracking = as_dict(document.get("tracking")) or {}
    doc_id = text(tracking.get("id"))
    when = timestamp(tracking.get("current_release_date")) or timestamp(tracking.get("initial_release_date"))
    if doc_id is None:
        err("document.tracking.id", "required: the document id")
    if when is None:
        err("document.tracking.current_release_date", "required: an RFC 3339 timestamp")
    if document.get("category") != "csaf_vex":
        err("document.category", f"expected 'csaf_vex', got {document.get('category')!r}", "warning")
    if doc_id is None or when is None:
        return IngestResult(errors=errors, report=report, format="csaf")
    index = product_index(as_dict(doc.get("product_tree")) or {})
    messages: list[VexStatement] = []
    for i, vuln in enumerate(as_list(doc.get("vulnerabilities"))):
        at = f"vulnerabilities[{i}]"
        vuln = as_dict(vuln) or {}
        ids = [text((as_dict(x) or {}).get("text")) for x in as_list(vuln.get("ids"))]
        names = [n for n in [text(vuln.get("cve")), *ids] if n]
        if not names:
            err(f"{at}.cve", "a vulnerability needs a cve or ids[].text")
            continue
        justification_of: dict[str, str] = {}
        for flag in as_list(vuln.get("flags")):
            flag = as_dict(flag) or {}
            for pid in as_list(flag.get("product_ids")):
                if isinstance(pid, str) and text(flag.get("label")):
                    justification_of[pid] = str(flag["label"])
        status_block = as_dict(vuln.get("product_status")) or {}
        groups: dict[tuple[VexStatus, str | None], list[VexProduct]] = {}
        for group, status in STATUS_GROUPS.items():
            for k, pid in enumerate(as_list(status_block.get(group))):
                product = index.get(pid) if isinstance(pid, str) else None
                if product is None:
                    count(report, "products_unresolved")
                    err(
                        f"{at}.product_status.{group}[{k}]",
                        f"product {pid!r} has no purl or digest",
                        "warning",
                    )
                    continue
                just = justification_of.get(pid) if status == "not_affected" else None
                groups.setdefault((status, just), []).append(product)
        for (status, just), products in sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1] or "")):
            suffix = f"{status}:{just}" if just else status
            try:
                messages.append(
                    VexStatement.model_validate(
                        {
                            "document_id": doc_id,
                            "statement_id": f"{doc_id}#{i}:{suffix}",
                            "vulnerability": names[0],
                            "aliases": sorted(set(names[1:]) - {names[0]}),
                            "products": dedupe(products),
                            "status": status,
                            "justification": just,
                            "timestamp": when,
                            "tenant": tenant,
                            "format": "csaf",
                        }
                    )
                )
                count(report, "statements")
            except ValidationError as exc:
                err(at, f"does not fit the VEX contract: {exc.errors()[0]['msg']}")
    return IngestResult(messages=messages, errors=errors, report=report, format="csaf")
