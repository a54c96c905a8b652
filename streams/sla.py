"""Priority classes and their SLAs (docs/architecture.md §4).

| class | when | first result due |
|---|---|---|
| emergency | KEV, or critical on a running image | 15 min |
| high | critical/high severity, or any change on a running image | 1 h |
| normal | any other advisory / VEX / policy / inventory / runtime change | 4 h |
| background | rechecks without an explicit priority | 24 h |

A forced priority (a recheck that names one) is a floor, not a ceiling: a KEV hit in the same window still
makes the job an emergency.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from types import MappingProxyType

from schemas.messages import PRIORITY_RANK, SEVERITY_RANK, PriorityClass

DEFAULT_SLA: Mapping[str, timedelta] = MappingProxyType(
    {
        "emergency": timedelta(minutes=15),
        "high": timedelta(hours=1),
        "normal": timedelta(hours=4),
        "background": timedelta(hours=24),
    }
)

# Sources that are changes to what an image is judged against; a recheck only asks to look again.
CHANGE_SOURCES = frozenset({"advisory", "vex", "policy", "inventory", "runtime"})


def classify(
    *,
    severity: str,
    kev: bool,
    running: bool,
    sources: Iterable[str],
    forced: PriorityClass | None = None,
) -> PriorityClass:
    changed = any(s in CHANGE_SOURCES for s in sources)
    derived: PriorityClass
    if kev or (severity == "critical" and running):
        derived = "emergency"
    elif SEVERITY_RANK.get(severity, 0) >= SEVERITY_RANK["high"] or (running and changed):
        derived = "high"
    elif changed:
        derived = "normal"
    else:
        derived = "background"
    if forced is not None and PRIORITY_RANK[forced] > PRIORITY_RANK[derived]:
        return forced
    return derived


def deadline(
    window_end: datetime, priority: PriorityClass, sla: Mapping[str, timedelta] = DEFAULT_SLA
) -> datetime:
    return window_end + sla[priority]
