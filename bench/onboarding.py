"""Section 3b, onboarding: a tenant's first 1,000 images (the shared SBOMs' component counts, about 116,000
index updates), then a feed re-sync of 5,000 advisories, through our fold app and the Quix peer.

The same run as section 3 (`bench.fold.run_system`: load, burst, sentinel, job ids checked against
`streams.preview`), at onboarding size. ``python -m bench.onboarding [images] [deltas] [--ours-only]
[--profile]`` runs it alone (``--profile``: ours under pyinstrument, report in run/bench/profile-ours.txt).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
from typing import Any

import orjson

from bench import fold


async def run(
    images: int, deltas: int, runs: int, partitions: int, kinds: tuple[str, ...] = ("ours", "quix")
) -> dict[str, Any]:
    started = time.perf_counter()
    wl = fold.workload(images, deltas)
    per_run = []
    for r in range(runs):
        order = list(kinds) if r % 2 == 0 else list(reversed(kinds))
        row: dict[str, Any] = {"run": r + 1, "loadavg_before": [round(x, 2) for x in os.getloadavg()]}
        for kind in order:
            res = await fold.run_system(kind, wl, partitions)
            res.pop("_payloads", None)
            row[kind] = res
            print(f" {kind}", {k: fold._r(v) for k, v in res.items()}, flush=True)
        if "ours" in row and "quix" in row:
            ours, quix = row["ours"], row["quix"]
            row["ratio_ours_vs_quix_index_updates"] = fold._ratio(
                ours.get("index_updates_per_s"), quix.get("index_updates_per_s")
            )
            row["ratio_ours_vs_quix_deltas"] = fold._ratio(ours.get("deltas_per_s"), quix.get("deltas_per_s"))
        per_run.append(row)
    return {
        **fold.describe(wl, deltas, partitions),
        "seconds": round(time.perf_counter() - started),
        "runs": per_run,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", type=int, nargs="?", default=1000)
    parser.add_argument("deltas", type=int, nargs="?", default=5000)
    parser.add_argument("--ours-only", action="store_true", help="leave the Quix peer out")
    parser.add_argument("--profile", action="store_true", help="run ours under pyinstrument")
    args = parser.parse_args()
    if args.profile:
        wl = fold.workload(args.images, args.deltas)
        out = asyncio.run(fold.run_system("ours", wl, 6, profile=True))
        out.pop("_payloads", None)
        print(orjson.dumps(out).decode())
        return 0
    kinds = ("ours",) if args.ours_only else ("ours", "quix")
    result = asyncio.run(run(args.images, args.deltas, 1, 6, kinds))
    print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
