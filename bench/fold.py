"""Sections 2 and 3: the impact fold on the real broker, ours (faust) vs the peer (Quix Streams), and the raw
aiokafka passthrough limit, all three in each run so ratios are taken pair by pair.

A run, for each system on a fresh topic prefix: start the process, wait until its consumer group is stable,
then

1. load: the estate's inventories, produced pipelined; done when the group has committed every input
   record of the inventory, index-update and impact topics (a commit lags ≤ 1 s in both: faust
   ``broker_commit_interval`` 1 s, Quix ``commit_interval`` 1 s);
2. deltas: a burst of advisories, all in one 30 s event-time window; once the impacts topic holds every
   impact they cause (count known from ``streams.preview``), one sentinel advisory an hour later (on a
   package every image holds) closes the windows; done when the jobs topic holds every expected job.

The jobs are then read back and their ids compared with ``preview`` (same inputs, window 30 s, grace 5 s);
a system whose ids differ gets no time. Ours runs idle flushes off (1 h) so only event time closes windows,
as in the peer.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient

from agents.topology import TopicSpec
from agents.topology_admin import ensure_topics
from bench import common
from bench.common import BOOTSTRAP, Proc
from bench.workload import T0, Estate, advisories, build_estate, sentinel
from schemas.codec import encode
from schemas.messages import AdvisoryDelta
from streams.preview import preview

WINDOW, GRACE = 30, 5


@dataclass
class FoldWorkload:
    estate: Estate
    deltas: list[AdvisoryDelta]
    closer: AdvisoryDelta
    expected_jobs: set[str]
    phase2_impacts: int  # impacts the burst causes (sentinel excluded)
    index_updates: int

    @property
    def inventory_items(self) -> list[tuple[bytes, bytes]]:
        return [(f"{i.tenant}/{i.image_digest}".encode(), encode(i)) for i in self.estate.inventories]

    @property
    def delta_items(self) -> list[tuple[bytes, bytes]]:
        return [(d.id.encode(), encode(d)) for d in self.deltas]


def workload(images: int, deltas: int, seed: int = 7) -> FoldWorkload:
    estate = build_estate(images, seed=seed)
    start = T0 + timedelta(hours=1)
    burst = advisories(estate, deltas, start=start, spacing=20 / max(1, deltas), tag="fold", seed=seed + 4)
    closer = sentinel(start + timedelta(hours=1), "fold")
    result = preview(
        estate.inventories, [*burst, closer], window=WINDOW, grace=GRACE, include_inventory_impacts=True
    )
    last_window = max(j.window_start for j in result.jobs)
    expected = {j.job_id for j in result.jobs if j.window_start != last_window}
    n = len(estate.inventories)
    return FoldWorkload(
        estate=estate,
        deltas=burst,
        closer=closer,
        expected_jobs=expected,
        phase2_impacts=result.impacts - 2 * n,  # minus the new-image impacts and the sentinel's
        index_updates=estate.components + n,  # + the image pseudo package of each
    )


def describe(wl: FoldWorkload, deltas: int, partitions: int) -> dict[str, Any]:
    """The sizes a fold-shaped section reports with its runs."""
    return {
        "images": len(wl.estate.inventories),
        "components": wl.estate.components,
        "index_updates": wl.index_updates,
        "deltas": deltas,
        "phase2_impacts": wl.phase2_impacts,
        "expected_jobs": len(wl.expected_jobs),
        "partitions": partitions,
    }


async def group_stable(group: str, timeout: float = 90.0) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    await admin.start()
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                resp = await admin.describe_consumer_groups([group])
                groups = resp[0].groups if resp else []
                if groups and groups[0][2] == "Stable" and groups[0][5]:
                    return
            except Exception:
                pass
            await asyncio.sleep(0.25)
        raise TimeoutError(f"group {group} not stable after {timeout:.0f} s")
    finally:
        await admin.close()


async def wait_consumed(
    group: str, topic_names: list[str], *, timeout: float, proc: Proc, then: Sequence[str] = ()
) -> float:
    """Until ``group`` has committed the end offset of every partition of ``topic_names``; then, for the
    ``then`` topics (fed by the first ones, and by the worker's own ticks), the end offsets they had at that
    moment: a topic that keeps growing by itself must not keep the wait open."""
    admin = AIOKafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    consumer = AIOKafkaConsumer(bootstrap_servers=BOOTSTRAP, enable_auto_commit=False)
    await admin.start()
    await consumer.start()
    try:
        deadline = time.monotonic() + timeout
        for step, names in enumerate((list(topic_names), list(then))):
            if not names:
                continue
            parts = [tp for t in names for tp in await common.partitions(consumer, t)]
            targets = await consumer.end_offsets(parts)
            while True:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{group} did not consume {names} within {timeout:.0f} s")
                proc.check()
                committed = await admin.list_consumer_group_offsets(group)
                if all(
                    (committed[tp].offset if tp in committed else 0) >= end
                    for tp, end in targets.items()
                    if end > 0
                ):
                    break
                if step == 0:
                    targets = await consumer.end_offsets(parts)  # the first set may still be growing
                await asyncio.sleep(0.2)
        return time.monotonic()
    finally:
        await consumer.stop()
        await admin.close()


def _ours(prefix: str, partitions: int) -> tuple[Proc, str, dict[str, str]]:
    return ours_app(prefix, partitions)


def ours_app(
    prefix: str, partitions: int, *, window: int = WINDOW, grace: int = GRACE, worker: int = 0
) -> tuple[Proc, str, dict[str, str]]:
    """Our fold app on ``prefix``'s topics, idle flushes off: only event time closes windows."""
    app_id = f"{prefix}app"
    env = {
        "KAFKA_BOOTSTRAP": BOOTSTRAP,
        "STELLA_TOPIC_PREFIX": prefix,
        "STELLA_APP_ID": app_id,
        "STELLA_PARTITIONS": str(partitions),
        "STELLA_DATA_DIR": str(common.RUN_DIR / "data"),
        "STELLA_WINDOW_SECONDS": str(window),
        "STELLA_GRACE_SECONDS": str(grace),
        "STELLA_IDLE_FLUSH_SECONDS": "3600",
        "STELLA_WEB_PORT": "0",
        "STELLA_LOG_LEVEL": "WARNING",
        "STELLA_WORKER_NAME": f"bench{worker}",  # each worker of a group needs its own RocksDB directory
    }
    suffix = f".{worker}" if worker else ""
    proc = Proc(["-m", "bench.fold_app"], env, common.RUN_DIR / f"{prefix}log{suffix}")
    return (
        proc,
        app_id,
        {"load": "inventory,index-updates,impacts,catalog-updates", "requests": "impact-requests"},
    )


def _quix(prefix: str, partitions: int) -> tuple[Proc, str, dict[str, str]]:
    proc = Proc(
        ["-m", "bench.peer_quix", prefix, str(partitions), str(WINDOW), str(GRACE)],
        {},
        common.RUN_DIR / f"{prefix}log",
    )
    return proc, f"{prefix}quix", {"load": "inventory,package,impacts", "requests": "package"}


async def run_system(kind: str, wl: FoldWorkload, partitions: int, profile: bool = False) -> dict[str, Any]:
    prefix = common.fresh_prefix(kind)
    await common.create_topics(prefix, partitions, extra=("package",) if kind == "quix" else ())
    proc, group, names = (_ours if kind == "ours" else _quix)(prefix, partitions)
    if profile:
        proc.args = ["-m", "pyinstrument", "-o", str(common.RUN_DIR / f"profile-{kind}.txt"), *proc.args]
    proc.start()
    out: dict[str, Any] = {"system": kind, "prefix": prefix}
    try:
        await group_stable(group)
        load_topics = [f"{prefix}{t}" for t in names["load"].split(",")]
        n = len(wl.estate.inventories)
        # 1. load
        t0 = time.monotonic()
        await common.produce_all(f"{prefix}inventory", wl.inventory_items)
        t1 = await wait_consumed(group, load_topics, timeout=1800, proc=proc)
        out["load_seconds"] = t1 - t0
        out["inventories_per_s"] = n / (t1 - t0)
        out["index_updates_per_s"] = wl.index_updates / (t1 - t0)
        # 2. deltas
        hop_topics = [f"{prefix}advisories", f"{prefix}{names['requests']}", f"{prefix}impacts"]
        before = await common.end_offsets([*hop_topics, f"{prefix}jobs"])
        t2 = time.monotonic()
        await common.produce_all(f"{prefix}advisories", wl.delta_items)
        # Every impact is out once the group committed every advisory and request (outputs are acked
        # before an input is committed, in both systems). Not a count of impact records: ours sends one
        # record per tenant partition and resolved request, the peer one per impact.
        t_impacts = await wait_consumed(group, hop_topics[:2], timeout=1800, proc=proc)
        await common.produce_all(f"{prefix}advisories", [(wl.closer.id.encode(), encode(wl.closer))])
        t3 = await common.wait_for(
            {f"{prefix}jobs": before[f"{prefix}jobs"] + len(wl.expected_jobs)}, timeout=1800
        )
        after = await common.end_offsets(hop_topics)
        hops = sum(after[t] - before[t] for t in hop_topics)
        out["rss_mb"] = proc.rss_mb()
        out["peak_rss_mb"] = proc.hwm_mb()
        jobs = await common.read_topic(f"{prefix}jobs", expect=len(wl.expected_jobs), timeout=30)
        ids = {orjson.loads(r.value)["job_id"] for r in jobs}
        out["jobs"] = len(ids)
        out["jobs_equal_preview"] = ids == wl.expected_jobs
        out["deltas_seconds"] = t3 - t2
        out["impacts_seconds"] = t_impacts - t2
        out["records_hopped"] = hops
        if out["jobs_equal_preview"]:
            out["deltas_per_s"] = len(wl.deltas) / (t3 - t2)
            out["records_per_s"] = hops / (t3 - t2)
        else:
            out["deltas_per_s"] = out["records_per_s"] = None
            out["missing"] = len(wl.expected_jobs - ids)
            out["extra"] = len(ids - wl.expected_jobs)
        if kind == "ours":
            sample = await common.read_topic(f"{prefix}impact-requests", timeout=10)
            sample += await common.read_topic(f"{prefix}impacts", timeout=10)
            out["_payloads"] = [
                (r.key, r.value) for r in sample if r.value and not r.value.startswith(b'{"at"')
            ]
    finally:
        proc.stop()
        await common.delete_prefix(prefix)
        await common.delete_prefix(f"changelog__{prefix}")
    return out


# ---------------------------------------------------------------- passthrough limit


async def passthrough(
    payloads: list[tuple[bytes, bytes]], partitions: int, count: int, acked_each: bool
) -> float:
    """aiokafka consume → produce of ``count`` records (the payloads cycled), same broker, same partition
    count, acks=all. Pipelined: every record of a fetched batch is sent, then the batch's acks awaited and
    the offsets committed. ``acked_each``: each record's ack is awaited before the next (what a stage that
    publishes an input's outputs before its table write does). Returns messages/s."""
    prefix = common.fresh_prefix("pass")
    src, dst = f"{prefix}src", f"{prefix}dst"
    await ensure_topics(BOOTSTRAP, [TopicSpec(src, "", partitions), TopicSpec(dst, "", partitions)])
    items = [payloads[i % len(payloads)] for i in range(count)]
    await common.produce_all(src, items)
    consumer = AIOKafkaConsumer(
        src,
        bootstrap_servers=BOOTSTRAP,
        group_id=f"{prefix}group",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    prod = common.producer()
    await consumer.start()
    await prod.start()
    try:
        seen = 0
        started: float | None = None
        while seen < count:
            batch = await consumer.getmany(timeout_ms=500, max_records=1000)
            if started is None and batch:
                started = time.perf_counter()
            futures = []
            for records in batch.values():
                for r in records:
                    if acked_each:
                        await prod.send_and_wait(dst, r.value, key=r.key)
                    else:
                        futures.append(await prod.send(dst, r.value, key=r.key))
                    seen += 1
            if futures:
                await asyncio.gather(*futures)
            if batch:
                await consumer.commit()
        assert started is not None
        return count / (time.perf_counter() - started)
    finally:
        await consumer.stop()
        await prod.stop()
        await common.delete_prefix(prefix)


async def run(images: int, deltas: int, runs: int, partitions: int, pass_count: int) -> dict[str, Any]:
    wl = workload(images, deltas)
    per_run = []
    for r in range(runs):
        order = ["ours", "quix"] if r % 2 == 0 else ["quix", "ours"]
        res = {k: await run_system(k, wl, partitions) for k in order}
        payloads = res["ours"].pop("_payloads")
        pt = await passthrough(payloads, partitions, pass_count, acked_each=False)
        pt_each = await passthrough(payloads, partitions, min(pass_count, 5000), acked_each=True)
        ours, quix = res["ours"], res["quix"]
        row = {
            "run": r + 1,
            "ours": ours,
            "quix": quix,
            "passthrough_msgs_per_s": pt,
            "passthrough_acked_each_msgs_per_s": pt_each,
            "payload_bytes_mean": sum(len(v) for _, v in payloads) / max(1, len(payloads)),
            "ratio_ours_records_vs_passthrough": _ratio(ours.get("records_per_s"), pt),
            "ratio_ours_vs_quix_deltas": _ratio(ours.get("deltas_per_s"), quix.get("deltas_per_s")),
            "ratio_ours_vs_quix_load": _ratio(ours.get("inventories_per_s"), quix.get("inventories_per_s")),
        }
        print(orjson.dumps({k: v for k, v in row.items() if k not in ("ours", "quix")}).decode(), flush=True)
        print(" ours", {k: _r(v) for k, v in ours.items()}, flush=True)
        print(" quix", {k: _r(v) for k, v in quix.items()}, flush=True)
        per_run.append(row)
    sizes = sorted(len(v) for _, v in payloads)
    return {
        **describe(wl, deltas, partitions),
        "passthrough_records": pass_count,
        "payload_bytes": {"min": sizes[0], "median": sizes[len(sizes) // 2], "max": sizes[-1]},
        "inventory_bytes_mean": round(sum(len(v) for _, v in wl.inventory_items) / images),
        "advisory_bytes_mean": round(sum(len(v) for _, v in wl.delta_items) / deltas),
        "runs": per_run,
    }


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


def _r(v: Any) -> Any:
    return round(v, 2) if isinstance(v, float) else v
