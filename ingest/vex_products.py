"""Turning the product identifiers VEX documents use into VexProducts, without guessing.

Recognised: a purl (``pkg:oci/…@sha256:…`` is an image: its digest becomes ``image_digest``), a bare
``sha256:…`` digest, and an image reference pinned by digest (``registry/repo@sha256:…``). Anything else
(a bare name, a tag-only image reference, a CPE) is unresolvable and reported by the caller.
"""

from __future__ import annotations

import re

from schemas.messages import VexProduct
from schemas.purl import Purl, normalise

_DIGEST_RE = re.compile(r"^sha(256|384|512):[0-9a-fA-F]{32,128}$")
_IMAGE_REF_RE = re.compile(r"^[a-z0-9][a-z0-9._\-/:]*@(sha(256|384|512):[0-9a-fA-F]{32,128})$")


def product_for(identifier: str) -> VexProduct | None:
    ident = identifier.strip()
    if ident.lower().startswith("pkg:"):
        purl = normalise(ident)
        return product_for_purl(purl) if isinstance(purl, Purl) else None
    if _DIGEST_RE.match(ident):
        return VexProduct(image_digest=ident.lower())
    match = _IMAGE_REF_RE.match(ident)
    if match:
        return VexProduct(image_digest=match.group(1).lower())
    return None


def product_for_purl(purl: Purl) -> VexProduct:
    return VexProduct(
        purl=purl.canonical, package=purl.package_key, version=purl.version, image_digest=purl.image_digest
    )


def scoped(component: VexProduct, image: VexProduct) -> VexProduct:
    """A package as found inside one image: the statement is about that package in that image only."""
    return component.model_copy(update={"image_digest": image.image_digest})


def dedupe(products: list[VexProduct]) -> list[VexProduct]:
    seen = {(p.image_digest or "", p.package or "", p.version or "", p.purl or ""): p for p in products}
    return [seen[k] for k in sorted(seen)]
