"""Exact version checks for OSV ``affected`` entries, per ecosystem (docs/architecture.md §2: lookup by
package key first, then this).

Semantics follow the OSV schema's evaluation algorithm:

- ``versions``: an explicit list; a version is affected when it equals one of them (string equality, or
  equality once both sides are parsed with the ecosystem's scheme, so PyPI ``1.0`` meets ``1.0.0``).
- ``ECOSYSTEM`` / ``SEMVER`` ranges: the events are sorted by version (``introduced: "0"`` first) and
  walked; ``introduced`` opens (inclusive), ``fixed`` closes (exclusive), ``last_affected`` closes after
  its version (inclusive). ``limit`` events, when present, cap the range: the version must be below one.
- ``GIT`` ranges are ignored: they name commits, and deciding whether a packaged version contains a commit
  needs the repository's commit graph, which the scheduler does not have. A record with only GIT ranges and
  no ``versions`` list therefore affects nothing here (the reason says so).

Nothing here raises on bad input: a version (or a range bound) the ecosystem cannot parse yields status
``unknown`` with a reason, which callers treat as *not affected but worth reporting*.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any, Literal

from univers import versions as uv

from schemas.messages import AffectedPackage, AffectedRange

MatchStatus = Literal["affected", "not_affected", "unknown"]

# OSV ecosystem (before any ':release' suffix) → univers scheme.
_BY_ECOSYSTEM: dict[str, type[uv.Version]] = {
    "npm": uv.SemverVersion,
    "PyPI": uv.PypiVersion,
    "Maven": uv.MavenVersion,
    "Go": uv.GolangVersion,
    "crates.io": uv.SemverVersion,
    "RubyGems": uv.RubygemsVersion,
    "NuGet": uv.NugetVersion,
    "Packagist": uv.ComposerVersion,
    "Hex": uv.SemverVersion,
    "Pub": uv.SemverVersion,
    "Bitnami": uv.SemverVersion,
    "SwiftURL": uv.SemverVersion,
    "GitHub Actions": uv.SemverVersion,
    "Debian": uv.DebianVersion,
    "Ubuntu": uv.DebianVersion,
    "Alpine": uv.AlpineLinuxVersion,
    "Wolfi": uv.AlpineLinuxVersion,
    "Chainguard": uv.AlpineLinuxVersion,
    "MinimOS": uv.AlpineLinuxVersion,
    "Alpaquita": uv.AlpineLinuxVersion,
    "Red Hat": uv.RpmVersion,
    "Rocky Linux": uv.RpmVersion,
    "AlmaLinux": uv.RpmVersion,
    "SUSE": uv.RpmVersion,
    "openSUSE": uv.RpmVersion,
    "Mageia": uv.RpmVersion,
    "Photon OS": uv.RpmVersion,
    "Azure Linux": uv.RpmVersion,
    "openEuler": uv.RpmVersion,
}

# Fallback on the package key's purl type, for ecosystems spelled in a way the table does not know.
_BY_PURL_TYPE: dict[str, type[uv.Version]] = {
    "npm": uv.SemverVersion,
    "pypi": uv.PypiVersion,
    "maven": uv.MavenVersion,
    "golang": uv.GolangVersion,
    "cargo": uv.SemverVersion,
    "gem": uv.RubygemsVersion,
    "nuget": uv.NugetVersion,
    "composer": uv.ComposerVersion,
    "hex": uv.SemverVersion,
    "pub": uv.SemverVersion,
    "deb": uv.DebianVersion,
    "rpm": uv.RpmVersion,
    "apk": uv.AlpineLinuxVersion,
}


@dataclass(frozen=True, slots=True)
class RangeSpan:
    """Where an affected version sits (explain traces): the range as written, as walked, and the event pair
    that contains the version. ``kind`` ``versions`` means an explicit list matched (``listed``)."""

    kind: str  # ECOSYSTEM | SEMVER | versions
    scheme: str
    written: tuple[tuple[str, str], ...] = ()  # (event kind, bound) in the advisory's order
    normalised: tuple[tuple[str, str], ...] = ()  # walk order, bounds as the scheme renders them
    introduced: str | None = None
    fixed: str | None = None
    last_affected: str | None = None
    limit: str | None = None
    listed: str | None = None
    refused: tuple[str, ...] = ()  # ranges of the entry not evaluated, each with its reason


@dataclass(frozen=True, slots=True)
class MatchResult:
    status: MatchStatus
    reason: str
    span: RangeSpan | None = None  # set when affected: the range (or listed version) that matched

    @property
    def affected(self) -> bool:
        return self.status == "affected"


def scheme_for(ecosystem: str, package_key: str = "") -> type[uv.Version] | None:
    """The univers version class for an OSV ecosystem (``Debian:12`` → Debian), else by purl type."""
    base = ecosystem.split(":", 1)[0].strip()
    found = _BY_ECOSYSTEM.get(base)
    if found is None and package_key:
        found = _BY_PURL_TYPE.get(package_key.split("/", 1)[0])
    return found


_SCHEMES: dict[str, type[uv.Version]] = {
    cls.__name__: cls for cls in (*_BY_ECOSYSTEM.values(), uv.SemverVersion)
}


@lru_cache(maxsize=65536)
def _parse(scheme_name: str, text: str) -> Any:
    # Resolution parses the same few hundred distinct versions over and over; the cache makes an
    # advisory against a large index cost one parse per distinct version, not per image.
    try:
        return _SCHEMES[scheme_name](text)
    except Exception:  # univers raises ValueError, TypeError, IndexError... depending on the scheme
        return None


def parse_version(scheme: type[uv.Version], text: str) -> Any:
    """A comparable univers Version, or None when ``text`` is not valid for ``scheme``."""
    if not text:
        return None
    _SCHEMES.setdefault(scheme.__name__, scheme)
    return _parse(scheme.__name__, text)


def _compare(left: Any, right: Any) -> int:
    try:
        return -1 if left < right else (1 if left > right else 0)
    except Exception:  # some schemes fail to compare exotic but parseable values
        raise _Incomparable from None


class _Incomparable(Exception):
    pass


_KIND_ORDER = {"introduced": 0, "fixed": 1, "last_affected": 2, "limit": 3}


def written_events(rng: AffectedRange) -> tuple[tuple[str, str], ...]:
    """The range's events as (kind, bound) pairs, in the order the advisory wrote them."""
    return tuple(
        (kind, value)
        for ev in rng.events
        for kind in ("introduced", "fixed", "last_affected", "limit")
        if (value := getattr(ev, kind)) is not None
    )


