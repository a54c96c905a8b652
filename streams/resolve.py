"""From deltas to impacted images (docs/architecture.md §2): one function per piece of state, so the stream
shell can keep each in the table partitioned the way its input is keyed.

| input | state it reads/writes | table key |
|---|---|---|
| AdvisoryDelta → ``split_advisory`` | ``AdvisoryPackages`` (packages the last revision named) | advisory id |
| AdvisoryRequest → ``resolve_advisory`` | ``AdvisorySpecs`` + ``PackageEntry`` (read) | package key |
| VexStatement → ``vex_requests`` | none | |
| VexPackageRequest → ``resolve_vex_package`` | ``PackageEntry`` (read) | package key |
| PolicyChange / Recheck → ``resolve_policy`` / ``resolve_recheck`` | ``TenantCatalog`` (read) | tenant |

A VEX product named by image digest is routed like any other: every image holds a pseudo package
``image/<digest>`` (``with_image_package``, applied where inventories are indexed), and ``vex_requests``
turns a digest product into a request for that package. The stream and ``preview`` both go through this
one rule, so neither needs a digest-keyed table.

Package-side resolution maps image ids back to images through a ``lookup(id) -> ImageRef | None`` callable
(the directory global table, joined with runtime state by the shell for the ``running`` flag).

An advisory's impact set is the images matching its new spec **plus** those matching the spec last seen for
the same (package, advisory): a withdrawn advisory, or one whose ranges no longer cover a version, must
still reach the images that carry the old finding so the evaluator can drop it. The spec state keeps the
current and the previous revision, so a redelivered revision resolves to exactly what its first delivery
did, and re-applying it leaves the state unchanged. A revision older than the current one is a replay of an
already superseded record: it changes nothing and resolves to nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

from pydantic import BaseModel, ConfigDict, TypeAdapter

from schemas.messages import (
    AdvisoryDelta,
    AffectedPackage,
    Component,
    Impact,
    Inventory,
    PolicyChange,
    Reason,
    Recheck,
    Severity,
    VexStatement,
    VexStatus,
)
from schemas.purl import Purl, normalise
from streams.codec import pack, unpack
from streams.index import ImageRef, PackageEntry
from streams.tenants import TenantCatalog, select
from streams.versions import MatchResult, any_affected

Lookup = Callable[[int], ImageRef | None]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


# ---------------------------------------------------------------- advisories: split (advisory-keyed)


class AdvisoryRequest(_Model):
    """One advisory revision as it concerns one package. Kafka key (impact-requests): ``package``."""

    package: str
    advisory_id: str
    modified: datetime
    withdrawn: bool = False
    severity: Severity = "unknown"
    kev: bool = False
    rescan: bool = False
    affected: list[AffectedPackage] = []


@dataclass(frozen=True, slots=True)
class AdvisoryPackages:
    """Packages named by the newest revision seen of one advisory. Table key: advisory id."""

    modified: int
    packages: tuple[str, ...]


def split_advisory(
    state: AdvisoryPackages | None, delta: AdvisoryDelta
) -> tuple[AdvisoryPackages | None, list[AdvisoryRequest]]:
    """Per-package requests for ``delta``, sorted by package.

    Packages the previous revision named but this one drops get a request with no affected entries, so
    their images are re-evaluated too. An older revision than the one in state only re-splits its own
    packages (the package side will treat it as a replay).
    """
    by_package: dict[str, list[AffectedPackage]] = {}
    for affected in delta.affected:
        by_package.setdefault(affected.package, []).append(affected)
    modified = int(delta.modified.timestamp())
    packages = set(by_package)
    new_state = state
    if state is None or modified >= state.modified:
        if state is not None:
            packages |= set(state.packages)
        if state is None or modified > state.modified:
            new_state = AdvisoryPackages(modified, tuple(sorted(by_package)))
    requests = [
        AdvisoryRequest(
            package=package,
            advisory_id=delta.id,
            modified=delta.modified,
            withdrawn=delta.withdrawn is not None,
            severity=delta.severity,
            kev=delta.kev,
            rescan=delta.rescan,
            affected=by_package.get(package, []),
        )
        for package in sorted(packages)
    ]
    return new_state, requests


def encode_advisory_packages(state: AdvisoryPackages) -> bytes:
    return pack({"m": state.modified, "p": list(state.packages)})


def decode_advisory_packages(data: bytes) -> AdvisoryPackages:
    header, _ = unpack(data)
    return AdvisoryPackages(int(header["m"]), tuple(header["p"]))


def encode_request(request: AdvisoryRequest | VexPackageRequest | VexDigestRequest) -> bytes:
    return request.model_dump_json().encode()


def decode_advisory_request(data: bytes) -> AdvisoryRequest:
    return AdvisoryRequest.model_validate_json(data)


# ---------------------------------------------------------------- advisories: resolve (package-keyed)


class SpecHistory(_Model):
    current: AdvisoryRequest
    previous: AdvisoryRequest | None = None


class AdvisorySpecs(_Model):
    """Last-seen spec per advisory for one package. Table key: package key."""

    advisories: dict[str, SpecHistory] = {}


def encode_specs(specs: AdvisorySpecs) -> bytes:
    return specs.model_dump_json().encode()


def decode_specs(data: bytes) -> AdvisorySpecs:
    return AdvisorySpecs.model_validate_json(data)


@dataclass(frozen=True, slots=True)
class VersionCheck:
    """What resolution decided for one version of the package (kept for explanations)."""

    advisory_id: str
    package: str
    version: str
    image_ids: tuple[int, ...]
    now: MatchResult
    before: MatchResult | None
    impacted: bool


@dataclass(frozen=True, slots=True)
class Resolution:
    impacts: list[Impact]
    checks: list[VersionCheck] = field(default_factory=list)


def _impact(
    ref: ImageRef,
    event_time: datetime,
    reasons: list[Reason],
    *,
    severity: Severity = "unknown",
    kev: bool = False,
    kind_rescan: bool = False,
    priority: str | None = None,
    policy_revision: int | None = None,
    retry_of: str | None = None,
) -> Impact:
    return Impact.model_validate(
        {
            "tenant": ref.tenant,
            "image_digest": ref.digest,
            "event_time": event_time,
            "reasons": sorted(reasons, key=_reason_key),
            "severity": severity,
            "kev": kev,
            "running": ref.running,
            "kind": "rescan" if kind_rescan else "reevaluate",
            "priority": priority,
            "policy_revision": policy_revision,
            "inventory_observed_at": ref.observed_at,
            "retry_of": retry_of,
        }
    )


def _reason_key(reason: Reason) -> tuple[str, str, str, str]:
    modified = reason.modified.isoformat() if reason.modified else ""
    return (reason.source, reason.id, modified, reason.detail)


def resolve_advisory(
    specs: AdvisorySpecs | None,
    request: AdvisoryRequest,
    entry: PackageEntry | None,
    lookup: Lookup,
) -> tuple[AdvisorySpecs, Resolution]:
    """New spec state and the impacts of ``request`` on the images holding its package."""
    specs = specs or AdvisorySpecs()
    history = specs.advisories.get(request.advisory_id)
    if history is not None and request.modified < history.current.modified:
        return specs, Resolution([])
    if history is not None and request.modified == history.current.modified:
        prior = history.previous
        new_specs = specs
    else:
        prior = history.current if history is not None else None
        advisories = dict(specs.advisories)
        advisories[request.advisory_id] = SpecHistory(current=request, previous=prior)
        new_specs = AdvisorySpecs(advisories=advisories)
    if entry is None:
        return new_specs, Resolution([])

    # image id → (reasons, affected now?)
    hits: dict[int, tuple[list[Reason], bool]] = {}
    checks: list[VersionCheck] = []
    for version in sorted(entry.versions):
        ids = entry.versions[version]
        now = (
            any_affected(request.affected, version)
            if request.affected
            else MatchResult("not_affected", "this revision no longer names the package")
        )
        before = any_affected(prior.affected, version) if prior is not None and prior.affected else None
        if now.affected and not request.withdrawn:
            detail, affected_now = f"{request.package}@{version}: {now.reason}", True
        elif now.affected:
            detail, affected_now = f"{request.package}@{version}: withdrawn", False
        elif before is not None and before.affected:
            detail, affected_now = f"{request.package}@{version}: no longer affected ({now.reason})", False
        else:
            checks.append(
                VersionCheck(request.advisory_id, request.package, version, tuple(ids), now, before, False)
            )
            continue
        checks.append(
            VersionCheck(request.advisory_id, request.package, version, tuple(ids), now, before, True)
        )
        reason = Reason(source="advisory", id=request.advisory_id, modified=request.modified, detail=detail)
        for image_id in ids:
            reasons, was_affected = hits.get(image_id, ([], False))
            reasons.append(reason)
            hits[image_id] = (reasons, was_affected or affected_now)

    impacts = []
    for image_id in sorted(hits):
        ref = lookup(image_id)
        if ref is None:
            continue  # removed since the index update; its tombstone already re-evaluated it away
        reasons, affected_now = hits[image_id]
        impacts.append(
            _impact(
                ref,
                request.modified,
                reasons,
                severity=request.severity if affected_now else "none",
                kev=request.kev and affected_now,
                kind_rescan=request.rescan,
            )
        )
    impacts.sort(key=lambda i: (i.tenant, i.image_digest))
    return new_specs, Resolution(impacts, checks)


# ---------------------------------------------------------------- VEX


class VexPackageRequest(_Model):
    """A VEX statement's product given as a package. Kafka key: ``package``."""

    package: str
    version: str | None = None
    statement_id: str
    vulnerability: str
    status: VexStatus
    timestamp: datetime
    tenant: str | None = None


