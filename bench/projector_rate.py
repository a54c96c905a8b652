"""Projector write rate on the MongoDB-wire server with the project's own ``MongoStore.apply_batch``.

Each client is a separate process shaped like a worker's projector: it owns its partitions (``jobs:<w>``,
``images:<w>``), and every batch is ``--updates`` guarded updates (half create new documents, half update
documents it created earlier, spread over ``jobs`` and ``images``) plus 2 checkpoint upserts, written with
``apply_batch`` exactly as the projector writes them. Figures: guarded updates/s over the run (every update
``apply_batch`` applied; those that create their document are sent as inserts, ``creations``), batch
latencies, batches over 1 s and 5 s, the slowest batch.

    python -m bench.projector_rate --clients 4 --seconds 60 [--mongo-url URL]

The rebuild (``stella-sched rebuild`` itself on a generated log, against raw ``insert_many``) is
``python -m bench.rebuild_rate``.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import random
import time
import uuid
from typing import Any

from pymongo import MongoClient

from bench.common import MONGO_URL, percentile
from projections.fold import Checkpoint, DocUpdate
from projections.mongo_store import MAX_WRITES_PER_COMMAND, MongoStore


def _client(url: str, db: str, worker: int, updates: int, seconds: float, chunk: int, out: Any) -> None:
    from projections import mongo_store

    mongo_store.MAX_WRITES_PER_COMMAND = chunk
    client: MongoClient[dict[str, Any]] = MongoClient(url, socketTimeoutMS=600_000)
    store = MongoStore(client, db)
    rng = random.Random(worker)
    created: dict[str, list[str]] = {"jobs": [], "images": []}
    offset = 0
    latencies: list[float] = []
    applied = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        batch: list[DocUpdate] = []
        for i in range(updates):
            offset += 1
            collection = "jobs" if i % 2 else "images"
            known = created[collection]
            if i % 4 < 2 or not known:
                doc_id = f"{collection[0]}{worker}-{offset}"
                known.append(doc_id)
            else:
                doc_id = rng.choice(known)
            batch.append(
                DocUpdate(
                    collection,
                    doc_id,
                    f"{collection}:{worker}",
                    offset,
                    set={"status": f"s{offset % 7}", "tenant": "bench", "run_id": f"r{offset % 13}"},
                    max={"seq": offset},
                )
            )
        checkpoints = [Checkpoint("bench", t, worker, offset) for t in ("jobs", "images")]
        started = time.perf_counter()
        store.apply_batch(batch, checkpoints)
        latencies.append(time.perf_counter() - started)
        applied += len(batch)
    client.close()
    creations = len(created["jobs"]) + len(created["images"])
    out.put({"worker": worker, "updates": applied, "creations": creations, "latencies": latencies})


def measure(
    url: str, clients: int, seconds: float, updates: int = 40, chunk: int = MAX_WRITES_PER_COMMAND
) -> dict[str, Any]:
    db = f"bench_projector_{uuid.uuid4().hex[:8]}"
    setup: MongoClient[dict[str, Any]] = MongoClient(url)
    MongoStore(setup, db).ensure_indexes()
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    procs = [
        ctx.Process(target=_client, args=(url, db, w, updates, seconds, chunk, out)) for w in range(clients)
    ]
    load_start = _loadavg()
    started = time.perf_counter()
    for p in procs:
        p.start()
    results = [out.get() for _ in procs]
    for p in procs:
        p.join()
    elapsed = time.perf_counter() - started
    latencies = [x for r in results for x in r["latencies"]]
    total = sum(r["updates"] for r in results)
    docs = setup[db]["jobs"].estimated_document_count() + setup[db]["images"].estimated_document_count()
    setup.close()
    return {
        "clients": clients,
        "seconds": round(elapsed, 1),
        "updates_per_batch": updates,
        "updates_per_command": chunk,
        "guarded_updates": total,
        "guarded_updates_per_s": round(total / elapsed, 1),
        # the updates that created their document: apply_batch writes them as inserts (no guard to check)
        "creations": sum(r["creations"] for r in results),
        "batches": len(latencies),
        "batches_over_1s": sum(1 for x in latencies if x > 1.0),
        "batches_over_5s": sum(1 for x in latencies if x > 5.0),
        "batch_p50_s": round(percentile(latencies, 0.5), 3),
        "batch_p99_s": round(percentile(latencies, 0.99), 3),
        "slowest_batch_s": round(max(latencies, default=0.0), 3),
        "documents": docs,
        "db": db,
        # the machine's load around the run: on a shared machine the rate is only comparable with it
        "loadavg_start": load_start,
        "loadavg_end": _loadavg(),
    }


def _loadavg() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--mongo-url", default=MONGO_URL)
    p.add_argument("--clients", type=int, default=4)
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--updates", type=int, default=40, help="guarded updates per batch (default 40)")
    p.add_argument("--chunk", type=int, default=MAX_WRITES_PER_COMMAND, help="updates per write command")
    args = p.parse_args()
    print(measure(args.mongo_url, args.clients, args.seconds, args.updates, args.chunk))


if __name__ == "__main__":
    main()
