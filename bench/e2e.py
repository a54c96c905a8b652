"""Sections 4 and 5: the whole worker (``python -m agents.worker``, every stage, the reference executor, the
Mongo projector) on a fresh topic prefix and database.

- load: the estate in three equal batches (one "run" each; the index grows across them): inventories/s
  and index updates/s until the worker's group has committed every inventory, index-update, impact and
  catalog record.
- per run, a constant-rate stream of advisories: send i is *scheduled* at ``start + i / rate`` and its
  latency measured from that scheduled time (no coordinated omission: a late send counts its own lateness).
  Each advisory's event time is its scheduled time, so windows close on the stream's own clock. Latency =
  Kafka timestamp of each job command naming the advisory minus the advisory's scheduled time (same host
  clock), p50 / p99 over all (advisory, job) pairs. Then the time from the last scheduled send until every
  job of the phase has its result projected in MongoDB.
- per run, saturation: a burst of advisories produced at once; deltas/s until the group has committed
  every advisory, impact-request and impact record they caused.
- replay: every projected topic read from offset 0 and folded into fresh collections of the same MongoDB
  by ``stella-sched rebuild`` itself (``cli.rebuild.rebuild``: fold in memory, bulk load): events/s.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer
from pymongo import MongoClient
from pymongo.errors import PyMongoError

from agents.settings import Settings
from bench import common
from bench.common import BOOTSTRAP, MONGO_URL, Proc, percentile, summary
from bench.fold import group_stable, wait_consumed
from bench.workload import Estate, advisories, build_estate
from projections.mongo_store import MongoStore
from schemas.codec import encode

WINDOW, GRACE, IDLE = 2, 0, 2
REPLAY_TIMEOUT_S = 600.0  # a wedged server must not hang the bench
MONGO_WAIT_S = 120.0


def _env(prefix: str, db: str) -> dict[str, str]:
    return {
        "KAFKA_BOOTSTRAP": BOOTSTRAP,
        "MONGO_URL": MONGO_URL,
        "STELLA_TOPIC_PREFIX": prefix,
        "STELLA_APP_ID": f"{prefix}app",
        "STELLA_PARTITIONS": "6",
        "STELLA_MONGO_DB": db,
        "STELLA_DATA_DIR": str(common.RUN_DIR / "data"),
        "STELLA_WINDOW_SECONDS": str(WINDOW),
        "STELLA_GRACE_SECONDS": str(GRACE),
        "STELLA_IDLE_FLUSH_SECONDS": str(IDLE),
        "STELLA_WEB_PORT": "0",
        "STELLA_SIGNING_KEY_FILE": str(common.RUN_DIR / "keys" / "bench.key"),
        "STELLA_LOG_LEVEL": "WARNING",
    }


async def _stream(
    prefix: str, estate: Estate, rate: float, seconds: float, tag: str, seed: int
) -> dict[str, Any]:
    count = int(rate * seconds)
    start_wall = datetime.now(UTC) + timedelta(seconds=1)
    deltas = advisories(estate, count, start=start_wall, spacing=0, tag=tag, seed=seed)
    prod = common.producer()
    await prod.start()
    scheduled: dict[str, float] = {}
    lateness = []
    futures = []
    try:
        base = start_wall.timestamp()
        for i, delta in enumerate(deltas):
            at = base + i / rate
            event = delta.model_copy(update={"modified": datetime.fromtimestamp(int(at), UTC)})
            now = time.time()
            if at > now:
                await asyncio.sleep(at - now)
            lateness.append(max(0.0, time.time() - at))
            scheduled[event.id] = at
            futures.append(await prod.send(f"{prefix}advisories", encode(event), key=event.id.encode()))
        await asyncio.gather(*futures)
    finally:
        await prod.stop()
    return {
        "scheduled": scheduled,
        "send_lateness_max_s": max(lateness),
        "last": base + (count - 1) / rate,
        "last_sent": time.time(),
    }


async def _jobs_since(prefix: str, ids: set[str], settle: float = 6.0) -> list[tuple[dict[str, Any], int]]:
    """Job commands naming any of the advisory ``ids``, read until no new one appeared for ``settle`` s."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=BOOTSTRAP, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        topic = f"{prefix}jobs"
        parts = await common.partitions(consumer, topic)
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        out = []
        quiet_since = time.monotonic()
        while time.monotonic() - quiet_since < settle:
            batch = await consumer.getmany(timeout_ms=300)
            for recs in batch.values():
                for r in recs:
                    job = orjson.loads(r.value)
                    if any(x["source"] == "advisory" and x["id"] in ids for x in job["reasons"]):
                        out.append((job, r.timestamp))
                        quiet_since = time.monotonic()
        return out
    finally:
        await consumer.stop()


