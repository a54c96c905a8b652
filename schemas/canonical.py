"""The one canonical-JSON encoder every producer in the project uses (docs/architecture.md §3).

Canonical means: keys sorted, no insignificant white space, UTC timestamps as ``YYYY-MM-DDTHH:MM:SSZ``,
and, for payloads that get signed, no floats at all (a float's text is not stable across producers).
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime
from types import UnionType
from typing import Annotated, Any, Literal, Union, get_args, get_origin

import orjson
from pydantic import BaseModel


class CanonicalError(ValueError):
    """A value cannot be encoded canonically (a float in a signed payload, a naive datetime, ...)."""


def format_time(value: datetime) -> str:
    """UTC, whole seconds, trailing Z. Naive datetimes are refused: their zone is a guess."""
    # strftime was a tenth of a rebuild's fold; a log repeats its times (window bounds, a run's events).
    # Only plain UTC datetimes are remembered: within another zone, two wall times one DST fold apart
    # are equal (and hash alike) but are different instants.
    if type(value) is datetime and value.tzinfo is UTC:
        return _format_utc(value)
    if value.tzinfo is None:
        raise CanonicalError(f"naive datetime {value.isoformat()} has no time zone")
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@functools.lru_cache(maxsize=8192)
def _format_utc(value: datetime) -> str:
    return value.strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(text: str) -> datetime:
    """Parse an RFC 3339 timestamp (Z or offset, optional fraction) into an aware UTC datetime."""
    value = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def _normalise(value: Any, allow_floats: bool) -> Any:
    """The value in JSON types with canonical times. Hot (every record every stage publishes): no error
    paths are built here; `_find_float` names where a refused float sits."""
    if isinstance(value, str | int | None):  # bool is an int
        return value
    if isinstance(value, BaseModel):
        return _normalise(value.model_dump(mode="python", by_alias=True), allow_floats)
    if isinstance(value, dict):
        return {str(k): _normalise(v, allow_floats) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_normalise(v, allow_floats) for v in value]
    if isinstance(value, set | frozenset):
        return sorted(_normalise(v, allow_floats) for v in value)
    if isinstance(value, datetime):
        return format_time(value)
    if isinstance(value, float) and not allow_floats:
        raise CanonicalError("float")
    return value


def _find_float(value: Any, path: str) -> str | None:
    if isinstance(value, BaseModel):
        return _find_float(value.model_dump(mode="python", by_alias=True), path)
    if isinstance(value, dict):
        items: Any = ((f"{path}.{k}", v) for k, v in value.items())
    elif isinstance(value, list | tuple | set | frozenset):
        items = ((f"{path}[{i}]", v) for i, v in enumerate(value))
    else:
        return (path or "$") if isinstance(value, float) else None
    for where, item in items:
        if (found := _find_float(item, where)) is not None:
            return found
    return None


# ------------------------------------------------------------------ the fast path for float-free models
#
# Most messages cannot hold a float at all: every field is a string, an int, a bool, a Literal, a time, or
# lists / str-keyed dicts / models of those. For their classes orjson walks the dumped model in C (times and
# sets through `_default`), instead of `_normalise` walking it in Python: the same bytes (tests/unit/
# test_canonical.py compares both on every message class), at about half the cost. Everything else (a
# float or Any field, a dict keyed by non-strings, plain dicts and lists) takes the walk.

_SCALARS: frozenset[Any] = frozenset({str, int, bool, type(None), datetime})
_fast: dict[type, bool] = {}


def _float_free(annotation: Any) -> bool:
    if annotation in _SCALARS:
        return True
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return _fast_model(annotation)
    origin, args = get_origin(annotation), get_args(annotation)
    if origin is Literal:
        return all(isinstance(a, str | int | None) for a in args)
    if origin is Annotated:
        return _float_free(args[0])
    if origin in (list, set, frozenset, Union, UnionType):
        return all(_float_free(a) for a in args)
    if origin is tuple:
        return all(a is Ellipsis or _float_free(a) for a in args)
    if origin is dict:
        return args[0] is str and _float_free(args[1])
    return False


def _fast_model(cls: type[BaseModel]) -> bool:
    known = _fast.get(cls)
    if known is None:
        _fast[cls] = True  # provisional, for self-referencing models
        known = _fast[cls] = all(_float_free(f.annotation) for f in cls.model_fields.values())
    return known


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return format_time(value)
    if isinstance(value, set | frozenset):
        return sorted(_normalise(v, False) for v in value)
    raise TypeError(type(value).__name__)


_FAST_OPTIONS = orjson.OPT_SORT_KEYS | orjson.OPT_PASSTHROUGH_DATETIME


def _slow_dumps(value: Any, *, allow_floats: bool = False) -> bytes:
    try:
        normal = _normalise(value, allow_floats)
    except CanonicalError as exc:
        if str(exc) != "float":
            raise
        where = _find_float(value, "")
        raise CanonicalError(
            f"float at {where}: signed payloads carry numbers as integers or strings"
        ) from None
    return orjson.dumps(normal, option=orjson.OPT_SORT_KEYS)


def dumps(value: Any, *, allow_floats: bool = False) -> bytes:
    """Canonical JSON bytes for a model, dict or list."""
    if isinstance(value, BaseModel) and _fast_model(type(value)):
        try:
            return orjson.dumps(
                value.model_dump(mode="python", by_alias=True), default=_default, option=_FAST_OPTIONS
            )
        except orjson.JSONEncodeError:
            pass  # e.g. a naive time: the walk raises the error that names it
    return _slow_dumps(value, allow_floats=allow_floats)


def loads(data: bytes | str) -> Any:
    return orjson.loads(data)
