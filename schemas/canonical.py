"""The one canonical-JSON encoder every producer in the project uses (docs/architecture.md §3).

Canonical means: keys sorted, no insignificant white space, UTC timestamps as ``YYYY-MM-DDTHH:MM:SSZ``,
and, for payloads that get signed, no floats at all (a float's text is not stable across producers).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
from pydantic import BaseModel


class CanonicalError(ValueError):
    """A value cannot be encoded canonically (a float in a signed payload, a naive datetime, ...)."""


def format_time(value: datetime) -> str:
    """UTC, whole seconds, trailing Z. Naive datetimes are refused: their zone is a guess."""
    if value.tzinfo is None:
        raise CanonicalError(f"naive datetime {value.isoformat()} has no time zone")
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str) -> datetime:
    """Parse an RFC 3339 timestamp (Z or offset, optional fraction) into an aware UTC datetime."""
    value = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _normalise(value: Any, *, allow_floats: bool, path: str) -> Any:
    if isinstance(value, BaseModel):
        dumped = value.model_dump(mode="python", by_alias=True)
        return _normalise(dumped, allow_floats=allow_floats, path=path)
    if isinstance(value, dict):
        return {
            str(k): _normalise(v, allow_floats=allow_floats, path=f"{path}.{k}") for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_normalise(v, allow_floats=allow_floats, path=f"{path}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, set | frozenset):
        return sorted(_normalise(v, allow_floats=allow_floats, path=path) for v in value)
    if isinstance(value, datetime):
        return format_time(value)
    if isinstance(value, float) and not allow_floats:
        raise CanonicalError(f"float at {path or '$'}: signed payloads carry numbers as integers or strings")
    return value


def dumps(value: Any, *, allow_floats: bool = False) -> bytes:
    """Canonical JSON bytes for a model, dict or list."""
    return orjson.dumps(_normalise(value, allow_floats=allow_floats, path=""), option=orjson.OPT_SORT_KEYS)


def loads(data: bytes | str) -> Any:
    return orjson.loads(data)
