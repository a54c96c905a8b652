"""Faust table recovery from its changelog: ``python -m bench.bench_recovery [--records 1000000]``.

What a restarted or rebalanced worker pays before it processes anything: faust reads the table's changelog
topic from the beginning (memory store) or from the store's persisted offset (rocksdb store, fresh here, so
also from the beginning) into the store. The benchmark:

1. creates a changelog topic ``<app>-bench-changelog`` (the name faust derives for table ``bench`` of app
   ``<app>``) with ``--partitions`` partitions and fills it with ``--records`` records over ``--keys``
   distinct keys (values of ``--value-bytes`` bytes, raw serializers: the framing cost of the project's
   tables is the same bytes), produced directly with aiokafka;
2. for each store (``memory://``, ``rocksdb://``: faust uses rocksdict when python-rocksdb is absent), starts
   a fresh worker process (``--child`` mode of this module) with an empty data directory, which waits until
   recovery is complete and reports the table size;
3. reports, per store, the recovery time taken from the worker's own log (``Restoring state from changelog
   topics...`` → ``Done reading from changelog topics``), the time from process start until the table was
   usable, records/s and the child's peak RSS, as one JSON object on stdout.

Needs the broker of ``make up`` (KAFKA_BOOTSTRAP). Topics are deleted afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

TABLE = "bench"
LOG_TIME = re.compile(r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})\]")
RESTORE_START = "Restoring state from changelog topics"
RESTORE_DONE = "Done reading from changelog topics"


# ---------------------------------------------------------------- child: one faust worker


def child(app_id: str, store: str, datadir: str, bootstrap: str, partitions: int, expect: int) -> None:
    import faust

    started = time.time()
    app = faust.App(
        app_id,
        broker=f"kafka://{bootstrap}",
        store=store,
        datadir=datadir,
        topic_partitions=partitions,
        topic_replication_factor=1,
        web_enabled=False,
        broker_session_timeout=10.0,
        broker_heartbeat_interval=1.0,
        consumer_auto_offset_reset="earliest",
        key_serializer="raw",  # the table's changelog holds the raw bytes produced by fill()
        value_serializer="raw",
    )
    table = app.Table(
        TABLE,
        key_type=bytes,
        value_type=bytes,
        partitions=partitions,
    )
    # The table needs an agent on a co-partitioned source topic to be assigned its partitions.
    source = app.topic(
        f"{app_id}-source", key_serializer="raw", value_serializer="raw", partitions=partitions
    )

    @app.agent(source)
    async def consume(stream: Any) -> None:
        async for _ in stream:
            pass

    @app.timer(interval=0.2)
    async def check() -> None:
        if not app.tables.recovery.completed.is_set():
            return
        size = sum(1 for _ in table)
        result = {"started": started, "ready": time.time(), "keys": size, "expect_keys": expect}
        result["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
        print("RECOVERED " + json.dumps(result), flush=True)
        os._exit(0)

    sys.argv = [sys.argv[0], "worker", "-l", "info", "--without-web"]
    app.main()


# ---------------------------------------------------------------- parent


async def fill(
    bootstrap: str, topic: str, partitions: int, records: int, keys: int, value_bytes: int
) -> float:
    from aiokafka import AIOKafkaProducer

    from agents.topology import TopicSpec
    from agents.topology_admin import ensure_topics

    await ensure_topics(bootstrap, [TopicSpec(topic, "", partitions)])
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks=1, linger_ms=20, max_batch_size=1 << 20, compression_type=None
    )
    await producer.start()
    started = time.perf_counter()
    try:
        pad = b"x" * max(0, value_bytes - 16)
        pending: list[Any] = []
        for i in range(records):
            key = b"key-%08d" % (i % keys)
            value = b"%016d" % i + pad
            # Explicit partition (murmur2 of the key, like faust's) keeps each key on one partition.
            pending.append(await producer.send(topic, value, key=key, partition=_partition(key, partitions)))
            if len(pending) >= 20_000:
                await asyncio.gather(*pending)
                pending = []
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return time.perf_counter() - started


def _partition(key: bytes, partitions: int) -> int:
    from aiokafka.partitioner import murmur2

    return int(murmur2(key) & 0x7FFFFFFF) % partitions


async def drop(bootstrap: str, topics: list[str]) -> None:
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        wanted = [t for t in topics if t in existing]
        if wanted:
            await admin.delete_topics(wanted)
    finally:
        await admin.close()


def _log_time(line: str) -> float | None:
    match = LOG_TIME.match(line)
    if not match:
        return None
    return datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()


def measure(args: argparse.Namespace, app_id: str, store: str, keys: int) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="bench-recovery-") as datadir:
        log = Path(datadir) / "worker.log"
        command = [
            sys.executable,
            "-m",
            "bench.bench_recovery",
            "--child",
            app_id,
            store,
            str(Path(datadir) / "data"),
            "--bootstrap",
            args.bootstrap,
            "--partitions",
            str(args.partitions),
            "--keys",
            str(keys),
        ]
        spawned = time.time()
        with log.open("wb") as out:
            proc = subprocess.run(
                command, stdout=out, stderr=subprocess.STDOUT, timeout=args.timeout, check=False
            )
        text = log.read_text(errors="replace")
    found = [line.split("RECOVERED ", 1)[1] for line in text.splitlines() if "RECOVERED {" in line]
    if proc.returncode != 0 or not found:
        raise SystemExit(
            f"{store}: the worker did not report recovery (exit {proc.returncode}):\n{text[-3000:]}"
        )
    child_report = json.loads(found[-1].strip())
    start = next((_log_time(x) for x in text.splitlines() if RESTORE_START in x), None)
    done = next((_log_time(x) for x in text.splitlines() if RESTORE_DONE in x), None)
    restore = (done - start) if start is not None and done is not None else None
    return {
        "store": store,
        "keys": child_report["keys"],
        "restore_seconds": None if restore is None else round(restore, 3),
        "restore_records_per_s": None if not restore else round(args.records / restore),
        "process_start_to_ready_seconds": round(child_report["ready"] - spawned, 3),
        "peak_rss_mb": child_report.get("peak_rss_mb"),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.bench_recovery", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--records", type=int, default=1_000_000, help="changelog records (default 1M)")
    parser.add_argument("--keys", type=int, default=0, help="distinct keys (default: records / 10)")
    parser.add_argument("--value-bytes", type=int, default=100, help="value size (default 100)")
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--stores", default="memory://,rocksdb://")
    parser.add_argument("--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP", "127.0.0.1:9092"))
    parser.add_argument("--timeout", type=float, default=900.0, help="per-store limit, seconds")
    parser.add_argument("--child", nargs=3, metavar=("APP", "STORE", "DATADIR"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    keys = args.keys or max(1, args.records // 10)
    if args.child:
        app_id, store, datadir = args.child
        child(app_id, store, datadir, args.bootstrap, args.partitions, keys)
        return 0

    app_id = f"bench-recovery-{uuid.uuid4().hex[:8]}"
    changelog = f"{app_id}-{TABLE}-changelog"
    created = [changelog, f"{app_id}-source"]
    try:
        fill_s = asyncio.run(
            fill(args.bootstrap, changelog, args.partitions, args.records, keys, args.value_bytes)
        )
        results = []
        for store in [s.strip() for s in args.stores.split(",") if s.strip()]:
            row = measure(args, app_id, store, keys)
            if row["keys"] != keys:
                raise SystemExit(f"{store}: recovered {row['keys']} keys, expected {keys}")
            results.append(row)
    finally:
        asyncio.run(drop(args.bootstrap, [*created, f"{app_id}-__assignor-__leader"]))
    report = {
        "benchmark": "faust table recovery from changelog",
        "records": args.records,
        "keys": keys,
        "value_bytes": args.value_bytes,
        "partitions": args.partitions,
        "fill_seconds": round(fill_s, 3),
        "stores": results,
    }
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
