"""Byte framing shared by the state encoders: an orjson header followed by opaque binary blobs.

Changelog-backed tables store values as bytes. JSON cannot carry roaring bitmaps compactly, so a value is
``u32 header length | orjson header | blob 0 | blob 1 ...`` and the header records each blob's length.
Times in state are integer epoch seconds: cheaper than text and exact (messages carry whole seconds).
"""

from __future__ import annotations

import struct
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import orjson

_LEN = struct.Struct(">I")


class StateDecodeError(ValueError):
    """Bytes that are not a state value this version of the code wrote."""


def pack(header: dict[str, Any], blobs: list[bytes] = []) -> bytes:  # noqa: B006 - never mutated
    head = orjson.dumps({**header, "_blobs": [len(b) for b in blobs]}, option=orjson.OPT_SORT_KEYS)
    return b"".join([_LEN.pack(len(head)), head, *blobs])


def unpack(data: bytes) -> tuple[dict[str, Any], list[bytes]]:
    if len(data) < _LEN.size:
        raise StateDecodeError("state value too short")
    (size,) = _LEN.unpack_from(data, 0)
    try:
        header = orjson.loads(data[_LEN.size : _LEN.size + size])
    except orjson.JSONDecodeError as exc:
        raise StateDecodeError(f"bad state header: {exc}") from None
    if not isinstance(header, dict):
        raise StateDecodeError("state header is not an object")
    blobs: list[bytes] = []
    pos = _LEN.size + size
    for length in header.pop("_blobs", []):
        blobs.append(data[pos : pos + length])
        pos += length
    if pos != len(data):
        raise StateDecodeError("state value has trailing or missing bytes")
    return header, blobs


def to_epoch(value: datetime) -> int:
    return int(value.timestamp())


@lru_cache(maxsize=1 << 16)
def from_epoch(value: int) -> datetime:
    # Cached: a window's jobs repeat the same few instants (window bounds, advisories' modified times), and
    # building an aware datetime costs more than the rest of a job's times; datetimes are immutable.
    return datetime.fromtimestamp(value, tz=UTC)
