"""CycloneDX 1.2-1.6 JSON and SPDX 2.2/2.3 JSON SBOMs → one Inventory.

Tenant is always the caller's; image digest, repository and observed time come from the caller when
given, else from the document: CycloneDX ``metadata.component`` (an ``pkg:oci/…@sha256:…`` purl, a
container whose version is a digest as syft writes it, or a SHA-256 hash) and ``metadata.timestamp``;
SPDX a CONTAINER / ``pkg:oci`` package, ``name`` when it reads as an image reference, and
``creationInfo.created``. Components without a purl are counted and skipped. Duplicates (same package
and version) collapse to the one with the smallest canonical purl, and components are sorted by
(package, version). An SBOM with no usable purl at all is refused: publishing an empty inventory would
erase what the scheduler knows about the image.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from pydantic import ValidationError

from ingest.document import as_dict, as_list, load_json, text, timestamp
from ingest.result import IngestError, IngestResult, count
from schemas.digest import digest_problem
from schemas.messages import Component, Inventory
from schemas.purl import Purl, normalise

_DIGEST_RE = re.compile(r"^sha256:[0-9a-f]{64}$")
_IMAGE_REF_RE = re.compile(
    r"^(?P<repo>[a-z0-9.\-]+(?::\d+)?/[a-z0-9._/\-]+?)(?::(?P<tag>[\w.\-]+))?(?:@.*)?$"
)


@dataclass
class _Subject:
    """What the document says about the image it describes (each part optional)."""

    digest: str | None = None
    repository: str | None = None
    tags: list[str] = field(default_factory=list)
    digest_field: str = "metadata.component"


def _subject_from_purl(purl_text: str | None, subject: _Subject) -> None:
    purl = normalise(purl_text) if purl_text else None
    if not isinstance(purl, Purl) or purl.type != "oci":
        return
    subject.digest = subject.digest or purl.image_digest
    subject.repository = subject.repository or purl.qualifiers.get("repository_url") or purl.name
    tag = purl.qualifiers.get("tag")
    if tag and tag not in subject.tags:
        subject.tags.append(tag)


def _subject_from_ref(name: str | None, subject: _Subject) -> None:
    match = _IMAGE_REF_RE.match(name or "")
    if match:
        subject.repository = subject.repository or match.group("repo")
        if match.group("tag") and match.group("tag") not in subject.tags:
            subject.tags.append(match.group("tag"))


def _sha256(value: Any) -> str | None:
    hexed = text(value)
    candidate = f"sha256:{hexed.lower()}" if hexed else None
    return candidate if candidate and _DIGEST_RE.match(candidate) else None


def _components(
    purls: list[tuple[str, str | None, str]],
    image_digest: str,
    source: str,
    errors: list[IngestError],
    report: dict[str, int],
) -> list[Component]:
    """(purl text, fallback version, JSON path) → sorted, collapsed components."""
    best: dict[tuple[str, str], Component] = {}
    for purl_text, fallback_version, at in purls:
        purl = normalise(purl_text)
        if not isinstance(purl, Purl):
            count(report, "components_invalid_purl")
            errors.append(IngestError(source, at, f"invalid purl: {purl.message}", "warning"))
            continue
        if purl.image_digest is not None and purl.image_digest == image_digest:
            continue  # the image describing itself is not one of its components
        version = purl.version or fallback_version
        comp = Component(purl=purl.canonical, package=purl.package_key, version=version)
        slot = (comp.package, comp.version or "")
        if slot in best:
            count(report, "duplicates_collapsed")
            if comp.purl >= best[slot].purl:
                continue
        best[slot] = comp
    report["components"] = len(best)
    return [best[k] for k in sorted(best)]


def _assemble(
    source: str,
    fmt: str,
    subject: _Subject,
    purls: list[tuple[str, str | None, str]],
    doc_time: datetime | None,
    doc_time_field: str,
    doc_source: str,
    errors: list[IngestError],
    report: dict[str, int],
    *,
    tenant: str,
    image_digest: str | None,
    repository: str | None,
    observed_at: datetime | None,
) -> IngestResult[Inventory]:
    def err(f: str, message: str, level: Literal["error", "warning"] = "error") -> None:
        errors.append(IngestError(source, f, message, level))

    digest = image_digest or subject.digest
    when = observed_at or doc_time
    if digest is None:
        err(subject.digest_field, "no image digest in the document; pass image_digest")
    elif (problem := digest_problem(digest)) is not None:
        err("image_digest" if image_digest else subject.digest_field, problem)
        digest = None
    if when is None:
        err(doc_time_field, "no timestamp in the document; pass observed_at")
    components = _components(purls, digest or "", source, errors, report)
    if not components:
        err("components" if fmt == "cyclonedx" else "packages", "no component carries a usable purl")
    if digest is None or when is None or not components:
        return IngestResult(errors=errors, report=report, format=fmt)
    try:
        inventory = Inventory.model_validate(
            {
                "tenant": tenant,
                "image_digest": digest,
                "repository": repository or subject.repository or "",
                "tags": sorted(set(subject.tags)),
                "components": components,
                "observed_at": when,
                "source": doc_source,
            }
        )
    except ValidationError as exc:
        err("$", f"does not fit the inventory contract: {exc.errors()[0]['msg']}")
        return IngestResult(errors=errors, report=report, format=fmt)
    return IngestResult(messages=[inventory], errors=errors, report=report, format=fmt)


def parse_cyclonedx_sbom(
    data: bytes,
    source: str,
    *,
    tenant: str,
    image_digest: str | None = None,
    repository: str | None = None,
    observed_at: datetime | None = None,
) -> IngestResult[Inventory]:
    doc = load_json(data, source)
    report: dict[str, int] = {"components_without_purl": 0}
    if isinstance(doc, IngestError):
        return IngestResult(errors=[doc], report=report, format="cyclonedx")
    errors: list[IngestError] = []
    if not isinstance(doc, dict) or doc.get("bomFormat") != "CycloneDX":
        errors.append(IngestError(source, "bomFormat", "a CycloneDX document has bomFormat 'CycloneDX'"))
        return IngestResult(errors=errors, report=report, format="cyclonedx")
    spec = str(doc.get("specVersion", ""))
    if spec not in ("1.2", "1.3", "1.4", "1.5", "1.6"):
        errors.append(IngestError(source, "specVersion", f"untested CycloneDX version {spec!r}", "warning"))
    metadata = as_dict(doc.get("metadata")) or {}
    main = as_dict(metadata.get("component")) or {}
    subject = _Subject()
    _subject_from_purl(text(main.get("purl")), subject)
    if main.get("type") == "container":
        version = text(main.get("version"))
        if version and _DIGEST_RE.match(version.lower()):
            subject.digest = subject.digest or version.lower()
        _subject_from_ref(text(main.get("name")), subject)
    for h in as_list(main.get("hashes")):
        h = as_dict(h) or {}
        if str(h.get("alg", "")).upper() == "SHA-256":
            subject.digest = subject.digest or _sha256(h.get("content"))
    purls: list[tuple[str, str | None, str]] = []
    stack: list[tuple[str, Any]] = [
        (f"components[{i}]", c) for i, c in enumerate(as_list(doc.get("components")))
    ]
    while stack:
        at, comp = stack.pop(0)
        if not isinstance(comp, dict):
            continue
        purl = text(comp.get("purl"))
        if purl is None:
            count(report, "components_without_purl")
        else:
            purls.append((purl, text(comp.get("version")), f"{at}.purl"))
        stack.extend((f"{at}.components[{j}]", c) for j, c in enumerate(as_list(comp.get("components"))))
    serial = text(doc.get("serialNumber")) or source
    return _assemble(
        source,
        "cyclonedx",
        subject,
        purls,
        timestamp(metadata.get("timestamp")),
        "metadata.timestamp",
        serial,
        errors,
        report,
        tenant=tenant,
        image_digest=image_digest,
        repository=repository,
        observed_at=observed_at,
    )


def _spdx_purl(package: dict[str, Any]) -> str | None:
    for ref in as_list(package.get("externalRefs")):
        ref = as_dict(ref) or {}
        category = str(ref.get("referenceCategory", "")).upper().replace("_", "-")
        if category == "PACKAGE-MANAGER" and ref.get("referenceType") == "purl":
            return text(ref.get("referenceLocator"))
    return None


def parse_spdx_sbom(
    data: bytes,
    source: str,
    *,
    tenant: str,
    image_digest: str | None = None,
    repository: str | None = None,
    observed_at: datetime | None = None,
) -> IngestResult[Inventory]:
    doc = load_json(data, source)
    report: dict[str, int] = {"components_without_purl": 0}
    if isinstance(doc, IngestError):
        return IngestResult(errors=[doc], report=report, format="spdx")
    errors: list[IngestError] = []
    if not isinstance(doc, dict) or not str(doc.get("spdxVersion", "")).startswith("SPDX-2."):
        errors.append(IngestError(source, "spdxVersion", "an SPDX 2.x document has spdxVersion 'SPDX-2.x'"))
        return IngestResult(errors=errors, report=report, format="spdx")
    subject = _Subject(digest_field="packages")
    packages = as_list(doc.get("packages"))
    purls: list[tuple[str, str | None, str]] = []
    for i, package in enumerate(packages):
        package = as_dict(package) or {}
        purl = _spdx_purl(package)
        if package.get("primaryPackagePurpose") == "CONTAINER" or (purl or "").startswith("pkg:oci/"):
            _subject_from_purl(purl, subject)
            for checksum in as_list(package.get("checksums")):
                checksum = as_dict(checksum) or {}
                if checksum.get("algorithm") == "SHA256":
                    subject.digest = subject.digest or _sha256(checksum.get("checksumValue"))
        if purl is None:
            count(report, "components_without_purl")
        else:
            purls.append((purl, text(package.get("versionInfo")), f"packages[{i}].externalRefs"))
    _subject_from_ref(text(doc.get("name")), subject)
    created = (as_dict(doc.get("creationInfo")) or {}).get("created")
    return _assemble(
        source,
        "spdx",
        subject,
        purls,
        timestamp(created),
        "creationInfo.created",
        text(doc.get("documentNamespace")) or text(doc.get("name")) or source,
        errors,
        report,
        tenant=tenant,
        image_digest=image_digest,
        repository=repository,
        observed_at=observed_at,
    )
