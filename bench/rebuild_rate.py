"""``stella-sched rebuild`` itself (``cli.rebuild.rebuild``) on a generated log of >= 200,000 events, and raw
``insert_many`` of the same documents on the same server (issue 15: >= 20,000 events/s, >= 0.5x raw).

The log is shaped like the pipeline's (seeded, so one seed is one log): per window and tenant, impacts, the
job commands they plan, the job results (findings, attempts, counts), the run's events; inventories and
runtime events for the images; advisory deltas (cursors). It is produced to a fresh topic prefix with the
project's topics, then rebuilt with the CLI's own function (Kafka reads, decode, fold, bulk load and index
builds all counted), then the rebuilt documents are inserted raw into a database of their own.

    python -m bench.rebuild_rate [--events 200000] [--mongo-url URL] [--keep] [--prefix P (reuse a log)]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel
from pymongo import MongoClient

from bench import common
from bench.common import BOOTSTRAP, MONGO_URL
from schemas.codec import encode
from schemas.messages import (
    AdvisoryDelta,
    Attempt,
    Component,
    Finding,
    Impact,
    Inventory,
    JobCommand,
    JobInputs,
    JobResult,
    Reason,
    RunEvent,
    RuntimeEvent,
    SeverityCounts,
)

T0 = datetime(2026, 1, 5, 12, 0, 0, tzinfo=UTC)
WINDOW = 30
TENANTS = 20
IMAGES = 2000
JOBS_PER_WINDOW = 12  # per tenant
SEVERITIES = ("low", "medium", "high", "critical")

Item = tuple[str, bytes, BaseModel]  # logical topic, key, message


def _digest(i: int) -> str:
    return f"sha256:{i:064x}"


def generate(events: int, seed: int = 5) -> list[Item]:
    """At least ``events`` messages in the order a pipeline would produce them."""
    rng = random.Random(seed)
    out: list[Item] = []
    for i in range(IMAGES):
        tenant = f"tenant-{i % TENANTS:02d}"
        comps = [
            Component(purl=f"pkg:npm/p{c}@1.{c % 7}.0", package=f"npm/p{c}", version=f"1.{c % 7}.0")
            for c in sorted(rng.sample(range(3000), 60))
        ]
        inv = Inventory(
            tenant=tenant,
            image_digest=_digest(i),
            repository=f"registry.example/app-{i % 97}",
            tags=[f"v{i % 5}", "latest"],
            namespaces=[f"ns{i % 3}"],
            labels={"app.kubernetes.io/name": f"app{i}", "tier": str(i % 4)},
            components=comps,
            observed_at=T0,
            source=f"bench-{i}",
        )
        out.append(("inventory", f"{tenant}/{_digest(i)}".encode(), inv))
    window = 0
    while len(out) < events:
        start = T0 + timedelta(seconds=WINDOW * (window + 1))
        advisory = AdvisoryDelta(id=f"GHSA-rb-{window:05d}", modified=start, severity=rng.choice(SEVERITIES))
        out.append(("advisories", advisory.id.encode(), advisory))
        for t in range(TENANTS):
            tenant = f"tenant-{t:02d}"
            run_id = f"run-{tenant}-{window}"
            images = rng.sample(range(t, IMAGES, TENANTS), JOBS_PER_WINDOW)
            reason = Reason(source="advisory", id=advisory.id, modified=start)
            out.append(
                (
                    "run-events",
                    run_id.encode(),
                    RunEvent(run_id=run_id, tenant=tenant, state="planning", at=start),
                )
            )
            for n, image in enumerate(images):
                digest = _digest(image)
                impact = Impact(tenant=tenant, image_digest=digest, event_time=start, reasons=[reason])
                out.append(("impacts", tenant.encode(), impact))
                if n % 5 == 0:
                    site = RuntimeEvent(
                        tenant=tenant,
                        image_digest=digest,
                        cluster=f"eu.{n % 2}",
                        namespace=f"ns{image % 3}",
                        state="running" if window % 2 else "stopped",
                        observed_at=start,
                    )
                    out.append(("runtime", digest.encode(), site))
            end = start + timedelta(seconds=WINDOW)
            commands = [
                JobCommand(
                    job_id=f"job-{window}-{image}",
                    run_id=run_id,
                    tenant=tenant,
                    image_digest=_digest(image),
                    kind="reevaluate",
                    priority="high" if image % 3 == 0 else "normal",
                    window_start=start,
                    window_end=end,
                    deadline=end + timedelta(hours=1),
                    reasons=[reason],
                    inputs=JobInputs(policy_revision=1),
                )
                for image in images
            ]
            out += [("jobs", c.image_digest.encode(), c) for c in commands]
            out.append(
                (
                    "run-events",
                    run_id.encode(),
                    RunEvent(run_id=run_id, tenant=tenant, state="running", at=end, jobs_total=len(images)),
                )
            )
            for c in commands:
                findings = [
                    Finding(id=f"CVE-2026-{rng.randrange(10_000):04d}", package=f"npm/p{k}", severity=s)
                    for k, s in enumerate(rng.choices(SEVERITIES, k=rng.randint(0, 8)))
                ]
                result = JobResult(
                    job_id=c.job_id,
                    run_id=c.run_id,
                    tenant=c.tenant,
                    image_digest=c.image_digest,
                    priority=c.priority,
                    status="completed",
                    finished_at=end + timedelta(seconds=2),
                    attempts=[Attempt(attempt=1, at=end, outcome="ok")],
                    findings=findings,
                    verdict="fail" if findings else "pass",
                    counts=SeverityCounts(high=sum(1 for f in findings if f.severity == "high")),
                    inputs=c.inputs,
                )
                out.append(("job-results", c.image_digest.encode(), result))
            done = RunEvent(
                run_id=run_id,
                tenant=tenant,
                state="completed",
                at=end + timedelta(seconds=3),
                jobs_total=len(images),
                jobs_done=len(images),
            )
            out.append(("run-events", run_id.encode(), done))
        window += 1
    return out


async def produce(prefix: str, log: list[Item]) -> None:
    await common.create_topics(prefix, 6)
    by_topic: dict[str, list[tuple[bytes | None, bytes | None]]] = {}
    for logical, key, message in log:
        by_topic.setdefault(logical, []).append((key, encode(message)))
    for logical, items in by_topic.items():
        await common.produce_all(f"{prefix}{logical}", items)


async def rebuild_once(prefix: str, url: str, db: str) -> tuple[Any, float]:
    from agents.settings import Settings
    from cli.rebuild import rebuild

    settings = Settings.from_env(
        topic_prefix=prefix, kafka_bootstrap=BOOTSTRAP, mongo_url=url, mongo_db=db, window_seconds=WINDOW
    )
    started = time.perf_counter()
    report = await rebuild(settings, prefix="rb_", switch=False, catch_up_seconds=0.0)
    return report, time.perf_counter() - started


def raw_insert(url: str, source_db: str, collection_prefix: str) -> tuple[int, float]:
    """The rebuilt documents (read back first, not timed) inserted raw: unordered, 1,000 per command, into a
    fresh database; no indexes. Returns (documents, seconds)."""
    client: MongoClient[dict[str, Any]] = MongoClient(url, socketTimeoutMS=600_000)
    try:
        src = client[source_db]
        names = sorted(n for n in src.list_collection_names() if n.startswith(collection_prefix))
        docs = {name: list(src[name].find({})) for name in names}
        target = client[f"bench_rawrb_{uuid.uuid4().hex[:8]}"]
        started = time.perf_counter()
        for name, rows in docs.items():
            for i in range(0, len(rows), 1000):
                target[name].insert_many(rows[i : i + 1000], ordered=False)
        return sum(len(rows) for rows in docs.values()), time.perf_counter() - started
    finally:
        client.close()


def _loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


async def run(
    events: int = 200_000, url: str = MONGO_URL, prefix: str | None = None, keep: bool = False
) -> dict[str, Any]:
    fresh = prefix is None
    topic_prefix = prefix or common.fresh_prefix("rebuild")
    if fresh:
        log = generate(events)
        t = time.perf_counter()
        await produce(topic_prefix, log)
        print(
            f"  produced {len(log):,} records to {topic_prefix} in {time.perf_counter() - t:.1f} s",
            flush=True,
        )
    db = f"bench_rb_{uuid.uuid4().hex[:8]}"
    try:
        load_start = _loadavg()
        report, seconds = await rebuild_once(topic_prefix, url, db)
        load_end = _loadavg()
        documents, raw_s = await asyncio.to_thread(raw_insert, url, db, "rb_")
    finally:
        if fresh and not keep:
            await common.delete_prefix(topic_prefix)
    rebuild_docs_per_s = documents / seconds
    raw_docs_per_s = documents / raw_s
    return {
        "events": report.read,
        "folded": report.folded,
        "documents": documents,
        "rebuild_seconds": round(seconds, 2),
        # of which reading + folding (the rest: consumer start, the bulk load and index builds)
        "read_fold_seconds": round(report.seconds - report.load_seconds, 2),
        "load_seconds": round(report.load_seconds, 2),
        "rebuild_events_per_s": round(report.read / seconds),
        "rebuild_docs_per_s": round(rebuild_docs_per_s),
        "raw_insert_seconds": round(raw_s, 2),
        "raw_insert_docs_per_s": round(raw_docs_per_s),
        # the whole command (read, decode, fold, load, indexes) against raw insert_many of what it wrote
        "ratio_vs_raw": round(raw_s / seconds, 2),
        "prefix": topic_prefix if keep or not fresh else None,
        "loadavg_start": load_start,
        "loadavg_end": load_end,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--events", type=int, default=200_000)
    p.add_argument("--mongo-url", default=MONGO_URL)
    p.add_argument("--prefix", help="rebuild this existing topic prefix instead of generating a log")
    p.add_argument("--keep", action="store_true", help="keep the generated topics (reuse with --prefix)")
    args = p.parse_args()
    print(asyncio.run(run(args.events, args.mongo_url, args.prefix, args.keep)))


if __name__ == "__main__":
    main()