class CheckpointWatch:
    """The projector's checkpoints, polled every 0.2 s with the time of each answer."""

    def __init__(self, store: MongoStore, group: str) -> None:
        self.store, self.group = store, group
        self.samples: list[tuple[float, dict[tuple[str, int], int]]] = []

    async def run(self) -> None:
        while True:
            try:
                checkpoints = await asyncio.to_thread(self.store.get_checkpoints, self.group)
            except PyMongoError as exc:  # a stalled server: poll again
                print(f"  checkpoint poll failed: {exc!r}", flush=True)
            else:
                self.samples.append((time.time(), checkpoints))
            await asyncio.sleep(0.2)

    def first_covering(self, positions: list[tuple[str, int, int]]) -> float | None:
        """When the checkpoints first passed every (topic, partition, offset), if they have."""
        for at, checkpoints in self.samples:
            if all(checkpoints.get((t, p), -1) >= o for t, p, o in positions):
                return at
        return None


async def _result_positions(prefix: str, job_ids: set[str]) -> list[tuple[str, int, int]] | None:
    """Where the results of ``job_ids`` are in ``job-results``; None until every job has one."""
    found: dict[str, tuple[str, int, int]] = {}
    for r in await common.read_topic(f"{prefix}job-results"):
        job_id = orjson.loads(r.value).get("job_id") if r.value else None
        if job_id in job_ids:
            found[job_id] = (r.topic, r.partition, r.offset)
    return list(found.values()) if len(found) == len(job_ids) else None


async def _hops(
    prefix: str, sent: dict[str, Any], job_ids: set[str], projected_at: float | None
) -> dict[str, Any]:
    """Where the time between the last scheduled advisory and its last job result in MongoDB went: the
    Kafka timestamp (same host clock) of the last record of each hop that belongs to the phase, in seconds
    after the last scheduled send. impact = the index stage's impact of one of the phase's advisories
    (``impacts``); job = the last job command (the window closed: by a later event or the idle flush);
    result = the last job result; projected = the bench saw the projector's checkpoint pass it."""
    ids = set(sent["scheduled"])
    last = float(sent["last"])

    def latest(records: list[Any], match: Any) -> float | None:
        times = [r.timestamp / 1000 for r in records if r.value and match(orjson.loads(r.value))]
        return round(max(times) - last, 2) if times else None

    impacts = await common.read_topic(f"{prefix}impacts")
    jobs = await common.read_topic(f"{prefix}jobs")
    results = await common.read_topic(f"{prefix}job-results")
    return {
        "advisory_sent": round(float(sent["last_sent"]) - last, 2),
        "impact": latest(
            impacts, lambda d: any(x.get("id") in ids for x in d.get("reasons", []) if isinstance(x, dict))
        ),
        "job": latest(jobs, lambda d: d.get("job_id") in job_ids),
        "result": latest(results, lambda d: d.get("job_id") in job_ids),
        "projected": None if projected_at is None else round(projected_at - last, 2),
    }


REPLAY_PORT = 27058


def replay_server(action: str) -> str:
    """A FerretDB of its own for the rebuild target (same binary and script as `make up`, its own port and
    run folder): the live instance stalls under projection load (see NOTES.md), and a stall there would
    measure the stall, not the rebuild. Returns its URL."""
    env = {
        **os.environ,
        "RUN_DIR": str(common.RUN_DIR / "replay-ferretdb"),
        "MONGO_PORT": str(REPLAY_PORT),
        "MONGO_URL": f"mongodb://127.0.0.1:{REPLAY_PORT}/",
        # Its own PostgreSQL database on the cluster `make up` started (two FerretDBs must not share one).
        "PG_DB": "ferretdb_replay",
    }
    subprocess.run(["bash", str(common.REPO / "ops" / "ferretdb.sh"), action], env=env, check=True)
    return env["MONGO_URL"]


