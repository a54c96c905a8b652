"""Hybrid logical clock timestamps ``physical_ms:logical:node`` (Kulkarni et al., 2014).

The physical part never goes backwards: when the clock (here: the event time of the fact being recorded)
steps back or stands still, the logical counter grows instead. The counter is bounded (``LOGICAL_MAX``) so
the text form stays short; past it the physical part is advanced by one millisecond and the counter starts
again at 0, which keeps the order strict at the price of running up to a millisecond per 65536 events ahead
of the clock.
"""

from __future__ import annotations

from dataclasses import dataclass

LOGICAL_MAX = 0xFFFF


class HlcError(ValueError):
    """Text that is not ``physical_ms:logical:node``."""


@dataclass(frozen=True, order=True, slots=True)
class Hlc:
    physical_ms: int
    logical: int
    node: str

    def __str__(self) -> str:
        return f"{self.physical_ms}:{self.logical}:{self.node}"

    @classmethod
    def parse(cls, text: str) -> Hlc:
        parts = text.split(":", 2)
        if len(parts) != 3 or not parts[0].isdigit() or not parts[1].isdigit():
            raise HlcError(f"not an HLC timestamp (physical_ms:logical:node): {text!r}")
        logical = int(parts[1])
        if logical > LOGICAL_MAX:
            raise HlcError(f"logical counter {logical} exceeds {LOGICAL_MAX}: {text!r}")
        return cls(int(parts[0]), logical, parts[2])


def _next(physical_ms: int, logical: int, node: str) -> Hlc:
    if logical > LOGICAL_MAX:
        return Hlc(physical_ms + 1, 0, node)
    return Hlc(physical_ms, logical, node)


def tick(last: Hlc | None, now_ms: int, node: str) -> Hlc:
    """The timestamp of a local (or send) event at clock reading ``now_ms``: later than ``last``."""
    if last is None or now_ms > last.physical_ms:
        return Hlc(max(now_ms, 0), 0, node)
    return _next(last.physical_ms, last.logical + 1, node)


def receive(last: Hlc | None, remote: Hlc, now_ms: int, node: str) -> Hlc:
    """The timestamp of receiving a message stamped ``remote``: later than both ``last`` and ``remote``."""
    last_ms = last.physical_ms if last is not None else -1
    physical = max(last_ms, remote.physical_ms, now_ms)
    if physical == last_ms and last is not None and physical == remote.physical_ms:
        logical = max(last.logical, remote.logical) + 1
    elif physical == last_ms and last is not None:
        logical = last.logical + 1
    elif physical == remote.physical_ms:
        logical = remote.logical + 1
    else:
        logical = 0
    return _next(physical, logical, node)


def key(stamp: Hlc) -> tuple[int, int, str]:
    """Total order: physical, then logical, then node (ties between nodes broken by name)."""
    return (stamp.physical_ms, stamp.logical, stamp.node)
