"""Package URL parsing and normalisation, and the package key every stage indexes by
(docs/architecture.md §2).

The parser follows the purl spec's parse algorithm rather than a regex, so the odd-but-valid shapes
(``pkg:///maven/...``, an unencoded ``@`` in an npm scope, ``#/sub/path/``) survive. Per-type rules
(lowercasing, PyPI's ``_`` → ``-``, the ``alpine`` alias that syft writes for ``apk``) are applied on
every path in, so a purl from an SBOM and one derived from an OSV ecosystem meet on the same key.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import quote, unquote

_TYPE_RE = re.compile(r"^[A-Za-z.+-][A-Za-z0-9.+-]*$")
_QUALIFIER_KEY_RE = re.compile(r"^[A-Za-z.\-_][A-Za-z0-9.\-_]*$")

# Types whose namespace / name the spec (or the ecosystem itself) treats as case-insensitive.
_LOWER_NAMESPACE = frozenset(
    {"alpm", "apk", "bitbucket", "composer", "deb", "github", "gitlab", "golang", "hex", "luarocks", "qpkg"}
    | {"npm", "rpm"}
)
_LOWER_NAME = frozenset(
    {"alpm", "apk", "bitbucket", "bitnami", "composer", "deb", "github", "gitlab", "hex", "luarocks", "npm"}
    | {"oci", "pub", "pypi"}
)
# Non-canonical types seen in real SBOMs → (canonical type, namespace to use when none is given).
_TYPE_ALIASES: dict[str, tuple[str, str | None]] = {
    "alpine": ("apk", "alpine"),
    "wolfi": ("apk", "wolfi"),
    "debian": ("deb", "debian"),
    "ubuntu": ("deb", "ubuntu"),
    "go": ("golang", None),
    "rubygems": ("gem", None),
    "crates.io": ("cargo", None),
    "packagist": ("composer", None),
}


@dataclass(frozen=True)
class PurlError:
    purl: str
    message: str


@dataclass(frozen=True)
class Purl:
    type: str
    namespace: str | None
    name: str
    version: str | None = None
    qualifiers: Mapping[str, str] = field(default_factory=dict, hash=False)
    subpath: str | None = None

    @property
    def package_key(self) -> str:
        name = _pep503(self.name) if self.type == "pypi" else self.name
        return f"{self.type}/{self.namespace}/{name}" if self.namespace else f"{self.type}/{name}"

    @property
    def canonical(self) -> str:
        out = f"pkg:{self.type}/"
        if self.namespace:
            out += "/".join(_enc(seg) for seg in self.namespace.split("/")) + "/"
        out += _enc(self.name)
        if self.version:
            out += "@" + _enc(self.version)
        if self.qualifiers:
            out += "?" + "&".join(f"{k}={_enc(v)}" for k, v in sorted(self.qualifiers.items()))
        if self.subpath:
            out += "#" + "/".join(_enc(seg) for seg in self.subpath.split("/"))
        return out

    @property
    def image_digest(self) -> str | None:
        """``sha256:…`` when this is an OCI purl pinned by digest: the image itself, not a package in it."""
        if self.type == "oci" and self.version and re.fullmatch(r"sha(256|384|512):[0-9a-f]+", self.version):
            return self.version
        return None

    def __str__(self) -> str:
        return self.canonical


def _enc(text: str) -> str:
    # ':' stays readable: the spec's canonical form never encodes it (``sha256:…``, ``1:2.4-2`` epochs).
    return quote(text, safe=":")


def _pep503(name: str) -> str:
    # The key (not the canonical purl) folds '.', '_' and '-' runs so "Products.Foo" meets "products-foo".
    return re.sub(r"[-_.]+", "-", name).lower()


def build(
    type: str | None,
    namespace: str | None,
    name: str | None,
    version: str | None = None,
    qualifiers: Mapping[str, str] | None = None,
    subpath: str | None = None,
    *,
    source: str = "",
) -> Purl | PurlError:
    """A normalised Purl from decoded components (the spec's 'build' operation)."""
    shown = source or f"{type}/{namespace}/{name}"
    if not type:
        return PurlError(shown, "a type is required")
    ptype = type.strip().lower()
    if not _TYPE_RE.match(ptype):
        return PurlError(shown, f"invalid type {type!r}: letters, digits, '.', '+', '-'; no leading digit")
    default_ns: str | None = None
    if ptype in _TYPE_ALIASES:
        ptype, default_ns = _TYPE_ALIASES[ptype]
    if not name or not name.strip().strip("/"):
        return PurlError(shown, "a name is required")
    ns_segments = [s for s in (namespace or "").split("/") if s.strip()]
    ns = "/".join(ns_segments) or default_ns
    pname = name.strip().strip("/")
    if ns and ptype in _LOWER_NAMESPACE:
        ns = ns.lower()
    if ptype in _LOWER_NAME:
        pname = pname.lower()
    if ptype == "pypi":
        pname = pname.replace("_", "-")
    quals: dict[str, str] = {}
    for key, value in (qualifiers or {}).items():
        lkey = key.strip().lower()
        if not _QUALIFIER_KEY_RE.match(lkey):
            return PurlError(shown, f"invalid qualifier key {key!r}")
        if value:
            quals[lkey] = value
    ver = version.strip() if version else None
    if ver and ptype == "oci":
        ver = ver.lower()
    sub_segments = [s for s in (subpath or "").split("/") if s and s not in (".", "..")]
    return Purl(ptype, ns, pname, ver or None, quals, "/".join(sub_segments) or None)


def normalise(purl: str) -> Purl | PurlError:
    """Parse and normalise a purl string (the spec's parse algorithm, lenient where it says 'recommended')."""
    if not isinstance(purl, str):
        return PurlError(repr(purl), "a purl is a string")
    text = purl.strip()
    remainder, _, subpath_text = text.partition("#")
    remainder, _, query = remainder.partition("?")
    scheme, colon, remainder = remainder.partition(":")
    if not colon or scheme.lower() != "pkg":
        return PurlError(purl, "a purl starts with the scheme 'pkg:'")
    remainder = remainder.lstrip("/")
    ptype, slash, remainder = remainder.partition("/")
    if not slash:
        return PurlError(purl, "a purl needs 'type/name'")
    if not _TYPE_RE.match(ptype):
        return PurlError(purl, f"invalid type {ptype!r}")
    remainder = remainder.rstrip("/")
    head, _, last = remainder.rpartition("/")
    # Only the last segment can carry '@version': an npm scope like '@babel' is namespace, not version.
    name_text, at, version_text = last.partition("@")
    if not at:
        name_text, version_text = last, ""
    elif not name_text:
        return PurlError(purl, "a name is required")
    try:
        name = unquote(name_text, errors="strict")
        version = unquote(version_text, errors="strict") if version_text else None
        namespace = "/".join(unquote(s, errors="strict") for s in head.split("/") if s) or None
        qualifiers: dict[str, str] = {}
        for pair in query.split("&") if query else []:
            key, eq, value = pair.partition("=")
            if not eq or not key:
                continue
            if not _QUALIFIER_KEY_RE.match(key):
                return PurlError(purl, f"invalid qualifier key {key!r}")
            qualifiers[key.lower()] = unquote(value, errors="strict")
        subpath = "/".join(unquote(s, errors="strict") for s in subpath_text.split("/") if s) or None
    except UnicodeDecodeError:
        return PurlError(purl, "percent-encoding does not decode to UTF-8")
    if not name or "/" in name:
        return PurlError(purl, "a name is required and cannot contain an encoded '/'")
    return build(ptype, namespace, name, version, qualifiers, subpath, source=purl)


# ---------------------------------------------------------------- OSV ecosystems

# OSV ecosystem (without ':suffix') → (purl type, fixed namespace). None namespace: derived from the name.
_ECOSYSTEMS: dict[str, tuple[str, str | None]] = {
    "npm": ("npm", None),
    "PyPI": ("pypi", None),
    "Maven": ("maven", None),
    "Go": ("golang", None),
    "crates.io": ("cargo", None),
    "RubyGems": ("gem", None),
    "NuGet": ("nuget", None),
    "Packagist": ("composer", None),
    "Hex": ("hex", None),
    "Pub": ("pub", None),
    "Hackage": ("hackage", None),
    "GHC": ("hackage", None),
    "CRAN": ("cran", None),
    "Bioconductor": ("bioconductor", None),
    "ConanCenter": ("conan", None),
    "SwiftURL": ("swift", None),
    "opam": ("opam", None),
    "Julia": ("julia", None),
    "GitHub Actions": ("github", None),
    "Bitnami": ("bitnami", None),
    "Debian": ("deb", "debian"),
    "Ubuntu": ("deb", "ubuntu"),
    "Alpine": ("apk", "alpine"),
    "Wolfi": ("apk", "wolfi"),
    "Chainguard": ("apk", "chainguard"),
    "MinimOS": ("apk", "minimos"),
    "Alpaquita": ("apk", "alpaquita"),
    "Red Hat": ("rpm", "redhat"),
    "Rocky Linux": ("rpm", "rocky"),
    "AlmaLinux": ("rpm", "almalinux"),
    "openSUSE": ("rpm", "opensuse"),
    "SUSE": ("rpm", "suse"),
    "Mageia": ("rpm", "mageia"),
    "Photon OS": ("rpm", "photon"),
    "Azure Linux": ("rpm", "azurelinux"),
    "openEuler": ("rpm", "openeuler"),
}
# Ecosystems whose names are paths: everything before the last '/' is the namespace.
_PATH_NAMED = frozenset({"golang", "composer", "github", "swift", "npm"})


def purl_type_for_ecosystem(ecosystem: str) -> str | None:
    """The purl type for an OSV ecosystem (``Debian:11`` → ``deb``); None when there is no purl type."""
    base = ecosystem.split(":", 1)[0].strip()
    entry = _ECOSYSTEMS.get(base)
    return entry[0] if entry else None


def purl_for(ecosystem: str, name: str, version: str | None = None) -> Purl | PurlError:
    """A Purl for an OSV ``(ecosystem, name)`` pair, normalised like any other purl."""
    base = ecosystem.split(":", 1)[0].strip()
    entry = _ECOSYSTEMS.get(base)
    shown = f"{ecosystem}/{name}"
    if entry is None:
        return PurlError(shown, f"ecosystem {ecosystem!r} has no purl type")
    ptype, namespace = entry
    pname = name.strip()
    if ptype == "maven":
        group, colon, artifact = pname.partition(":")
        if not colon or not group or not artifact:
            return PurlError(shown, "a Maven name is 'group:artifact'")
        namespace, pname = group, artifact
    elif ptype in _PATH_NAMED and "/" in pname.strip("/"):
        namespace, _, pname = pname.strip("/").rpartition("/")
    return build(ptype, namespace, pname, version, source=shown)


def package_key_for(ecosystem: str, name: str) -> str | None:
    """Package key for an OSV affected package (``npm``/``@scope/x`` → ``npm/@scope/x``); None if unknown."""
    result = purl_for(ecosystem, name)
    return result.package_key if isinstance(result, Purl) else None
