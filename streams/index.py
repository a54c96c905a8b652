"""The image registry and the package index (docs/architecture.md §2): inventory in, index updates out.

Three pieces of state, each meant for its own table:

- ``ImageRecord`` keyed by image key ``tenant/digest`` (co-partitioned with the inventory topic): the
  image's integer id, its last inventory snapshot and metadata, and the source position it came from.
- ``PackageEntry`` keyed by package key (co-partitioned with index-updates / impact-requests):
  version → roaring bitmap of image ids, plus a per-source-partition high-water mark.
- ``ImageRef`` keyed by image id (a global table: every package partition needs to turn ids back into
  tenant + digest).

Image ids: ``id = offset * partitions + partition`` of the inventory message that first registered the
image (64-bit, roaring ``BitMap64``). The id is a function of the log alone, not of any counter: replaying
the log assigns the same ids, and a redelivered first inventory gets the same id whether or not its record
reached the changelog before the crash (a counter in a second table could be persisted without the record,
and the retry would mint a second id and orphan the first one's index entries). Offsets of one partition
interleave with the others', so ids stay dense and the bitmaps compress. A removed image's id is never
reused; an image inventoried again after a tombstone gets a fresh one.

Idempotency: every IndexUpdate carries the (partition, offset) of the inventory message it came from. For
one package entry, the updates from one inventory partition arrive in offset order (one producer task per
source partition, keyed by package, so ordered within the target partition: the producer must keep order,
i.e. idempotent producer or max-in-flight 1). A redelivery replays a suffix of that order, so an update
older than the entry's high-water mark for its source partition is a replay and is skipped, and one equal
to it is re-applied (bitmap add/remove is idempotent, and one message always yields the same op for a given
package@version). That blocks the case plain bitmaps cannot: an old remove replayed after a newer add.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Literal

from pyroaring import BitMap64

from schemas.messages import Impact, Inventory, Reason
from streams.codec import StateDecodeError, from_epoch, pack, to_epoch, unpack


@dataclass(frozen=True, slots=True, order=True)
class ImageKey:
    tenant: str
    digest: str

    @property
    def text(self) -> str:
        """The Kafka key of the inventory topic."""
        return f"{self.tenant}/{self.digest}"

    @classmethod
    def parse(cls, text: str) -> ImageKey:
        tenant, _, digest = text.rpartition("/")
        return cls(tenant, digest)


@dataclass(frozen=True, slots=True, order=True)
class SourcePosition:
    partition: int
    offset: int


# ---------------------------------------------------------------- ids


def image_id_for(position: SourcePosition, partitions: int) -> int:
    """The id of an image first registered by the inventory message at ``position``."""
    if not 0 <= position.partition < partitions:
        raise ValueError(f"partition {position.partition} outside 0..{partitions - 1}")
    return position.offset * partitions + position.partition


# ---------------------------------------------------------------- image records


@dataclass(frozen=True, slots=True)
class ImageRecord:
    """One image's registry entry. Table key: ``ImageKey.text`` (``tenant/digest``)."""

    image_id: int
    key: ImageKey
    packages: frozenset[tuple[str, str]]  # (package key, version; "" when the SBOM gives none)
    repository: str = ""
    tags: tuple[str, ...] = ()
    namespaces: tuple[str, ...] = ()
    labels: tuple[tuple[str, str], ...] = ()
    observed_at: int = 0  # epoch seconds
    source: str = ""
    position: SourcePosition = SourcePosition(-1, -1)


def snapshot_packages(inventory: Inventory) -> frozenset[tuple[str, str]]:
    return frozenset((c.package, c.version or "") for c in inventory.components)


def record_from_inventory(image_id: int, inventory: Inventory, position: SourcePosition) -> ImageRecord:
    return ImageRecord(
        image_id=image_id,
        key=ImageKey(inventory.tenant, inventory.image_digest),
        packages=snapshot_packages(inventory),
        repository=inventory.repository,
        tags=tuple(sorted(set(inventory.tags))),
        namespaces=tuple(sorted(set(inventory.namespaces))),
        labels=tuple(sorted(inventory.labels.items())),
        observed_at=to_epoch(inventory.observed_at),
        source=inventory.source,
        position=position,
    )


def encode_record(record: ImageRecord) -> bytes:
    return pack(
        {
            "id": record.image_id,
            "t": record.key.tenant,
            "d": record.key.digest,
            "p": sorted(record.packages),
            "r": record.repository,
            "tg": list(record.tags),
            "ns": list(record.namespaces),
            "l": [list(kv) for kv in record.labels],
            "o": record.observed_at,
            "s": record.source,
            "pos": [record.position.partition, record.position.offset],
        }
    )


