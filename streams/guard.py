"""Position-guarded table values: the at-least-once rule for every changelog-backed table.

A faust worker may write a table's changelog record and then die before it commits the input offset; on
recovery the input is delivered again. Each stored value therefore carries, per source (topic/partition),
the offset of the last input that changed it, and an input whose offset is not greater is a duplicate.

The shell must also publish an input's outputs, and await their acks, *before* it writes the table: a
crash in between leaves the old value, the input is redelivered, the pure fold recomputes the very same
outputs (deterministic ids) and consumers dedupe them. The opposite order could lose outputs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import orjson


@dataclass(frozen=True)
class Guarded:
    """An encoded state plus the positions it has absorbed."""

    state: bytes | None = None
    positions: dict[str, int] = field(default_factory=dict)

    def seen(self, source: str, offset: int) -> bool:
        """True when the input at `offset` of `source` is already reflected in this value."""
        last = self.positions.get(source)
        return last is not None and offset <= last

    def advance(self, state: bytes | None, source: str, offset: int) -> Guarded:
        positions = dict(self.positions)
        positions[source] = max(offset, positions.get(source, -1))
        return Guarded(state, positions)


def source_of(topic: str, partition: int) -> str:
    return f"{topic}/{partition}"


def encode(value: Guarded) -> bytes:
    """Frame: 4-byte length of the positions JSON, the JSON, then the raw state (absent = None)."""
    head = orjson.dumps(value.positions, option=orjson.OPT_SORT_KEYS)
    marker = b"\x00" if value.state is None else b"\x01"
    return len(head).to_bytes(4, "big") + head + marker + (value.state or b"")


def decode(data: bytes | None) -> Guarded:
    if not data:
        return Guarded()
    size = int.from_bytes(data[:4], "big")
    positions = orjson.loads(data[4 : 4 + size])
    marker = data[4 + size : 5 + size]
    state = data[5 + size :] if marker == b"\x01" else None
    return Guarded(state, {str(k): int(v) for k, v in positions.items()})
