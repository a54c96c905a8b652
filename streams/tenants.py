"""Tenant-keyed image catalog (for selectors) and per-image runtime state.

- ``TenantCatalog`` keyed by tenant (co-partitioned with policy and recheck topics): each image's metadata,
  so a policy change or recheck resolves its Selector without touching the package index.
- ``RuntimeSites`` keyed by ``tenant/digest`` (or digest, as the runtime topic is): where the image runs.
  An image that starts running somewhere (no site before, one now) yields an impact: what is deployed
  gets re-evaluated first.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from fnmatch import fnmatchcase

from schemas.messages import Impact, Inventory, Reason, RuntimeEvent, Selector
from streams.codec import from_epoch, pack, to_epoch, unpack


@dataclass(frozen=True, slots=True)
class ImageMeta:
    digest: str
    repository: str = ""
    tags: tuple[str, ...] = ()
    namespaces: tuple[str, ...] = ()
    labels: tuple[tuple[str, str], ...] = ()
    observed_at: datetime | None = None
    running: bool = False


@dataclass(frozen=True, slots=True)
class TenantCatalog:
    """A tenant's images by digest. Table key: tenant."""

    images: dict[str, ImageMeta] = field(default_factory=dict)


def meta_from_inventory(inventory: Inventory, running: bool = False) -> ImageMeta:
    return ImageMeta(
        digest=inventory.image_digest,
        repository=inventory.repository,
        tags=tuple(sorted(set(inventory.tags))),
        namespaces=tuple(sorted(set(inventory.namespaces))),
        labels=tuple(sorted(inventory.labels.items())),
        observed_at=inventory.observed_at,
        running=running,
    )


def apply_inventory_to_catalog(
    catalog: TenantCatalog | None, digest: str, inventory: Inventory | None
) -> TenantCatalog:
    """Insert/replace the image's metadata, or drop it on a tombstone (``inventory`` None)."""
    images = dict((catalog or TenantCatalog()).images)
    previous = images.get(digest)
    if inventory is None:
        images.pop(digest, None)
    else:
        images[digest] = meta_from_inventory(inventory, running=previous.running if previous else False)
    return TenantCatalog(images)


def set_running(catalog: TenantCatalog | None, digest: str, running: bool) -> TenantCatalog:
    images = dict((catalog or TenantCatalog()).images)
    meta = images.get(digest)
    if meta is not None and meta.running != running:
        images[digest] = replace(meta, running=running)
    return TenantCatalog(images)


def selector_matches(meta: ImageMeta, selector: Selector) -> bool:
    """``all`` matches everything; otherwise every non-empty criterion must hold (any value within one).

    Repository entries may be glob patterns (``registry.example/team/*``).
    """
    if selector.all:
        return True
    criteria = [selector.namespaces, selector.repositories, selector.digests, selector.labels]
    if not any(criteria):
        return False
    if selector.digests and meta.digest not in selector.digests:
        return False
    if selector.namespaces and not set(selector.namespaces) & set(meta.namespaces):
        return False
    if selector.repositories and not any(fnmatchcase(meta.repository, p) for p in selector.repositories):
        return False
    labels = dict(meta.labels)
    return all(labels.get(k) == v for k, v in selector.labels.items())


def select(catalog: TenantCatalog | None, selector: Selector) -> list[ImageMeta]:
    """The catalog's images matching ``selector``, sorted by digest."""
    if catalog is None:
        return []
    return [
        catalog.images[d] for d in sorted(catalog.images) if selector_matches(catalog.images[d], selector)
    ]


def encode_catalog(catalog: TenantCatalog) -> bytes:
    rows = [
        [
            m.digest,
            m.repository,
            list(m.tags),
            list(m.namespaces),
            [list(kv) for kv in m.labels],
            to_epoch(m.observed_at) if m.observed_at else None,
            m.running,
        ]
        for m in (catalog.images[d] for d in sorted(catalog.images))
    ]
    return pack({"i": rows})


def decode_catalog(data: bytes) -> TenantCatalog:
    header, _ = unpack(data)
    images = {}
    for digest, repo, tags, nss, labels, observed, running in header["i"]:
        images[digest] = ImageMeta(
            digest,
            repo,
            tuple(tags),
            tuple(nss),
            tuple((k, v) for k, v in labels),
            from_epoch(observed) if observed is not None else None,
            bool(running),
        )
    return TenantCatalog(images)


# ---------------------------------------------------------------- runtime


@dataclass(frozen=True, slots=True)
class RuntimeSites:
    """Where one image runs (``cluster/namespace``). Table key: ``tenant/digest``."""

    sites: frozenset[str] = frozenset()
    last_seen: int = 0  # epoch seconds of the newest event applied

    @property
    def running(self) -> bool:
        return bool(self.sites)


def apply_runtime(state: RuntimeSites | None, event: RuntimeEvent) -> tuple[RuntimeSites, Impact | None]:
    """Fold one runtime event; an image going from nowhere to somewhere yields a (running) impact.

    Events for one image arrive in order on its partition; a redelivered 'running' for a site already
    known changes nothing and emits nothing.
    """
    state = state or RuntimeSites()
    site = f"{event.cluster}/{event.namespace}"
    when = to_epoch(event.observed_at)
    sites = state.sites | {site} if event.state == "running" else state.sites - {site}
    new_state = RuntimeSites(frozenset(sites), max(state.last_seen, when))
    impact = None
    if not state.sites and sites:
        impact = Impact(
            tenant=event.tenant,
            image_digest=event.image_digest,
            event_time=event.observed_at,
            reasons=[Reason(source="runtime", id=site, detail="started running")],
            running=True,
            priority=None,
            inventory_observed_at=None,
        )
    return new_state, impact


def encode_sites(state: RuntimeSites) -> bytes:
    return pack({"s": sorted(state.sites), "t": state.last_seen})


def decode_sites(data: bytes) -> RuntimeSites:
    header, _ = unpack(data)
    return RuntimeSites(frozenset(header["s"]), int(header["t"]))