async def replay(prefix: str, db_name: str, run: int, mongo_url: str) -> dict[str, Any]:
    """``stella-sched rebuild`` itself (``cli.rebuild.rebuild``: every projected topic from offset 0 folded in
    memory with the projector's fold, then bulk-loaded with ``MongoStore.load_memory``), into a fresh
    database on the replay server, without switching any pointer. Events/s counts every record read over
    the whole command, Kafka reads, fold, load and index builds included."""
    from cli.rebuild import rebuild as cli_rebuild

    settings = Settings.from_env(
        topic_prefix=prefix,
        kafka_bootstrap=BOOTSTRAP,
        mongo_url=mongo_url,
        mongo_db=f"{db_name}_rebuild{run}",
        window_seconds=WINDOW,
    )
    started = time.perf_counter()
    # No catch-up: the worker is still writing (ticks, the end of the last burst), and chasing the end
    # of its topics for up to a minute would measure that chase, not the rebuild.
    report = await asyncio.wait_for(
        cli_rebuild(settings, prefix="rb_", switch=False, catch_up_seconds=0.0), REPLAY_TIMEOUT_S
    )
    took = time.perf_counter() - started
    print(f"  replay: {report.read} records read, {report.folded} folded in {took:.1f} s", flush=True)
    return {
        "events": report.read,
        "of": report.total,
        "folded": report.folded,
        "seconds": took,
        "events_per_s": report.read / took,
    }