class VexDigestRequest(_Model):
    """A VEX statement's product given as an image digest; ``vex_requests`` routes it to the image's pseudo
    package."""

    digest: str
    statement_id: str
    vulnerability: str
    status: VexStatus
    timestamp: datetime
    tenant: str | None = None


def split_vex(statement: VexStatement) -> tuple[list[VexPackageRequest], list[VexDigestRequest]]:
    """Route each product of a statement to the state that can resolve it (deduplicated, sorted)."""
    packages: set[tuple[str, str | None]] = set()
    digests: set[str] = set()
    for product in statement.products:
        if product.image_digest:
            digests.add(product.image_digest)
            continue
        parsed = normalise(product.purl) if product.purl else None
        if isinstance(parsed, Purl) and parsed.image_digest:
            digests.add(parsed.image_digest)
            continue
        key = product.package or (parsed.package_key if isinstance(parsed, Purl) else None)
        if key:
            version = product.version or (parsed.version if isinstance(parsed, Purl) else None)
            packages.add((key, version))
    common = {
        "statement_id": statement.statement_id,
        "vulnerability": statement.vulnerability,
        "status": statement.status,
        "timestamp": statement.timestamp,
        "tenant": statement.tenant,
    }
    by_package = [
        VexPackageRequest(package=p, version=v, **common)  # type: ignore[arg-type]
        for p, v in sorted(packages, key=lambda pv: (pv[0], pv[1] or ""))
    ]
    by_digest = [VexDigestRequest(digest=d, **common) for d in sorted(digests)]  # type: ignore[arg-type]
    return by_package, by_digest


