"""CVSS 3.0 / 3.1 base score from a vector, and the qualitative rating (FIRST CVSS v3.1 spec §7).

Scores are returned in tenths (an int) so no float leaves this module: 98 means 9.8.
"""

from __future__ import annotations

import math

_AV = {"N": 0.85, "A": 0.62, "L": 0.55, "P": 0.2}
_AC = {"L": 0.77, "H": 0.44}
_PR_UNCHANGED = {"N": 0.85, "L": 0.62, "H": 0.27}
_PR_CHANGED = {"N": 0.85, "L": 0.68, "H": 0.5}
_UI = {"N": 0.85, "R": 0.62}
_CIA = {"H": 0.56, "L": 0.22, "N": 0.0}
_BASE = ("AV", "AC", "PR", "UI", "S", "C", "I", "A")


def _roundup(value: float) -> int:
    """The spec's Roundup, in tenths; integer arithmetic avoids 4.000001 → 4.1 float artefacts."""
    scaled = round(value * 100_000)
    if scaled % 10_000 == 0:
        return scaled // 10_000
    return math.floor(scaled / 10_000) + 1


def parse_vector(vector: str) -> dict[str, str] | None:
    parts = [p for p in vector.strip().split("/") if p]
    if not parts or parts[0] not in ("CVSS:3.0", "CVSS:3.1"):
        return None
    metrics: dict[str, str] = {}
    for part in parts[1:]:
        key, colon, value = part.partition(":")
        if not colon or key in metrics:
            return None
        metrics[key] = value
    return metrics if all(k in metrics for k in _BASE) else None


def base_score_tenths(vector: str) -> int | None:
    """Base score times 10 for a CVSS 3.x vector; None if the vector is not a valid 3.x base vector."""
    m = parse_vector(vector)
    if m is None:
        return None
    try:
        changed = {"U": False, "C": True}[m["S"]]
        av, ac, ui = _AV[m["AV"]], _AC[m["AC"]], _UI[m["UI"]]
        pr = (_PR_CHANGED if changed else _PR_UNCHANGED)[m["PR"]]
        c, i, a = _CIA[m["C"]], _CIA[m["I"]], _CIA[m["A"]]
    except KeyError:
        return None
    iss = 1 - (1 - c) * (1 - i) * (1 - a)
    impact = 7.52 * (iss - 0.029) - 3.25 * (iss - 0.02) ** 15 if changed else 6.42 * iss
    exploitability = 8.22 * av * ac * pr * ui
    if impact <= 0:
        return 0
    total = 1.08 * (impact + exploitability) if changed else impact + exploitability
    return _roundup(min(total, 10.0))


def rating(tenths: int) -> str:
    if tenths == 0:
        return "none"
    if tenths < 40:
        return "low"
    if tenths < 70:
        return "medium"
    if tenths < 90:
        return "high"
    return "critical"
