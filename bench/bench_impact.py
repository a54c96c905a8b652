"""Impact resolution against a large synthetic estate: ``python -m bench.bench_impact [--images N]``.

Builds a package index of N images (default 100,000), each with ~300 components drawn from a pool of
8,000 packages with a Zipf-like popularity (a few packages are in nearly every image, most are rare) and
1-6 versions per package. The index is built in bulk (the same PackageEntry type the stream keeps; feeding
30M IndexUpdates one by one would measure Python object churn, not the index). Then it times:

- ``resolve_advisory`` for one advisory on a popular package (a third of its versions affected), first
  delivery and a redelivery;
- ``resolve_advisory`` for one advisory on a rare package;
- ``apply_inventory`` + ``apply_index_updates`` for a re-inventory (per-image cost of the inventory path);

and reports the index's memory: sum of serialized entry sizes (what the changelog holds) and the process
RSS growth while building it (roaring allocates outside tracemalloc's view). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import random
import resource
import sys
import time
from datetime import UTC, datetime
from typing import Any

import orjson
from pyroaring import BitMap64

from schemas.messages import AdvisoryDelta, Inventory
from streams.index import (
    ImageRef,
    PackageEntry,
    SourcePosition,
    apply_index_updates,
    apply_inventory,
    encode_entry,
)
from streams.resolve import resolve_advisory, split_advisory

T0 = datetime(2024, 1, 1, tzinfo=UTC)


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        pages = int(fh.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def build(
    images: int, components: int, pool: int, seed: int
) -> tuple[dict[str, PackageEntry], dict[int, ImageRef], list[str]]:
    rng = random.Random(seed)
    names = [f"npm/pkg-{i:05d}" for i in range(pool)]
    weights = [1.0 / (i + 1) ** 0.9 for i in range(pool)]
    cum: list[float] = []
    total = 0.0
    for w in weights:
        total += w
        cum.append(total)
    versions = {
        n: [f"{rng.randint(0, 5)}.{rng.randint(0, 20)}.{v}" for v in range(rng.randint(1, 6))] for n in names
    }
    members: dict[tuple[int, int], list[int]] = {}
    refs: dict[int, ImageRef] = {}
    for image_id in range(images):
        picks = set(rng.choices(range(pool), cum_weights=cum, k=components))
        for p in picks:
            v = rng.randrange(len(versions[names[p]]))
            members.setdefault((p, v), []).append(image_id)
        refs[image_id] = ImageRef(f"tenant-{image_id % 20}", f"sha256:{image_id:064x}", T0)
    entries: dict[str, PackageEntry] = {}
    grouped: dict[int, dict[str, BitMap64]] = {}
    for (p, v), ids in members.items():
        grouped.setdefault(p, {})[versions[names[p]][v]] = BitMap64(ids)
    members.clear()
    for p, by_version in grouped.items():
        entries[names[p]] = PackageEntry(by_version, {0: images})
    return entries, refs, names


def _advisory(package: str, affected_versions: list[str], modified: datetime = T0) -> AdvisoryDelta:
    return AdvisoryDelta.model_validate(
        {
            "id": "GHSA-bench",
            "modified": modified,
            "severity": "critical",
            "affected": [
                {
                    "package": package,
                    "ecosystem": "npm",
                    "name": package.split("/", 1)[1],
                    "versions": affected_versions,
                }
            ],
        }
    )


def _time_resolve(
    entries: dict[str, PackageEntry], refs: dict[int, ImageRef], package: str
) -> dict[str, Any]:
    entry = entries[package]
    listed = sorted(entry.versions)
    affected = listed[: max(1, len(listed) // 3)]
    delta = _advisory(package, affected)
    _, requests = split_advisory(None, delta)
    t = time.perf_counter()
    specs, res = resolve_advisory(None, requests[0], entry, refs.get)
    first = time.perf_counter() - t
    t = time.perf_counter()
    _, again = resolve_advisory(specs, requests[0], entry, refs.get)
    redelivery = time.perf_counter() - t
    assert len(again.impacts) == len(res.impacts)
    return {
        "package": package,
        "images_with_package": len(entry.images()),
        "versions": len(listed),
        "impacted_images": len(res.impacts),
        "seconds": round(first, 4),
        "redelivery_seconds": round(redelivery, 4),
        "impacts_per_second": int(len(res.impacts) / first) if first else None,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--components", type=int, default=300)
    parser.add_argument("--pool", type=int, default=8_000)
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)

    rss0 = _rss_mb()
    t = time.perf_counter()
    entries, refs, names = build(args.images, args.components, args.pool, args.seed)
    build_s = time.perf_counter() - t
    rss1 = _rss_mb()
    serialized = sum(len(encode_entry(e)) for e in entries.values())
    memberships = sum(len(b) for e in entries.values() for b in e.versions.values())

    popular = max(names[:50], key=lambda n: len(entries[n].images()) if n in entries else 0)
    rare = next(n for n in reversed(names) if n in entries)
    results = {"popular": _time_resolve(entries, refs, popular), "rare": _time_resolve(entries, refs, rare)}

    # Inventory path: a re-inventory of one image that changes 5 of its 300 components.
    comps = [{"purl": f"pkg:{n}@1.0.0", "package": n, "version": "1.0.0"} for n in names[: args.components]]
    inv = Inventory.model_validate(
        {"tenant": "t", "image_digest": "sha256:x", "components": comps, "observed_at": T0}
    )
    changed = Inventory.model_validate(
        {
            **inv.model_dump(by_alias=True),
            "components": comps[5:] + [{**c, "version": "1.0.1"} for c in comps[:5]],
        }
    )
    first = apply_inventory(None, inv, source=SourcePosition(0, args.images + 1), partitions=1)
    t = time.perf_counter()
    rounds = 200
    for i in range(rounds):
        out = apply_inventory(
            first.record, changed, source=SourcePosition(0, args.images + 2 + i), partitions=1
        )
        for u in out.updates:
            entries[u.package] = apply_index_updates(entries.get(u.package), [u])
    reinventory_ms = (time.perf_counter() - t) / rounds * 1000
    t = time.perf_counter()
    for i in range(20):
        apply_inventory(None, inv, source=SourcePosition(0, args.images + 1000 + i), partitions=1)
    new_image_ms = (time.perf_counter() - t) / 20 * 1000

    report = {
        "images": args.images,
        "components_per_image": args.components,
        "package_pool": args.pool,
        "packages_indexed": len(entries),
        "memberships": memberships,
        "index_build_seconds": round(build_s, 2),
        "index_serialized_mb": round(serialized / 2**20, 2),
        "index_bytes_per_membership": round(serialized / memberships, 2),
        "process_rss_growth_mb_incl_build_temporaries_and_directory": round(rss1 - rss0, 1),
        "resolve": results,
        "reinventory_5_changes_ms": round(reinventory_ms, 3),
        "new_image_300_components_ms": round(new_image_ms, 3),
        "python": sys.version.split()[0],
    }
    sys.stdout.write(orjson.dumps(report, option=orjson.OPT_INDENT_2).decode() + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
