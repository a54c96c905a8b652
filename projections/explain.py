"""Explain answers from the images read model (``GET .../findings/{vuln}/explain``, ``stella-sched explain``).
Pure: a document in, the answer out, so the API and the CLI answer the same question the same way."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def matches_vuln(trace: Mapping[str, Any], vuln: str) -> bool:
    """A trace answers for ``vuln`` when it is the advisory's id or one of its aliases."""
    return trace.get("id") == vuln or vuln in (trace.get("aliases") or [])


def finding_explain(doc: Mapping[str, Any], vuln: str) -> dict[str, Any] | None:
    """The image's traces for one vulnerability (sorted as stored), or None when the image's last
    evaluation matched no component against it."""
    traces = [t for t in doc.get("traces") or [] if isinstance(t, Mapping) and matches_vuln(t, vuln)]
    if not traces:
        return None
    return {
        "tenant": doc.get("tenant"),
        "image_digest": doc.get("image_digest"),
        "vulnerability": vuln,
        "verdict": doc.get("verdict"),
        "evaluated_at": doc.get("evaluated_at"),
        "evaluated_job_id": doc.get("evaluated_job_id"),
        "traces": [dict(t) for t in traces],
    }
