"""Small local json → message loaders for the impact-core tests (the real adapters live in ingest/)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from schemas.canonical import parse_time
from schemas.messages import AdvisoryDelta, Component, Inventory
from schemas.purl import Purl, normalise, package_key_for

_SEVERITY = {"CRITICAL": "critical", "HIGH": "high", "MODERATE": "medium", "MEDIUM": "medium", "LOW": "low"}


def inventory_from_cyclonedx(
    path: Path, *, tenant: str = "t1", digest: str = "sha256:" + "a" * 64, observed_at: datetime | None = None
) -> Inventory:
    doc = json.loads(path.read_text())
    components = []
    for comp in doc.get("components", []):
        parsed = normalise(comp.get("purl", ""))
        if isinstance(parsed, Purl):
            components.append(
                Component(purl=parsed.canonical, package=parsed.package_key, version=parsed.version)
            )
    return Inventory.model_validate(
        {
            "tenant": tenant,
            "image_digest": digest,
            "repository": "example/vdm-editor",
            "components": components,
            "observed_at": observed_at or datetime(2024, 6, 1, tzinfo=UTC),
            "source": path.name,
        }
    )


def advisory_from_osv(path: Path) -> AdvisoryDelta:
    doc: dict[str, Any] = json.loads(path.read_text())
    affected = []
    for entry in doc.get("affected", []):
        pkg = entry.get("package", {})
        key = package_key_for(pkg["ecosystem"], pkg["name"])
        assert key is not None
        affected.append(
            {
                "package": key,
                "ecosystem": pkg["ecosystem"],
                "name": pkg["name"],
                "ranges": [{"type": r["type"], "events": r["events"]} for r in entry.get("ranges", [])],
                "versions": entry.get("versions", []),
            }
        )
    severity = _SEVERITY.get(str(doc.get("database_specific", {}).get("severity", "")).upper(), "unknown")
    return AdvisoryDelta.model_validate(
        {
            "id": doc["id"],
            "aliases": doc.get("aliases", []),
            "modified": parse_time(doc["modified"]),
            "withdrawn": parse_time(doc["withdrawn"]) if doc.get("withdrawn") else None,
            "summary": doc.get("summary", ""),
            "severity": severity,
            "affected": affected,
        }
    )