def image_package(digest: str) -> str:
    """The pseudo package every image holds, so a VEX statement naming an image by digest resolves
    through the package index like any other product."""
    return f"image/{digest}"


def with_image_package(inventory: Inventory) -> Inventory:
    """``inventory`` as the package index sees it: with the image's own pseudo package."""
    pseudo = Component(
        purl=f"pkg:oci/{inventory.image_digest}", package=image_package(inventory.image_digest)
    )
    return inventory.model_copy(update={"components": [*inventory.components, pseudo]})


def vex_requests(statement: VexStatement) -> list[VexPackageRequest]:
    """The package-keyed requests of a statement: products named by digest go to the image's pseudo
    package (the one rule the stream and ``preview`` share)."""
    by_package, by_digest = split_vex(statement)
    return by_package + [
        VexPackageRequest(
            package=image_package(r.digest),
            version=None,
            statement_id=r.statement_id,
            vulnerability=r.vulnerability,
            status=r.status,
            timestamp=r.timestamp,
            tenant=r.tenant,
        )
        for r in by_digest
    ]


def decode_vex_package_request(data: bytes) -> VexPackageRequest:
    return VexPackageRequest.model_validate_json(data)


_ADVISORY_REQUESTS = TypeAdapter(list[AdvisoryRequest])
_VEX_REQUESTS = TypeAdapter(list[VexPackageRequest])


