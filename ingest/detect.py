"""One entry point for every input file: ``parse_file(kind, data, source, **opts)``.

``kind`` says what the file is for (sbom, osv, vex, policy, runtime, recheck); the format inside a kind is
recognised from the document itself: CycloneDX by ``bomFormat``, SPDX by ``spdxVersion``, OpenVEX by its
``@context`` or a ``statements`` list, CSAF by ``document.csaf_version``. Policy, runtime and recheck files
are JSON or YAML documents (one object, or a list) shaped like their message models.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ValidationError

from ingest.csaf import parse_csaf
from ingest.cyclonedx_vex import parse_cyclonedx_vex
from ingest.document import identify, load_json_or_yaml
from ingest.kinds import KINDS
from ingest.openvex import parse_openvex
from ingest.osv import parse_osv
from ingest.result import IngestError, IngestResult
from ingest.sbom import parse_cyclonedx_sbom, parse_spdx_sbom
from schemas.digest import digest_problems
from schemas.messages import PolicyChange, Recheck, RuntimeEvent

_MODELS: dict[str, type[BaseModel]] = {"policy": PolicyChange, "runtime": RuntimeEvent, "recheck": Recheck}


def detect_format(kind: str, doc: Any) -> str | None:
    """The format name of an already-loaded document of this kind, or None."""
    if not isinstance(doc, dict):
        return "osv" if kind == "osv" and isinstance(doc, list) else None
    if kind == "sbom":
        if doc.get("bomFormat") == "CycloneDX":
            return "cyclonedx"
        return "spdx" if "spdxVersion" in doc else None
    if kind == "vex":
        if "openvex" in str(doc.get("@context", "")) or isinstance(doc.get("statements"), list):
            return "openvex"
        if doc.get("bomFormat") == "CycloneDX":
            return "cyclonedx-vex"
        document = doc.get("document")
        return "csaf" if isinstance(document, dict) and "csaf_version" in document else None
    if kind == "osv":
        return "osv"
    return kind if kind in _MODELS else None


_KIND_NAMES = {
    "sbom": "an SBOM",
    "osv": "an OSV advisory",
    "vex": "a VEX document",
    "policy": "a policy change",
    "runtime": "a runtime event",
    "recheck": "a recheck",
}


def _wrong_kind(kind: str, data: bytes, source: str) -> IngestError | None:
    """An error naming what the file is when it is plainly another kind (an SBOM given as an advisory)."""
    head = data.lstrip()[:1]
    if head not in (b"{", b"["):  # only JSON documents are identified (cheap, and YAML is never an SBOM)
        return None
    doc = load_json_or_yaml(data, source)
    if isinstance(doc, IngestError):
        return None  # the kind's own parser reports it
    found = identify(doc)
    if found is None or found[0] == kind:
        return None
    return IngestError(
        source,
        "$",
        f"this file is {found[1]}, not {_KIND_NAMES.get(kind, kind)}; publish it as {found[0]!r}",
    )


def validation_errors(exc: ValidationError, source: str, prefix: str = "") -> list[IngestError]:
    """Pydantic errors as IngestErrors with JSON paths (``selector.namespaces[0]``)."""
    out = []
    for e in exc.errors():
        path = prefix
        for part in e["loc"]:
            path = f"{path}[{part}]" if isinstance(part, int) else (f"{path}.{part}" if path else str(part))
        out.append(IngestError(source, path or "$", e["msg"]))
    return out


def parse_model_document(kind: str, data: bytes, source: str) -> IngestResult[Any]:
    model = _MODELS[kind]
    doc = load_json_or_yaml(data, source)
    if isinstance(doc, IngestError):
        return IngestResult(errors=[doc], report={"documents": 0}, format=kind)
    items: Sequence[tuple[str, Any]] = (
        [(f"[{i}]", d) for i, d in enumerate(doc)] if isinstance(doc, list) else [("", doc)]
    )
    messages: list[Any] = []
    errors: list[IngestError] = []
    for prefix, item in items:
        if not isinstance(item, dict):
            errors.append(
                IngestError(source, prefix or "$", f"expected an object, got {type(item).__name__}")
            )
            continue
        try:
            message = model.model_validate(item)
        except ValidationError as exc:
            errors.extend(validation_errors(exc, source, prefix))
            continue
        bad = digest_problems(message)
        errors.extend(IngestError(source, f"{prefix}.{f}" if prefix else f, p) for f, p in bad)
        if not bad:
            messages.append(message)
    return IngestResult(
        messages=messages,
        errors=errors,
        report={"documents": len(items), "valid": len(messages)},
        format=kind,
    )


def parse_file(
    kind: str,
    data: bytes,
    source: str,
    *,
    tenant: str | None = None,
    image_digest: str | None = None,
    repository: str | None = None,
    observed_at: datetime | None = None,
    kev_ids: frozenset[str] = frozenset(),
) -> IngestResult[Any]:
    if kind not in KINDS:
        return IngestResult(
            errors=[IngestError(source, "$", f"unknown kind {kind!r}; one of {', '.join(KINDS)}")]
        )
    mismatch = _wrong_kind(kind, data, source)
    if mismatch is not None:
        return IngestResult(errors=[mismatch], format="")
    if kind == "osv":
        return parse_osv(data, source, kev_ids=kev_ids)
    if kind in _MODELS:
        return parse_model_document(kind, data, source)
    doc = load_json_or_yaml(data, source)
    if isinstance(doc, IngestError):
        return IngestResult(errors=[doc], format=kind)
    fmt = detect_format(kind, doc)
    if kind == "sbom":
        if tenant is None:
            return IngestResult(errors=[IngestError(source, "$", "an SBOM needs a tenant")], format=fmt or "")
        opts: dict[str, Any] = {
            "image_digest": image_digest,
            "repository": repository,
            "observed_at": observed_at,
        }
        if fmt == "cyclonedx":
            return parse_cyclonedx_sbom(data, source, tenant=tenant, **opts)
        if fmt == "spdx":
            return parse_spdx_sbom(data, source, tenant=tenant, **opts)
    if kind == "vex":
        if fmt == "openvex":
            return parse_openvex(data, source, tenant=tenant)
        if fmt == "cyclonedx-vex":
            return parse_cyclonedx_vex(data, source, tenant=tenant)
        if fmt == "csaf":
            return parse_csaf(data, source, tenant=tenant)
    return IngestResult(errors=[IngestError(source, "$", f"not a recognised {kind} format")], format="")
