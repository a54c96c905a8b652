"""Where a table partition's bulk catch-up starts and when it is done (agents/bulk_recovery.py).

Offsets follow faust's recovery (faust/tables/recovery.py): a partition's *applied* offset is the offset of the
last changelog record its local table holds (-1 or None: none), its *highwater* the offset of the last record
in the changelog (end offset - 1; -1 for an empty changelog).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import TypeVar

K = TypeVar("K", bound=Hashable)


def behind(applied: Mapping[K, int | None], highwaters: Mapping[K, int | None]) -> dict[K, int]:
    """The partitions whose table lags its changelog, each with the first offset to fetch."""
    out: dict[K, int] = {}
    for tp, highwater in highwaters.items():
        if highwater is None or tp not in applied:
            continue
        last = applied[tp]
        first = 0 if last is None or last < 0 else last + 1
        if first <= highwater:
            out[tp] = first
    return out


def applied_after(last_record: int | None, position: int, highwater: int) -> int | None:
    """The applied offset once the fetch position is ``position``, if the partition is caught up.

    Compaction leaves gaps, so the last record read may lie before the highwater although nothing is left:
    caught up means the position (the next offset to fetch) passed the highwater."""
    if position <= highwater:
        return None
    return highwater if last_record is None else max(last_record, highwater)
