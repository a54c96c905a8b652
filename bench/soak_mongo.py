"""``make soak-mongo``: the projector under load for a while, with a large VEX document and many advisories
in the mix, then a check that the read models are complete (issue 15).

One isolated deployment (its own topics and database; a real worker process with its projector) on the
running Kafka and MongoDB-wire server. Phases:

1. the sample SBOMs (3 images), settled;
2. for ``SOAK_SECONDS`` (default 120; the issue's full run: ``SOAK_SECONDS=600``): rounds of
   ``SOAK_ADVISORIES`` advisories (default 500: the sample GHSA advisories under distinct ids, each round a
   newer ``modified``), and once, in the first round, one OpenVEX document of ``SOAK_VEX_STATEMENTS``
   statements (default 20,000). Every 2 s a probe reads the read models (a ``find_one`` and a count);
3. the pipeline settles, then every job on the ``jobs`` topic must be a document in MongoDB and every
   result on ``job-results`` folded into its job.

Fails (exit 1) on a probe slower than ``SOAK_STALL_SECONDS`` (default 10), on a settle timeout, or on
incomplete read models. Prints a JSON summary.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
from pymongo import MongoClient

from bench.common import BOOTSTRAP, MONGO_URL, produce_all
from ingest.detect import parse_file
from schemas.codec import encode
from schemas.messages import AdvisoryDelta, VexStatement
from tests.integration.pipeline_kit import Pipeline, advisories, inventories, key_of, later

SECONDS = float(os.environ.get("SOAK_SECONDS", "120"))
ADVISORIES = int(os.environ.get("SOAK_ADVISORIES", "500"))
VEX_STATEMENTS = int(os.environ.get("SOAK_VEX_STATEMENTS", "20000"))
STALL = float(os.environ.get("SOAK_STALL_SECONDS", "10"))


def advisory_round(n: int) -> list[AdvisoryDelta]:
    base = advisories(later(60 + n))
    return [
        base[i % len(base)].model_copy(update={"id": f"{base[i % len(base)].id}-soak{i:04d}"})
        for i in range(ADVISORIES)
    ]


def vex_document(ids: list[str]) -> list[VexStatement]:
    statements = [
        {
            "vulnerability": {"name": ids[i % len(ids)]},
            "products": [{"@id": f"pkg:npm/soak-{i % 997}@1.{i % 31}.0"}],
            "status": "not_affected",
            "justification": "vulnerable_code_not_in_execute_path",
        }
        for i in range(VEX_STATEMENTS)
    ]
    doc = {
        "@context": "https://openvex.dev/ns/v0.2.0",
        "@id": "https://example.test/vex/soak",
        "author": "soak",
        "timestamp": "2026-01-05T12:02:00Z",
        "version": 1,
        "statements": statements,
    }
    result = parse_file(
        "vex",
        orjson.dumps(doc),
        "soak.vex.json",
        tenant=None,
        image_digest=None,
        repository=None,
        observed_at=None,
        kev_ids=frozenset(),
    )
    if not result.ok:
        raise SystemExit(f"soak VEX document did not parse: {result.errors[:3]}")
    return [m for m in result.messages if isinstance(m, VexStatement)]


async def publish(pipe: Pipeline, topic: str, messages: list[Any]) -> None:
    await produce_all(f"{pipe.prefix}{topic}", [(key_of(m), encode(m)) for m in messages])


def probe(db: Any) -> float:
    started = time.perf_counter()
    db.runs.find_one({})
    db.jobs.count_documents({})
    return time.perf_counter() - started


async def soak() -> dict[str, Any]:
    tag = uuid.uuid4().hex[:8]
    home = Path(tempfile.mkdtemp(prefix="soak-mongo-"))
    pipe = Pipeline(BOOTSTRAP, MONGO_URL, f"soak{tag}.", f"soak_{tag}", home, partitions=2)
    client: MongoClient[dict[str, Any]] = MongoClient(MONGO_URL, socketTimeoutMS=int(STALL * 1000) + 5000)
    db = client[pipe.db]
    report = REPORT
    report.update({"seconds": SECONDS, "advisories_per_round": ADVISORIES, "vex": VEX_STATEMENTS})
    probes: list[float] = []
    try:
        PHASE["now"] = "inventories"
        await pipe.start()
        await pipe.publish(inventories())
        await pipe.settle(timeout=300, min_jobs=1)
        PHASE["now"] = "load"
        started = time.monotonic()
        rounds = 0
        while time.monotonic() - started < SECONDS:
            batch = advisory_round(rounds)
            await publish(pipe, "advisories", list(batch))
            if rounds == 0:
                await publish(pipe, "vex", vex_document([a.id for a in batch]))
            rounds += 1
            round_end = time.monotonic() + 10
            while time.monotonic() < min(round_end, started + SECONDS):
                pipe.alive()
                probes.append(await asyncio.to_thread(probe, db))
                report["probe_max_s"] = round(max(probes), 3)
                report["probes"] = len(probes)
                if probes[-1] > STALL:
                    raise AssertionError(f"read models stalled: a probe took {probes[-1]:.1f} s")
                await asyncio.sleep(2)
        report["rounds"] = rounds
        report["load_seconds"] = round(time.monotonic() - started, 1)
        PHASE["now"] = "settle"
        await pipe.settle(timeout=900, quiet=10)
        report["settled_after_s"] = round(time.monotonic() - started, 1)
        PHASE["now"] = "read models complete"
        report["projected_after_s"] = round(await projected(pipe, db) - started, 1)
        report["jobs"] = db.jobs.count_documents({})
        report["probe_max_s"] = round(max(probes, default=0.0), 3)
        report["probes"] = len(probes)
        report["ok"] = True
        return report
    finally:
        pipe.stop()
        client.close()


async def projected(pipe: Pipeline, db: Any, timeout: float = 300.0) -> float:
    """When every job on the ``jobs`` topic is a document and every result on ``job-results`` is folded
    into its job (``finished_at`` set)."""
    deadline = time.monotonic() + timeout
    missing: set[str] = set()
    while time.monotonic() < deadline:
        jobs = {orjson.loads(r.value)["job_id"] for r in await pipe.records("jobs", timeout=2.0)}
        results = {orjson.loads(r.value)["job_id"] for r in await pipe.records("job-results", timeout=2.0)}
        stored = {d["_id"] for d in db.jobs.find({}, {"_id": 1})}
        finished = {d["_id"] for d in db.jobs.find({"finished_at": {"$exists": True}}, {"_id": 1})}
        missing = (jobs - stored) | (results - finished)
        if not missing:
            return time.monotonic()
        await asyncio.sleep(1)
    raise AssertionError(f"{len(missing)} job(s) not (fully) projected, e.g. {sorted(missing)[:3]}")


PHASE = {"now": "start"}
REPORT: dict[str, Any] = {}  # filled as the soak goes, printed on failure too


def main() -> int:
    try:
        report = asyncio.run(soak())
    except AssertionError as exc:
        text = str(exc)
        failed = {**REPORT, "ok": False, "phase": PHASE["now"], "error": text[:800] + " ... " + text[-1500:]}
        print(json.dumps(failed))
        return 1
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
