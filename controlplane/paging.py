"""Opaque page cursors and ``min_position`` parsing."""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any

import orjson

from controlplane.errors import ApiError
from projections.store import After

_VERSION = 1
INT64 = (-(2**63), 2**63 - 1)


def encode_cursor(kind: str, after: After | None) -> str | None:
    """An opaque token for the page after ``after``; bound to the listing ``kind`` it came from."""
    if after is None:
        return None
    raw = orjson.dumps([_VERSION, kind, after[0], after[1]])
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_cursor(kind: str, token: str | None) -> After | None:
    if not token:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
        data: Any = orjson.loads(raw)
    except (binascii.Error, ValueError):
        raise ApiError(422, "invalid_cursor", "cursor is not a token this API issued") from None
    if (
        not isinstance(data, list)
        or len(data) != 4
        or data[0] != _VERSION
        or data[1] != kind
        or not isinstance(data[3], str)
        or not isinstance(data[2], str | int)
    ):
        raise ApiError(422, "invalid_cursor", "cursor is not a token for this listing")
    if isinstance(data[2], bool) or (isinstance(data[2], int) and not INT64[0] <= data[2] <= INT64[1]):
        # The store compares it with int64 fields; a bigger number is no cursor this API issued.
        raise ApiError(422, "invalid_cursor", "cursor is not a token for this listing")
    return (data[2], data[3])


@dataclass(frozen=True, slots=True)
class MinPosition:
    topic: str
    partition: int
    offset: int


def parse_min_position(text: str) -> MinPosition:
    topic, sep1, rest = text.rpartition(":")
    topic, sep2, partition = topic.rpartition(":")
    if not (sep1 and sep2 and topic):
        raise ApiError(422, "invalid_min_position", "min_position must be topic:partition:offset")
    try:
        part, offset = int(partition), int(rest)
    except ValueError:
        raise ApiError(422, "invalid_min_position", "partition and offset must be integers") from None
    if part < 0 or offset < 0:
        raise ApiError(422, "invalid_min_position", "partition and offset must be >= 0")
    return MinPosition(topic, part, offset)
