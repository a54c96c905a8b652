"""Turning input bytes into plain data, and the small typed accessors the adapters share.

YAML is loaded with every scalar kept as text except booleans and null: a PyPA record's ``fixed: 2.10``
must stay "2.10", not become the float 2.1, and an unquoted timestamp must not become a datetime.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
import yaml

from ingest.result import IngestError
from schemas.canonical import parse_time


class _TextLoader(yaml.SafeLoader):
    """SafeLoader without the int / float / timestamp resolvers (their scalars stay str)."""


_TextLoader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if not tag.endswith((":int", ":float", ":timestamp"))]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def load_json(data: bytes, source: str) -> Any | IngestError:
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        return IngestError(source, "$", f"not JSON: {exc}")


def load_json_or_yaml(data: bytes, source: str) -> Any | IngestError:
    """JSON first (fast, exact); YAML with text scalars when that fails."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        pass
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return IngestError(source, "$", f"neither JSON nor UTF-8 YAML: {exc}")
    try:
        return yaml.load(text, Loader=_TextLoader)
    except yaml.YAMLError as exc:
        return IngestError(source, "$", f"neither JSON nor YAML: {str(exc).splitlines()[0]}")
    except RecursionError:
        return IngestError(source, "$", "YAML nests too deeply")


def as_dict(value: Any) -> dict[str, Any] | None:
    return value if isinstance(value, dict) else None


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def text(value: Any) -> str | None:
    """A non-empty string, or None."""
    return value if isinstance(value, str) and value.strip() else None


def scalar_text(value: Any) -> str | None:
    """Text from a string or a number an author forgot to quote (never a float: its text is lossy)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    return text(value)


def timestamp(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        return parse_time(value.strip())
    except (ValueError, OverflowError):
        return None


def truthy(value: Any) -> bool:
    """JSON true, YAML true/yes, or a non-empty date/object (how some feeds mark KEV listing)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        return value.strip().lower() in ("true", "yes", "1") or timestamp(value) is not None
    return isinstance(value, dict) and bool(value)