def _range_text(rng: AffectedRange) -> str:
    parts = [f"{kind}={value}" for kind, value in written_events(rng)]
    return f"{rng.type}[{', '.join(parts)}]"


def _rendered(parsed: Any, raw: str) -> str:
    # univers renders a parsed version normalised (``v1.2.3`` -> ``1.2.3``); the text as written otherwise.
    try:
        text = str(parsed)
    except Exception:  # a scheme whose __str__ trips on an exotic but parseable value
        return raw
    return text or raw


def git_refusal(rng: AffectedRange) -> str:
    """Why a GIT range is not evaluated (one wording, used by matches and explain traces)."""
    where = f" of {rng.repo}" if rng.repo else ""
    return f"{_range_text(rng)}{where} refused: commits need the repository's commit graph, which the scheduler does not have"


def _in_range(scheme: type[uv.Version], version: Any, rng: AffectedRange) -> MatchResult:
    """One ECOSYSTEM/SEMVER range, walked as the OSV spec's pseudocode does."""
    text = _range_text(rng)
    events: list[tuple[int, Any, str, str]] = []  # (is_not_zero, parsed, kind, raw)
    limits: list[tuple[Any, str]] = []
    has_star_limit = False
    for ev in rng.events:
        for kind in ("introduced", "fixed", "last_affected", "limit"):
            raw = getattr(ev, kind)
            if raw is None:
                continue
            if kind == "introduced" and raw == "0":
                events.append((0, None, kind, raw))
                continue
            if kind == "limit" and raw == "*":
                has_star_limit = True
                continue
            parsed = parse_version(scheme, raw)
            if parsed is None:
                return MatchResult("unknown", f"{text}: bound {raw!r} is not a valid {scheme.__name__}")
            if kind == "limit":
                limits.append((parsed, raw))
            else:
                events.append((1, parsed, kind, raw))
    try:
        zero = [e for e in events if e[0] == 0]
        rest = [e for e in events if e[0] == 1]
        ordered = zero + _sort_events(rest)
        vulnerable = False
        opened = -1  # index in ``ordered`` of the introduced event that opened the current interval
        for i, (_, bound, kind, _raw) in enumerate(ordered):
            if kind == "introduced" and (bound is None or _compare(version, bound) >= 0):
                vulnerable, opened = True, i
            elif kind in ("fixed", "last_affected"):
                # fixed is the first safe version; last_affected is the last unsafe one.
                threshold = 0 if kind == "fixed" else 1
                if _compare(version, bound) >= threshold:
                    vulnerable = False
        capping: str | None = None
        if vulnerable and limits and not has_star_limit:
            above = [(lim, raw) for lim, raw in limits if _compare(version, lim) < 0]
            vulnerable = bool(above)
            if above:
                capping = _lowest(above)
        elif vulnerable and has_star_limit:
            capping = "*"
    except _Incomparable:
        return MatchResult("unknown", f"{text}: cannot compare with the range bounds")
    if not vulnerable:
        return MatchResult("not_affected", f"outside {text}")
    # The interval is closed by the first fixed / last_affected event after the one that opened it: any
    # earlier closing event at or below the version would have closed it, and a later introduced re-opens.
    closing = next((e for e in ordered[opened + 1 :] if e[2] in ("fixed", "last_affected")), None)
    span = RangeSpan(
        kind=rng.type,
        scheme=scheme.__name__,
        written=written_events(rng),
        normalised=tuple(
            (kind, raw if bound is None else _rendered(bound, raw)) for _, bound, kind, raw in ordered
        )
        + tuple(("limit", _rendered(lim, raw)) for lim, raw in limits)
        + ((("limit", "*"),) if has_star_limit else ()),
        introduced=ordered[opened][3],
        fixed=closing[3] if closing is not None and closing[2] == "fixed" else None,
        last_affected=closing[3] if closing is not None and closing[2] == "last_affected" else None,
        limit=capping,
    )
    return MatchResult("affected", f"in {text}", span)


