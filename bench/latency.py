"""Section 3c, latency at a short window (issue 16): our fold app with a 1 s window and 0 grace, 1,000 images
indexed, then a steady feed of 100 advisories/s for 60 s whose event time is the wall clock when each is
sent. Per advisory: the time from its send to the first job command that names it (the job record's
timestamp, set by the fold app's producer on this machine). The first advisory of a window waits for the
window to end (up to W), so W is the floor of the p99, and what the pipeline adds is the rest. The feed's
last second is left out of the figures: its window is closed by the harness's closing advisory, sent once
the feed has drained, not by the feed itself.

Correctness gate: with W = 1 s and 0 grace, impacts that cross partitions arrive slightly out of event-time
order, and a late impact joins the next open window (streams.windows), so job *ids* depend on arrival order
and cannot be compared with `streams.preview`. What must match is coverage: the set of
(tenant, image, advisory) triples over all job commands equals preview's on the same inputs (nothing lost,
nothing invented). A run that fails the gate gets no figures.

``python -m bench.latency [images] [rate] [seconds]`` runs it alone.
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer

from bench import common, fold
from bench.common import BOOTSTRAP
from bench.workload import T0, advisories, build_estate, sentinel
from schemas.codec import encode
from schemas.messages import AdvisoryDelta
from streams.preview import preview

WINDOW, GRACE = 1, 0


def _triples(jobs: list[dict[str, Any]], ids: set[str]) -> set[tuple[str, str, str]]:
    return {(j["tenant"], j["image_digest"], r["id"]) for j in jobs for r in j["reasons"] if r["id"] in ids}


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


async def _collect(topic: str, partitions: int, out: list[tuple[int, bytes]], stop: asyncio.Event) -> None:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=BOOTSTRAP, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        consumer.assign(await common.partitions(consumer, topic))
        while not stop.is_set():
            batch = await consumer.getmany(timeout_ms=100, max_records=10_000)
            for records in batch.values():
                out.extend((r.timestamp, r.value) for r in records)
    finally:
        await consumer.stop()


def _max_rss(procs: list[common.Proc]) -> float | None:
    """The largest worker's RSS (the goal is per worker)."""
    sizes = [size for size in (p.rss_mb() for p in procs) if size is not None]
    return max(sizes) if sizes else None


