"""The one rule for what an image digest is: ``<algorithm>:<lower hex>`` with the OCI registered algorithms
(``sha256`` + 64 hex, ``sha512`` + 128 hex; ``sha384`` + 96 hex is accepted as in the OCI image spec).

A digest ends up in Kafka keys, signed subjects and Mongo ids, so an unchecked one lets a single request make
every downstream record too large to publish. The API, the CLI (``--image-digest``), the ingest adapters and
the message contracts all import this module; nothing else decides.
"""

from __future__ import annotations

import re
from typing import Annotated

from pydantic import AfterValidator

DIGEST_HEX_LENGTHS: dict[str, int] = {"sha256": 64, "sha384": 96, "sha512": 128}
DIGEST_RULE = "sha256:<64 lower-case hex> (or sha384:<96>, sha512:<128>)"
_HEX = re.compile(r"[0-9a-f]+")
_SHOWN = 80


def digest_problem(value: object) -> str | None:
    """Why ``value`` is not an image digest, or None when it is one."""
    if not isinstance(value, str):
        return f"an image digest is a string {DIGEST_RULE}, got {type(value).__name__}"
    shown = value if len(value) <= _SHOWN else f"{value[:_SHOWN]}… ({len(value)} characters)"
    algorithm, sep, hexpart = value.partition(":")
    length = DIGEST_HEX_LENGTHS.get(algorithm)
    if not sep or length is None:
        return f"{shown!r} is not an image digest: expected {DIGEST_RULE}"
    if len(hexpart) != length or not _HEX.fullmatch(hexpart):
        return f"{shown!r} is not an image digest: {algorithm} needs exactly {length} lower-case hex digits"
    return None


def check_digest(value: str) -> str:
    """``value`` unchanged, or ValueError with the reason (the pydantic validator below uses it)."""
    problem = digest_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


def is_digest(value: object) -> bool:
    return digest_problem(value) is None


ImageDigest = Annotated[str, AfterValidator(check_digest)]


def digest_problems(message: object) -> list[tuple[str, str]]:
    """``(field, problem)`` for every image digest a source message carries (``image_digest``,
    ``selector.digests``, ``products[].image_digest``). Source messages are checked here, at the edge, so
    internal topics can trust what they carry."""
    found: list[tuple[str, str]] = []
    digest = getattr(message, "image_digest", None)
    if digest is not None:
        problem = digest_problem(digest)
        if problem:
            found.append(("image_digest", problem))
    selector = getattr(message, "selector", None)
    for i, value in enumerate(getattr(selector, "digests", None) or ()):
        problem = digest_problem(value)
        if problem:
            found.append((f"selector.digests[{i}]", problem))
    for i, product in enumerate(getattr(message, "products", None) or ()):
        value = getattr(product, "image_digest", None)
        problem = digest_problem(value) if value is not None else None
        if problem:
            found.append((f"products[{i}].image_digest", problem))
    return found
