"""Synthetic but realistic inputs for the benchmarks, built from the sample SBOMs in tests/data.

An image is a base layer (the components of one of the real OS SBOMs: Alpine, distroless Debian, the SPDX
examples) + an application layer (the 43 npm components of the real CERN CycloneDX SBOM, a random 60-100 %
of them, some at a bumped patch version) + packages drawn with a Zipf-like popularity from a synthetic npm
pool until the image holds its target count. Target counts are log-normal (median ~100), clipped to
40..300 components. Advisories are GHSA-shaped: one npm package, one ECOSYSTEM range ``introduced 0 /
fixed X`` that covers some of the versions in the estate. Everything is seeded: one seed, one workload.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from ingest.detect import parse_file
from schemas.messages import AdvisoryDelta, Component, Inventory

SBOM_DIR = Path(__file__).resolve().parents[1] / "tests" / "data" / "sbom"
T0 = datetime(2026, 1, 5, 12, 0, 0, tzinfo=UTC)
TENANTS = 20


@dataclass(frozen=True)
class Estate:
    inventories: list[Inventory]
    pool: dict[str, list[str]]  # npm package → versions present somewhere in the estate
    popular: list[str]  # the real CERN npm packages (in most images)

    @property
    def components(self) -> int:
        return sum(len(i.components) for i in self.inventories)


def _real_components() -> dict[str, list[Component]]:
    out: dict[str, list[Component]] = {}
    for path in sorted(SBOM_DIR.rglob("*.json")):
        result = parse_file(
            "sbom",
            path.read_bytes(),
            path.name,
            tenant="t",
            image_digest="sha256:" + "0" * 64,
            repository=None,
            observed_at=T0,
            kev_ids=frozenset(),
        )
        invs = [m for m in result.messages if isinstance(m, Inventory)]
        if invs:
            out[path.name] = list(invs[0].components)
    return out


def _bump(version: str, rng: random.Random) -> str:
    parts = version.split(".")
    if len(parts) == 3 and parts[2].isdigit():
        return f"{parts[0]}.{parts[1]}.{int(parts[2]) + rng.randint(1, 3)}"
    return version


def build_estate(images: int, *, seed: int = 7, pool_size: int = 3000, at: datetime = T0) -> Estate:
    rng = random.Random(seed)
    real = _real_components()
    app = real.pop("cern-lhc-vdm-editor.json")
    bases = list(real.values())
    names = [f"npm/bench-{i:05d}" for i in range(pool_size)]
    versions = {
        n: [f"{rng.randint(0, 4)}.{rng.randint(0, 12)}.{v}" for v in range(rng.randint(1, 4))] for n in names
    }
    cum: list[float] = []
    total = 0.0
    for i in range(pool_size):
        total += 1.0 / (i + 1) ** 0.9
        cum.append(total)
    pool: dict[str, set[str]] = {}
    inventories = []
    for n in range(images):
        target = max(40, min(300, int(math.exp(rng.gauss(math.log(100), 0.5)))))
        comps: dict[str, Component] = {}
        for c in bases[n % len(bases)]:
            comps[c.package] = c
        for c in app:
            if rng.random() < 0.2:
                continue
            version = _bump(c.version or "", rng) if rng.random() < 0.15 else c.version
            comps[c.package] = Component(
                purl=f"pkg:{c.package}@{version}", package=c.package, version=version
            )
        while len(comps) < target:
            name = names[rng.choices(range(pool_size), cum_weights=cum)[0]]
            if name in comps:
                continue
            version = rng.choice(versions[name])
            comps[name] = Component(purl=f"pkg:{name}@{version}", package=name, version=version)
        marker = sentinel_package()
        comps[marker] = Component(purl=f"pkg:{marker}@1.0.0", package=marker, version="1.0.0")
        for c in comps.values():
            if c.package == marker:
                continue
            if c.package.startswith("npm/") and c.version:
                pool.setdefault(c.package, set()).add(c.version)
        inventories.append(
            Inventory.model_validate(
                {
                    "tenant": f"tenant-{n % TENANTS:02d}",
                    "image_digest": f"sha256:{n:064x}",
                    "repository": f"registry.example/app-{n % 97}",
                    "components": [comps[k] for k in sorted(comps)],
                    "observed_at": at,
                    "source": f"bench-{n}",
                }
            )
        )
    popular = sorted(c.package for c in app)
    return Estate(inventories, {k: sorted(v) for k, v in sorted(pool.items())}, popular)


def _key(v: str) -> tuple[int, ...]:
    return tuple(int(p) if p.isdigit() else 0 for p in v.split("."))


def advisories(
    estate: Estate,
    count: int,
    *,
    start: datetime,
    spacing: float,
    tag: str,
    seed: int = 11,
    popular: float = 0.03,
) -> list[AdvisoryDelta]:
    """``count`` advisories, the i-th modified at ``start + i * spacing`` seconds (whole seconds).

    A ``popular`` share name one of the CERN packages (most images hold them); the rest a uniformly chosen
    npm package of the estate (mostly rare ones, as real advisories are)."""
    rng = random.Random(seed)
    packages = sorted(estate.pool)
    out = []
    for i in range(count):
        package = rng.choice(estate.popular) if rng.random() < popular else rng.choice(packages)
        present = sorted(estate.pool.get(package, ["1.0.0"]), key=_key)
        fixed = _bump(present[rng.randrange(len(present))], rng)
        out.append(
            AdvisoryDelta.model_validate(
                {
                    "id": f"GHSA-{tag}-{i:05d}",
                    "modified": start + timedelta(seconds=int(i * spacing)),
                    "severity": rng.choice(["low", "medium", "high", "critical"]),
                    "summary": f"benchmark advisory {i} on {package}",
                    "affected": [
                        {
                            "package": package,
                            "ecosystem": "npm",
                            "name": package.split("/", 1)[1],
                            "ranges": [
                                {"type": "ECOSYSTEM", "events": [{"introduced": "0"}, {"fixed": fixed}]}
                            ],
                        }
                    ],
                }
            )
        )
    return out


def sentinel_package() -> str:
    """A package every image holds: an advisory on it reaches every tenant (closes their windows)."""
    return "npm/bench-marker"


def sentinel(at: datetime, tag: str) -> AdvisoryDelta:
    package = sentinel_package()
    return AdvisoryDelta.model_validate(
        {
            "id": f"GHSA-{tag}-sentinel",
            "modified": at,
            "severity": "low",
            "affected": [
                {
                    "package": package,
                    "ecosystem": "npm",
                    "name": package.split("/", 1)[1],
                    "versions": ["1.0.0"],
                }
            ],
        }
    )
