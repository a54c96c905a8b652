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
    """JSON first (fast, exact); YAML with text scalars when that fails. A file that starts like JSON
    (``{`` or ``[``) gets the JSON parser's error with its line and column, not the YAML parser's; an empty
    file (or one holding only YAML comments) says so."""
    if not data.strip():
        return IngestError(source, "$", "the file is empty: expected a JSON or YAML document")
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        if data.lstrip()[:1] in (b"{", b"["):
            return IngestError(source, "$", f"not valid JSON: {exc}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return IngestError(source, "$", f"neither JSON nor UTF-8 YAML: {exc}")
    try:
        doc = yaml.load(text, Loader=_TextLoader)
    except yaml.YAMLError as exc:
        return IngestError(source, "$", f"neither JSON nor YAML: {' '.join(str(exc).split())}")
    except RecursionError:
        return IngestError(source, "$", "YAML nests too deeply")
    if doc is None:
        return IngestError(source, "$", "the file holds no document (only comments or null)")
    return doc


# What a document is, by its unmistakable marks: (kind it is published as, how to name it).
def identify(doc: Any) -> tuple[str, str] | None:
    """The kind a document plainly is, for "this is an SBOM, not an advisory" messages; None if unsure."""
    if not isinstance(doc, dict):
        return None
    if doc.get("bomFormat") == "CycloneDX":
        if doc.get("vulnerabilities"):
            return ("vex", "a CycloneDX VEX document") if not doc.get("components") else None
        return "sbom", f"a CycloneDX {doc.get('specVersion', '')} SBOM".replace("  ", " ")
    if "spdxVersion" in doc:
        return "sbom", f"an SPDX SBOM ({doc.get('spdxVersion')})"
    if "openvex" in str(doc.get("@context", "")):
        return "vex", "an OpenVEX document"
    document = doc.get("document")
    if isinstance(document, dict) and "csaf_version" in document:
        return "vex", "a CSAF document"
    if isinstance(doc.get("schema_version"), str) and isinstance(doc.get("id"), str) and "affected" in doc:
        return "osv", "an OSV advisory"
    return None


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
