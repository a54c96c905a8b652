"""Section 1: the pure core, no I/O. The driver ``streams.preview`` uses (one dict per table) is fed the
estate one inventory at a time (``apply_inventory`` + ``apply_index_updates`` per package, as the stages do)
and then the advisory deltas one at a time (``split_advisory`` → ``resolve_advisory`` per package →
``add_impact`` per impact), timed separately. Several runs; median / min / max."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

from bench.common import summary
from bench.workload import T0, advisories, build_estate
from streams.index import IndexUpdate, apply_index_updates
from streams.preview import _Driver


def run(images: int, deltas: int, runs: int) -> dict[str, Any]:
    estate = build_estate(images)
    burst = advisories(estate, deltas, start=T0 + timedelta(hours=1), spacing=0.5, tag="core")
    index_rate, single_rate, delta_rate, impact_rate = [], [], [], []
    impacts = 0
    for _ in range(runs):
        driver = _Driver(30, 5, __import__("streams.jobs", fromlist=["DEFAULT_CONFIG"]).DEFAULT_CONFIG)
        t = time.perf_counter()
        for inv in estate.inventories:
            driver.inventory(inv)
        load = time.perf_counter() - t
        index_rate.append((estate.components) / load)
        # One update per call, as the index agent applies them (decode/encode excluded).
        updates = [
            IndexUpdate(c.package, c.version or "", 10**9 + n, "add", inv.tenant, inv.image_digest, _pos(n))
            for n, inv in enumerate(estate.inventories[:200])
            for c in inv.components
        ]
        entries: dict[str, Any] = {}
        t = time.perf_counter()
        for u in updates:
            entries[u.package] = apply_index_updates(entries.get(u.package), [u])
        single_rate.append(len(updates) / (time.perf_counter() - t))
        before = driver.impacts
        t = time.perf_counter()
        for delta in burst:
            for impact in driver.resolve(delta):
                driver.fold(impact)
        driver.flush()
        took = time.perf_counter() - t
        impacts = driver.impacts - before
        delta_rate.append(deltas / took)
        impact_rate.append(impacts / took)
    return {
        "images": images,
        "components": estate.components,
        "deltas": deltas,
        "impacts_per_run": impacts,
        "index_updates_per_s_inventory_path": summary(index_rate, 0),
        "index_updates_per_s_one_by_one": summary(single_rate, 0),
        "deltas_per_s": summary(delta_rate, 1),
        "impacts_folded_per_s": summary(impact_rate, 0),
    }


def _pos(n: int) -> Any:
    from streams.index import SourcePosition

    return SourcePosition(0, n)