def _lowest(bounds: list[tuple[Any, str]]) -> str:
    best = bounds[0]
    for candidate in bounds[1:]:
        if _compare(candidate[0], best[0]) < 0:
            best = candidate
    return best[1]


def _sort_events(events: list[tuple[int, Any, str, str]]) -> list[tuple[int, Any, str, str]]:
    # Insertion sort with an explicit comparator: univers values only implement rich comparison, and
    # ties (same version) must order deterministically by event kind.
    out: list[tuple[int, Any, str, str]] = []
    for ev in events:
        i = len(out)
        while i > 0:
            prev = out[i - 1]
            c = _compare(prev[1], ev[1])
            if c < 0 or (c == 0 and _KIND_ORDER[prev[2]] <= _KIND_ORDER[ev[2]]):
                break
            i -= 1
        out.insert(i, ev)
    return out


def match_affected(affected: AffectedPackage, version: str | None) -> MatchResult:
    """Whether ``version`` of ``affected.package`` is affected, with a human-readable reason and, when it
    is, the span (range event pair or listed version) that contains it."""
    if not version:
        return MatchResult("unknown", "the inventory gives no version")
    scheme = scheme_for(affected.ecosystem, affected.package)
    scheme_name = scheme.__name__ if scheme is not None else ""
    refused = tuple(git_refusal(r) for r in affected.ranges if r.type == "GIT")
    if version in affected.versions:
        span = RangeSpan("versions", scheme_name, listed=version, refused=refused)
        return MatchResult("affected", f"{version} is listed in versions", span)
    parsed = parse_version(scheme, version) if scheme is not None else None
    if scheme is not None and parsed is None:
        return MatchResult("unknown", f"{version!r} is not a valid {scheme.__name__}")
    for listed in affected.versions:
        other = parse_version(scheme, listed) if scheme is not None else None
        if other is not None:
            try:
                if _compare(parsed, other) == 0:
                    span = RangeSpan("versions", scheme_name, listed=listed, refused=refused)
                    return MatchResult("affected", f"{version} equals listed version {listed}", span)
            except _Incomparable:
                continue
    evaluable = [r for r in affected.ranges if r.type != "GIT"]
    if not evaluable:
        if affected.versions:
            return MatchResult("not_affected", f"{version} is not in the listed versions")
        if affected.ranges:
            return MatchResult(
                "not_affected",
                "only GIT ranges, which need a commit graph: not evaluated (" + "; ".join(refused) + ")",
            )
        return MatchResult("not_affected", "the record gives neither ranges nor versions")
    reasons: list[str] = []
    unknown = False
    for rng in evaluable:
        rng_scheme = uv.SemverVersion if rng.type == "SEMVER" else scheme
        if rng_scheme is None:
            unknown = True
            reasons.append(f"no version scheme for ecosystem {affected.ecosystem!r}")
            continue
        target = parsed if rng_scheme is scheme else parse_version(rng_scheme, version)
        if target is None:
            unknown = True
            reasons.append(f"{version!r} is not a valid {rng_scheme.__name__}")
            continue
        result = _in_range(rng_scheme, target, rng)
        if result.affected:
            ranged = replace(result.span, refused=refused) if result.span is not None else None
            return MatchResult("affected", f"{version} {result.reason}", ranged)
        unknown = unknown or result.status == "unknown"
        reasons.append(result.reason)
    return MatchResult("unknown" if unknown else "not_affected", f"{version}: " + "; ".join(reasons))


def affected_versions_match(affected: AffectedPackage, version: str | None) -> bool:
    """True when ``version`` is affected; unparseable or unevaluable versions are not affected."""
    return match_affected(affected, version).affected


def any_affected(specs: list[AffectedPackage], version: str | None) -> MatchResult:
    """The first affected result across several affected entries for one package, else a combined reason."""
    results = [match_affected(spec, version) for spec in specs]
    for result in results:
        if result.affected:
            return result
    status: MatchStatus = "unknown" if any(r.status == "unknown" for r in results) else "not_affected"
    return MatchResult(status, "; ".join(r.reason for r in results) or "no affected entry")


VersionPredicate = Callable[[str | None], MatchResult]