async def run(images: int, rate: float, seconds: float, burst: int, runs: int) -> dict[str, Any]:
    from signing.keys import generate_keypair

    key = common.RUN_DIR / "keys" / "bench.key"
    if not key.exists():
        key.parent.mkdir(parents=True, exist_ok=True)
        generate_keypair(key, key.parent / "bench.pub.json")
    estate = build_estate(images, seed=3)
    prefix = common.fresh_prefix("e2e")
    db_name = prefix.replace(".", "").replace("-", "_")
    await common.create_topics(prefix, 6)
    proc = Proc(["-m", "agents.worker"], _env(prefix, db_name), common.RUN_DIR / f"{prefix}log")
    proc.start()
    client: MongoClient[dict[str, Any]] = MongoClient(
        MONGO_URL, serverSelectionTimeoutMS=10_000, socketTimeoutMS=10_000
    )
    out: dict[str, Any] = {"images": images, "components": estate.components, "prefix": prefix}
    group = f"{prefix}app"
    store = MongoStore(client, db_name)
    try:
        await group_stable(group)
        load_topics = [f"{prefix}{t}" for t in ("inventory", "index-updates", "catalog-updates")]
        inv_rates, upd_rates = [], []
        chunk = -(-images // 3)
        for i in range(3):
            part = estate.inventories[i * chunk : (i + 1) * chunk]
            items = [(f"{x.tenant}/{x.image_digest}".encode(), encode(x)) for x in part]
            t0 = time.monotonic()
            await common.produce_all(f"{prefix}inventory", items)
            t1 = await wait_consumed(group, load_topics, timeout=900, proc=proc, then=[f"{prefix}impacts"])
            comps = sum(len(x.components) + 1 for x in part)
            inv_rates.append(len(part) / (t1 - t0))
            upd_rates.append(comps / (t1 - t0))
            print(f" e2e load batch {i + 1}: {len(part) / (t1 - t0):.1f} inventories/s", flush=True)
        out["load_inventories_per_s"] = summary(inv_rates)
        out["load_index_updates_per_s"] = summary(upd_rates, 0)
        await asyncio.sleep(IDLE + 2)  # let the inventory windows flush before the measured phases
        p50s, p99s, maxes, mongo_s, sat, rss, pairs, jobs_n, lateness = [], [], [], [], [], [], [], [], []
        hops: list[dict[str, Any]] = []
        for r in range(runs):
            tag = f"e2e{r}"
            sent = await _stream(prefix, estate, rate, seconds, tag, 100 + r)
            # Watched from the last send on, while the jobs are collected: `_jobs_since` returns only after
            # 6 s without a new job command, and polling the projection after it measured that quiet
            # period too (14.9-33 s in the run).
            watch = CheckpointWatch(store, f"{prefix}app-projector")
            watcher = asyncio.create_task(watch.run())
            try:
                jobs = await _jobs_since(prefix, set(sent["scheduled"]))
                lat = []
                for job, ts in jobs:
                    for reason in job["reasons"]:
                        if reason["source"] == "advisory" and reason["id"] in sent["scheduled"]:
                            lat.append(ts / 1000 - sent["scheduled"][reason["id"]])
                job_ids = sorted({j["job_id"] for j, _ in jobs})
                print(f"  run {r + 1}: {len(sent['scheduled'])} sent, {len(job_ids)} jobs", flush=True)
                # Projected = the projector's checkpoint in MongoDB has passed the result of every job of
                # the phase: the first watched moment it had (one small query per poll).
                deadline = time.time() + MONGO_WAIT_S
                done = False
                positions: list[tuple[str, int, int]] | None = None
                while job_ids and time.time() < deadline:
                    proc.check()
                    positions = await _result_positions(prefix, set(job_ids))
                    if positions is not None and watch.first_covering(positions) is not None:
                        done = True
                        break
                    await asyncio.sleep(0.5)
            finally:
                watcher.cancel()
            projected_at = watch.first_covering(positions) if done and positions is not None else None
            mongo_s.append(projected_at - sent["last"] if projected_at is not None else None)
            hops.append(await _hops(prefix, sent, set(job_ids), projected_at))
            print(
                f"  run {r + 1}: seconds after the last scheduled advisory, per hop: {hops[-1]}", flush=True
            )
            if not job_ids:
                out.setdefault("mongo_incomplete", []).append(f"run {r + 1}: no job to project")
            elif not done:
                out.setdefault("mongo_incomplete", []).append(
                    f"run {r + 1}: not projected in {MONGO_WAIT_S:.0f} s"
                )
            p50s.append(percentile(lat, 0.5) * 1000)
            p99s.append(percentile(lat, 0.99) * 1000)
            maxes.append(max(lat) * 1000 if lat else None)
            pairs.append(len(lat))
            jobs_n.append(len(job_ids))
            lateness.append(sent["send_lateness_max_s"] * 1000)
            # saturation
            deltas = advisories(estate, burst, start=datetime.now(UTC), spacing=0, tag=f"sat{r}", seed=r + 50)
            t0 = time.monotonic()
            await common.produce_all(f"{prefix}advisories", [(d.id.encode(), encode(d)) for d in deltas])
            hop = [f"{prefix}{t}" for t in ("advisories", "impact-requests")]
            t1 = await wait_consumed(group, hop, timeout=600, proc=proc, then=[f"{prefix}impacts"])
            sat.append(burst / (t1 - t0))
            rss.append(proc.rss_mb())
            print(
                f" e2e run {r + 1}: p50 {p50s[-1]:.0f} ms p99 {p99s[-1]:.0f} ms, mongo {mongo_s[-1]} s,"
                f" saturation {sat[-1]:.1f} deltas/s, rss {rss[-1]:.0f} MB",
                flush=True,
            )
            await asyncio.sleep(IDLE + 2)
        out.update(
            {
                "rate_per_s": rate,
                "stream_seconds": seconds,
                "burst": burst,
                "latency_p50_ms": summary(p50s, 0),
                "latency_p99_ms": summary(p99s, 0),
                "latency_max_ms": summary([m for m in maxes if m is not None], 0),
                "advisory_job_pairs": pairs,
                "jobs_per_run": jobs_n,
                "send_lateness_max_ms": summary(lateness, 1),
                "last_result_in_mongo_after_last_send_s": summary([x for x in mongo_s if x is not None], 2),
                "last_result_hops_s": hops,
                "saturation_deltas_per_s": summary(sat, 1),
                "worker_rss_mb": summary([x for x in rss if x is not None], 0),
                "worker_peak_rss_mb": proc.hwm_mb(),
            }
        )
        # Replayed while the worker is idle but alive, into a FerretDB of its own (replay_server).
        reps = []
        replay_url = replay_server("start")
        try:
            for r in range(runs):
                try:
                    reps.append(await replay(prefix, db_name, r, replay_url))
                except Exception as exc:  # a wedged FerretDB must not hang the bench
                    out["replay_error"] = repr(exc)
                    break
        finally:
            replay_server("stop")
        out["replay_events"] = reps[0]["of"] if reps else 0
        out["replay_events_folded"] = [x["events"] for x in reps]
        out["replay_events_per_s"] = summary([x["events_per_s"] for x in reps], 0)
        out["replay_seconds"] = summary([x["seconds"] for x in reps], 2)
        print(f" replay {out['replay_events_per_s']}", flush=True)
    finally:
        t = time.monotonic()
        proc.stop()
        out["worker_stop_seconds"] = round(time.monotonic() - t, 1)
        # The database is not dropped: FerretDB's dropDatabase can wedge the server behind a stalled pool
        # (NOTES.md); `make clean` removes it with the rest of run/.
        client.close()
        await common.delete_prefix(prefix)
    return out