async def run(images: int, rate: float, seconds: float, partitions: int, workers: int = 1) -> dict[str, Any]:
    started = time.perf_counter()
    estate = build_estate(images, seed=7)
    count = int(rate * seconds)
    # Packages as the fold section picks them; the event time is set at send time below.
    feed = advisories(estate, count, start=T0, spacing=0, tag="lat", seed=23)
    prefix = common.fresh_prefix("lat")
    await common.create_topics(prefix, partitions)
    proc, group, names = fold.ours_app(prefix, partitions, window=WINDOW, grace=GRACE)
    # More workers of one group split the partitions (scale-out); the first one's log keeps the prefix's name.
    procs = [
        proc,
        *(
            fold.ours_app(prefix, partitions, window=WINDOW, grace=GRACE, worker=n)[0]
            for n in range(1, workers)
        ),
    ]
    for each in procs:
        each.start()
    out: dict[str, Any] = {
        "images": images,
        "components": estate.components,
        "rate": rate,
        "seconds": seconds,
        "window_s": WINDOW,
        "grace_s": GRACE,
        "partitions": partitions,
        "workers": workers,
        "loadavg_before": [round(x, 2) for x in os.getloadavg()],
    }
    jobs_seen: list[tuple[int, bytes]] = []
    stop = asyncio.Event()
    collector: asyncio.Task[None] | None = None
    try:
        await fold.group_stable(group)
        t0 = time.monotonic()
        items = [(f"{i.tenant}/{i.image_digest}".encode(), encode(i)) for i in estate.inventories]
        await common.produce_all(f"{prefix}inventory", items)
        await fold.wait_consumed(
            group, [f"{prefix}{t}" for t in names["load"].split(",")], timeout=1800, proc=proc
        )
        out["load_seconds"] = round(time.monotonic() - t0, 1)
        out["rss_mb_indexed"] = _max_rss(procs)
        collector = asyncio.create_task(_collect(f"{prefix}jobs", partitions, jobs_seen, stop))
        sent: list[AdvisoryDelta] = []
        sent_at: dict[str, float] = {}
        prod = common.producer()
        await prod.start()
        try:
            futures = []
            begin = time.time()
            for i, delta in enumerate(feed):
                due = begin + i / rate
                if (pause := due - time.time()) > 0:
                    await asyncio.sleep(pause)
                now = time.time()
                stamped = delta.model_copy(update={"modified": datetime.fromtimestamp(int(now), UTC)})
                sent.append(stamped)
                sent_at[stamped.id] = now
                futures.append(
                    await prod.send(f"{prefix}advisories", encode(stamped), key=stamped.id.encode())
                )
            await asyncio.gather(*futures)
            out["send_seconds"] = round(time.time() - begin, 2)
            # The closer waits until the feed's impacts are folded: sent at once, it can reach a tenant
            # partition before the last second's impacts (they cross two partitions first), which then
            # arrive late and join the closer's own window, which nothing closes.
            await fold.wait_consumed(
                group,
                [f"{prefix}{t}" for t in ("advisories", *names["requests"].split(","), "impacts")],
                timeout=900,
                proc=proc,
            )
            closer = sentinel(datetime.fromtimestamp(int(time.time()), UTC) + timedelta(hours=1), "lat")
            await (await prod.send(f"{prefix}advisories", encode(closer), key=closer.id.encode()))
        finally:
            await prod.stop()
        expected_result = preview(
            estate.inventories, [*sent, closer], window=WINDOW, grace=GRACE, include_inventory_impacts=True
        )
        ids = set(sent_at)
        expected = _triples([j.model_dump(mode="json") for j in expected_result.jobs], ids)
        deadline = time.monotonic() + 900
        found: set[tuple[str, str, str]] = set()
        decoded: list[tuple[int, dict[str, Any]]] = []
        while time.monotonic() < deadline:
            for each in procs:
                each.check()
            new = jobs_seen[:]
            del jobs_seen[: len(new)]
            batch = [(ts, orjson.loads(v)) for ts, v in new if v]
            decoded += batch
            found |= _triples([j for _, j in batch if "reasons" in j], ids)
            if expected <= found:
                break
            await asyncio.sleep(0.5)
        out["rss_mb"] = _max_rss(procs)
        out["coverage_equal_preview"] = found == expected
        out["expected_triples"] = len(expected)
        if found != expected:
            out["missing"] = len(expected - found)
            out["extra"] = len(found - expected)
            return out
        first: dict[str, int] = {}
        for ts, job in decoded:
            for reason in job.get("reasons", []):
                if reason["id"] in ids and ts < first.get(reason["id"], 1 << 62):
                    first[reason["id"]] = ts
        # The last second's window is closed by the closer, after the drain above, not by the feed: its
        # advisories measure the harness, so the figures cover the ones the steady feed itself closed.
        last_window = int(max(sent_at.values()))
        steady = [a for a in sorted(first) if int(sent_at[a]) < last_window]
        latencies = [first[a] / 1000 - sent_at[a] for a in steady]
        out["advisories_with_jobs"] = len(first)
        out["advisories_measured"] = len(latencies)
        out["jobs"] = len(decoded)
        for name, q in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99)):
            value = _pct(latencies, q)
            out[f"latency_{name}_s"] = None if value is None else round(value, 3)
        out["latency_max_s"] = round(max(latencies), 3) if latencies else None
    finally:
        stop.set()
        if collector is not None:
            await collector
        for each in procs:
            each.stop()
        await common.delete_prefix(prefix)
        await common.delete_prefix(f"changelog__{prefix}")
        out["total_seconds"] = round(time.perf_counter() - started)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("images", type=int, nargs="?", default=1000)
    parser.add_argument("rate", type=float, nargs="?", default=100.0, help="advisories per second")
    parser.add_argument("seconds", type=float, nargs="?", default=60.0, help="how long the feed runs")
    parser.add_argument("--workers", type=int, default=1, help="fold-app processes in the group")
    args = parser.parse_args()
    result = asyncio.run(run(args.images, args.rate, args.seconds, 6, args.workers))
    print(orjson.dumps(result, option=orjson.OPT_INDENT_2).decode())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