def encode_requests(requests: list[AdvisoryRequest] | list[VexPackageRequest]) -> bytes:
    """Several requests in one record (an ``impact-requests`` record carries every request one advisory or
    statement sends to one index partition): a JSON array of the single-request encoding."""
    return b"[" + b",".join(encode_request(r) for r in requests) + b"]"


def decode_advisory_requests(data: bytes) -> list[AdvisoryRequest]:
    return _ADVISORY_REQUESTS.validate_json(data)


def decode_vex_package_requests(data: bytes) -> list[VexPackageRequest]:
    return _VEX_REQUESTS.validate_json(data)


def decode_vex_digest_request(data: bytes) -> VexDigestRequest:
    return VexDigestRequest.model_validate_json(data)


def _vex_reason(
    statement_id: str, vulnerability: str, status: str, timestamp: datetime, product: str
) -> Reason:
    return Reason(
        source="vex", id=statement_id, modified=timestamp, detail=f"{vulnerability} {status} for {product}"
    )


def resolve_vex_package(request: VexPackageRequest, entry: PackageEntry | None, lookup: Lookup) -> Resolution:
    """Images holding the package (at the given version, when the statement names one)."""
    if entry is None:
        return Resolution([])
    if request.version is not None:
        versions = [request.version] if request.version in entry.versions else []
    else:
        versions = sorted(entry.versions)
    seen: dict[tuple[str, str], Impact] = {}
    for version in versions:
        product = f"{request.package}@{version}" if version else request.package
        reason = _vex_reason(
            request.statement_id, request.vulnerability, request.status, request.timestamp, product
        )
        for image_id in entry.versions[version]:
            ref = lookup(image_id)
            if ref is None or (request.tenant is not None and ref.tenant != request.tenant):
                continue
            key = (ref.tenant, ref.digest)
            previous = seen.get(key)
            reasons = [*previous.reasons, reason] if previous else [reason]
            seen[key] = _impact(ref, request.timestamp, reasons)
    return Resolution([seen[k] for k in sorted(seen)])


# ---------------------------------------------------------------- policy and rechecks (tenant-keyed)


def _ref(tenant: str, catalog: TenantCatalog, digest: str) -> ImageRef:
    meta = catalog.images[digest]
    return ImageRef(tenant, digest, meta.observed_at, meta.running)


def resolve_policy(catalog: TenantCatalog | None, change: PolicyChange) -> Resolution:
    """Every image of the tenant the new policy revision's selector covers."""
    if catalog is None:
        return Resolution([])
    reason = Reason(
        source="policy",
        id=f"{change.policy_id}@{change.revision}",
        modified=change.activated_at,
        detail="activated",
    )
    impacts = [
        _impact(
            _ref(change.tenant, catalog, meta.digest),
            change.activated_at,
            [reason],
            policy_revision=change.revision,
        )
        for meta in select(catalog, change.selector)
    ]
    return Resolution(impacts)


def resolve_recheck(catalog: TenantCatalog | None, recheck: Recheck) -> Resolution:
    """Every image the recheck's selector covers; its kind, forced priority and the run it retries (if any)
    travel with the impact."""
    if catalog is None:
        return Resolution([])
    reason = Reason(
        source="recheck", id=recheck.recheck_id, modified=recheck.requested_at, detail=recheck.reason
    )
    impacts = [
        _impact(
            _ref(recheck.tenant, catalog, meta.digest),
            recheck.requested_at,
            [reason],
            kind_rescan=recheck.kind == "rescan",
            priority=recheck.priority,
            retry_of=recheck.retry_of,
        )
        for meta in select(catalog, recheck.selector)
    ]
    return Resolution(impacts)