def decode_record(data: bytes) -> ImageRecord:
    h, _ = unpack(data)
    try:
        return ImageRecord(
            image_id=int(h["id"]),
            key=ImageKey(h["t"], h["d"]),
            packages=frozenset((p, v) for p, v in h["p"]),
            repository=h["r"],
            tags=tuple(h["tg"]),
            namespaces=tuple(h["ns"]),
            labels=tuple((k, v) for k, v in h["l"]),
            observed_at=int(h["o"]),
            source=h["s"],
            position=SourcePosition(*h["pos"]),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise StateDecodeError(f"bad image record: {exc}") from None


# ---------------------------------------------------------------- index updates


Op = Literal["add", "remove"]


@dataclass(frozen=True, slots=True, order=True)
class IndexUpdate:
    """One membership change. Kafka key (index-updates topic): ``package``."""

    package: str
    version: str
    image_id: int
    op: Op
    tenant: str
    digest: str
    source: SourcePosition


def diff_inventory(
    previous: ImageRecord | None, new: Inventory | None, *, image_id: int, source: SourcePosition
) -> list[IndexUpdate]:
    """The index updates that take the index from ``previous`` to ``new`` (None: tombstone), sorted."""
    before = previous.packages if previous else frozenset()
    after = snapshot_packages(new) if new is not None else frozenset()
    key = previous.key if previous else (ImageKey(new.tenant, new.image_digest) if new else None)
    if key is None:
        return []
    updates = [
        IndexUpdate(pkg, ver, image_id, "remove", key.tenant, key.digest, source)
        for pkg, ver in before - after
    ]
    updates += [
        IndexUpdate(pkg, ver, image_id, "add", key.tenant, key.digest, source) for pkg, ver in after - before
    ]
    return sorted(updates)


def encode_update(update: IndexUpdate) -> bytes:
    return pack(
        {
            "p": update.package,
            "v": update.version,
            "i": update.image_id,
            "op": update.op,
            "t": update.tenant,
            "d": update.digest,
            "src": [update.source.partition, update.source.offset],
        }
    )


def decode_update(data: bytes) -> IndexUpdate:
    h, _ = unpack(data)
    op = h.get("op")
    if op not in ("add", "remove"):
        raise StateDecodeError(f"bad index update op {op!r}")
    return IndexUpdate(h["p"], h["v"], int(h["i"]), op, h["t"], h["d"], SourcePosition(*h["src"]))


def encode_updates(updates: list[IndexUpdate]) -> bytes:
    """Several updates of one inventory message in one record (an ``index-updates`` record carries every
    update one inventory sends to one index partition): what they share is written once."""
    if not updates:
        raise ValueError("no updates to encode")
    first = updates[0]
    shared = (first.image_id, first.tenant, first.digest, first.source)
    if any((u.image_id, u.tenant, u.digest, u.source) != shared for u in updates):
        raise ValueError("updates of one record must come from one inventory message")
    return pack(
        {
            "i": first.image_id,
            "t": first.tenant,
            "d": first.digest,
            "src": [first.source.partition, first.source.offset],
            "u": [[u.package, u.version, u.op] for u in updates],
        }
    )


def decode_updates(data: bytes) -> list[IndexUpdate]:
    h, _ = unpack(data)
    try:
        image_id, tenant, digest = int(h["i"]), h["t"], h["d"]
        source = SourcePosition(*h["src"])
        out = []
        for package, version, op in h["u"]:
            if op not in ("add", "remove"):
                raise StateDecodeError(f"bad index update op {op!r}")
            out.append(IndexUpdate(package, version, image_id, op, tenant, digest, source))
        return out
    except (KeyError, TypeError, ValueError) as exc:
        raise StateDecodeError(f"bad index updates record: {exc}") from None


def by_package(updates: Iterable[IndexUpdate]) -> dict[str, list[IndexUpdate]]:
    """Updates grouped by package, packages sorted, each group in its original order."""
    groups: dict[str, list[IndexUpdate]] = {}
    for update in updates:
        groups.setdefault(update.package, []).append(update)
    return {package: groups[package] for package in sorted(groups)}


# ---------------------------------------------------------------- package entries


@dataclass(frozen=True, slots=True)
class PackageEntry:
    """Images holding a package, by version. Table key: the package key.

    Treat as immutable: ``apply_index_update`` copies the one bitmap it changes.
    """

    versions: dict[str, BitMap64] = field(default_factory=dict)
    hwm: dict[int, int] = field(default_factory=dict)  # source partition → highest offset applied

    def images(self, version: str | None = None) -> BitMap64:
        if version is not None:
            return BitMap64(self.versions.get(version, BitMap64()))
        return BitMap64.union(BitMap64(), *self.versions.values())


def apply_index_update(entry: PackageEntry | None, update: IndexUpdate) -> PackageEntry:
    """Apply one update; a replay older than the entry's high-water mark changes nothing."""
    return apply_index_updates(entry, [update])


def apply_index_updates(entry: PackageEntry | None, updates: Iterable[IndexUpdate]) -> PackageEntry:
    """Apply updates in order (they must all be for this entry's package), copying each bitmap once."""
    entry = entry or PackageEntry()
    versions = dict(entry.versions)
    hwm = dict(entry.hwm)
    copied: set[str] = set()
    changed = False
    for update in updates:
        if update.source.offset < hwm.get(update.source.partition, -1):
            continue
        hwm[update.source.partition] = update.source.offset
        changed = True
        bitmap = versions.get(update.version)
        if bitmap is None:
            if update.op == "remove":
                continue
            bitmap = BitMap64()
            versions[update.version] = bitmap
            copied.add(update.version)
        elif update.version not in copied:
            bitmap = BitMap64(bitmap)
            versions[update.version] = bitmap
            copied.add(update.version)
        if update.op == "add":
            bitmap.add(update.image_id)
        else:
            bitmap.discard(update.image_id)
            if not bitmap:
                del versions[update.version]
                copied.discard(update.version)
    if not changed:
        return entry
    return PackageEntry(versions, hwm)


def encode_entry(entry: PackageEntry) -> bytes:
    names = sorted(entry.versions)
    blobs = []
    for name in names:
        bitmap = entry.versions[name]
        bitmap.run_optimize()
        blobs.append(bitmap.serialize())
    return pack({"v": names, "h": sorted([p, o] for p, o in entry.hwm.items())}, blobs)


def decode_entry(data: bytes) -> PackageEntry:
    header, blobs = unpack(data)
    names = header.get("v", [])
    if len(names) != len(blobs):
        raise StateDecodeError("package entry: version and bitmap counts differ")
    try:
        versions = {name: BitMap64.deserialize(blob) for name, blob in zip(names, blobs, strict=True)}
    except Exception as exc:  # pyroaring raises ValueError on corrupt input
        raise StateDecodeError(f"package entry: bad bitmap: {exc}") from None
    return PackageEntry(versions, {int(p): int(o) for p, o in header.get("h", [])})


# ---------------------------------------------------------------- directory (id → image)


@dataclass(frozen=True, slots=True)
class ImageRef:
    """What resolution needs about an image id. Table key: the image id (a global table)."""

    tenant: str
    digest: str
    observed_at: datetime | None = None
    running: bool = False


def encode_ref(ref: ImageRef) -> bytes:
    observed = to_epoch(ref.observed_at) if ref.observed_at else None
    return pack({"t": ref.tenant, "d": ref.digest, "o": observed, "r": ref.running})


def decode_ref(data: bytes) -> ImageRef:
    h, _ = unpack(data)
    observed = from_epoch(h["o"]) if h.get("o") is not None else None
    return ImageRef(h["t"], h["d"], observed, bool(h.get("r", False)))


# ---------------------------------------------------------------- the inventory stage in one call


@dataclass(frozen=True, slots=True)
class InventoryOutcome:
    record: ImageRecord | None  # new value for the registry table (None: delete the key)
    updates: list[IndexUpdate]  # to the index-updates topic, keyed by package
    directory: tuple[int, ImageRef | None] | None  # (id, ref) for the directory table; ref None: delete
    impact: Impact | None  # the image itself needs (re)evaluation


def apply_inventory(
    record: ImageRecord | None,
    inventory: Inventory | None,
    *,
    source: SourcePosition,
    partitions: int,
) -> InventoryOutcome:
    """One inventory message (``None``: tombstone for ``record``'s key) against the image's record."""
    if inventory is None:
        if record is None:
            return InventoryOutcome(None, [], None, None)
        updates = diff_inventory(record, None, image_id=record.image_id, source=source)
        return InventoryOutcome(None, updates, (record.image_id, None), None)
    image_id = record.image_id if record is not None else image_id_for(source, partitions)
    updates = diff_inventory(record, inventory, image_id=image_id, source=source)
    new_record = record_from_inventory(image_id, inventory, source)
    ref = ImageRef(inventory.tenant, inventory.image_digest, inventory.observed_at)
    impact = None
    if record is None or updates:
        added = sum(1 for u in updates if u.op == "add")
        removed = len(updates) - added
        impact = Impact(
            tenant=inventory.tenant,
            image_digest=inventory.image_digest,
            event_time=inventory.observed_at,
            reasons=[
                Reason(
                    source="inventory",
                    id=inventory.source or inventory.image_digest,
                    detail="new image" if record is None else f"+{added} -{removed} components",
                )
            ],
            priority=None,
            inventory_observed_at=inventory.observed_at,
        )
    return InventoryOutcome(new_record, updates, (image_id, ref), impact)
