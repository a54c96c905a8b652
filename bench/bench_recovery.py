"""Recovery and rebalance costs: ``python -m bench.bench_recovery [--records 1000000]`` (``make bench``: section 7).

What a restarted, rebalanced or replaced worker pays before it processes again (issue 17's figures):

* **restart / moved partition**: a changelog topic ``<app>-bench-changelog`` (the name faust derives for
  table ``bench`` of app ``<app>``) gets ``--records`` records over ``--keys`` keys, all in **one**
  partition (one hot partition is the worst case of a move; the others stay empty), produced with aiokafka.
  Then a worker process (``--child``, the project's table options) recovers it:
  ``memory://`` (what every restart and every moved partition cost before the rocksdb default), ``rocksdb://``
  with an empty data directory (local state deleted, or a partition moved to a worker that never held it nor
  its standby: copied in bulk, agents/bulk_recovery.py; ``--faust-recovery``: faust's record-by-record
  recovery instead), and ``rocksdb://`` again on the data directory the previous run left (local state
  intact: only the changelog tail past the persisted offset is read). Figures: process start → table
  recovered (the worker's agents run from then on), the restore time from the log (the bulk copy's, plus
  faust's ``Restoring state from changelog topics...`` → ``Done reading from changelog topics``), peak RSS.
* **moved to its standby** (``--skip-standby`` to leave out): two workers with a standby replica each share
  the filled changelog; once the standby of the hot partition has read it all (through faust's standby
  path: minutes for 1M records), its owner is stopped (SIGTERM) and the time until the standby's worker
  holds the partition, recovered, is measured.
* **failover**: two worker processes share a 6-partition source topic (and a co-partitioned rocksdb table)
  while a record per partition is produced every 100 ms; one is SIGKILLed (then, in a second round, the
  survivor's new partner is stopped with SIGTERM) and the time until the survivor handles records of
  every partition the victim held is measured. A SIGKILLed member is only dropped by the group coordinator
  after the session timeout (``Settings.faust_config``: 10 s).

Needs the broker of ``make up`` (KAFKA_BOOTSTRAP). Topics are deleted afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import resource
import signal
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
BULK = re.compile(
    r"bulk recovery: (\d+) changelog records .* in ([\d.]+) s \(([\d.]+) s CPU\)"
)  # bulk_recovery


# ---------------------------------------------------------------- child: one faust worker


def _peak_rss_mb() -> float | None:
    """This process's own peak RSS (VmHWM: per address space, so a fresh one after exec)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def _idle_source(app: Any, app_id: str, partitions: int) -> None:
    """An agent on a co-partitioned source topic that nothing is written to: a table is assigned its
    partitions only when an agent reads a topic with the same partition count."""
    source = app.topic(
        f"{app_id}-source", key_serializer="raw", value_serializer="raw", partitions=partitions
    )

    @app.agent(source)
    async def consume(stream: Any) -> None:
        async for _ in stream:
            pass


def child(
    app_id: str, store: str, datadir: str, bootstrap: str, partitions: int, expect: int, bulk: bool
) -> None:
    import faust

    from agents.rocksdb_store import register

    register()  # the worker's rocksdb:// store
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
        # the worker's recovery (a partition copied in bulk), or faust's record by record (--faust-recovery)
        **({"TableManager": "agents.bulk_recovery:TableManager"} if bulk else {}),
    )
    from agents.settings import Settings

    table = app.Table(
        TABLE,
        key_type=bytes,
        value_type=bytes,
        partitions=partitions,
        options=Settings(store=store).table_options(),  # the worker's own RocksDB sizing
    )
    # The table needs an agent on a co-partitioned source topic to be assigned its partitions.
    _idle_source(app, app_id, partitions)

    reported = False

    @app.timer(interval=0.2)
    async def check() -> None:
        nonlocal reported
        if reported or not app.tables.recovery.completed.is_set():
            return
        reported = True
        size = sum(1 for _ in table)
        result = {"started": started, "ready": time.time(), "keys": size, "expect_keys": expect}
        usage = resource.getrusage(resource.RUSAGE_SELF)
        # Not ru_maxrss: Linux carries it over fork and exec, so every child reported the parent's peak.
        result["peak_rss_mb"] = _peak_rss_mb()
        result["cpu_seconds"] = round(usage.ru_utime + usage.ru_stime, 1)  # the machine's load aside
        print("RECOVERED " + json.dumps(result), flush=True)
        # A clean stop (it leaves the group): after os._exit the next run's join waited out the dead
        # member's session timeout (10 s) and the "intact" restart measured that.
        os.kill(os.getpid(), signal.SIGTERM)

    sys.argv = [sys.argv[0], "worker", "-l", "info", "--without-web"]
    app.main()


def child_failover(app_id: str, datadir: str, bootstrap: str, partitions: int) -> None:
    """A worker with the project's faust settings (session timeout, heartbeat, rocksdb store) whose agent
    writes every record of the source topic into a co-partitioned table and prints when it handled it."""
    import faust

    from agents.settings import Settings

    settings = Settings(
        kafka_bootstrap=bootstrap,
        app_id=app_id,
        partitions=partitions,
        data_dir=datadir,
        worker_name="w",
        web_port=0,
    )
    app = faust.App(app_id, **settings.faust_config(), key_serializer="raw", value_serializer="raw")
    table = app.Table(
        "failover", key_type=bytes, value_type=bytes, partitions=partitions, options=settings.table_options()
    )
    source = app.topic(f"{app_id}-source", partitions=partitions)

    @app.agent(source)
    async def consume(stream: Any) -> None:
        async for event in stream.events():
            table[event.key] = event.value
            print(f"HANDLED {event.message.partition} {time.time():.3f}", flush=True)

    sys.argv = [sys.argv[0], "worker", "-l", "info", "--without-web"]
    app.main()


def child_standby(app_id: str, datadir: str, bootstrap: str, partitions: int) -> None:
    """A worker of the bench table with one standby replica: it prints, every 0.5 s while no rebalance
    runs, whether it holds changelog partition 0 as active or standby, and how far its standby has read."""
    import faust
    from faust.types import TP

    from agents.rocksdb_store import register
    from agents.settings import Settings

    register()
    app = faust.App(
        app_id,
        broker=f"kafka://{bootstrap}",
        store="rocksdb://",
        datadir=datadir,
        topic_partitions=partitions,
        topic_replication_factor=1,
        web_enabled=False,
        broker_session_timeout=10.0,
        broker_heartbeat_interval=1.0,
        consumer_auto_offset_reset="earliest",
        key_serializer="raw",
        value_serializer="raw",
        table_standby_replicas=1,
        TableManager="agents.bulk_recovery:TableManager",
    )
    app.Table(
        TABLE,
        key_type=bytes,
        value_type=bytes,
        partitions=partitions,
        options=Settings(store="rocksdb://").table_options(),
    )
    _idle_source(app, app_id, partitions)

    hot = TP(f"{app_id}-{TABLE}-changelog", 0)

    @app.timer(interval=0.5)
    async def report() -> None:
        recovery = app.tables.recovery
        if app.rebalancing or not recovery.completed.is_set():
            return
        if hot in app.assignor.assigned_actives():
            print(f"STATE {time.time():.3f} active -1", flush=True)
        elif hot in app.assignor.assigned_standbys():
            print(f"STATE {time.time():.3f} standby {recovery.standby_offsets.get(hot, -1)}", flush=True)

    sys.argv = [sys.argv[0], "worker", "-l", "info", "--without-web"]
    app.main()


# ---------------------------------------------------------------- parent


async def fill(
    bootstrap: str, topic: str, partitions: int, records: int, keys: int, value_bytes: int
) -> float:
    """``records`` records over ``keys`` keys into partition 0 of a ``partitions``-partition topic."""
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
            pending.append(await producer.send(topic, value, key=key, partition=0))
            if len(pending) >= 20_000:
                await asyncio.gather(*pending)
                pending = []
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return time.perf_counter() - started


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


def measure(
    args: argparse.Namespace, app_id: str, store: str, keys: int, datadir: Path, label: str
) -> dict[str, Any]:
    """One recovering worker on ``datadir`` (kept: a later run may find its local state)."""
    log = datadir.parent / f"{label}.log"
    command = [
        sys.executable,
        "-m",
        "bench.bench_recovery",
        "--child",
        app_id,
        store,
        str(datadir),
        "--bootstrap",
        args.bootstrap,
        "--partitions",
        str(args.partitions),
        "--keys",
        str(keys),
        *(["--faust-recovery"] if args.faust_recovery else []),
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
            f"{label}: the worker did not report recovery (exit {proc.returncode}):\n{text[-3000:]}"
        )
    child_report = json.loads(found[-1].strip())
    start = next((_log_time(x) for x in text.splitlines() if RESTORE_START in x), None)
    done = next((_log_time(x) for x in text.splitlines() if RESTORE_DONE in x), None)
    restore = (done - start) if start is not None and done is not None else None
    bulk = next((m for m in map(BULK.search, text.splitlines()) if m), None)
    restore_cpu = None
    if bulk is not None:  # copied in bulk before faust's recovery, which found (almost) nothing left
        restore = float(bulk.group(2)) + (restore or 0.0)
        restore_cpu = float(bulk.group(3))
    return {
        "case": label,
        "store": store,
        "keys": child_report["keys"],
        "restore_seconds": None if restore is None else round(restore, 3),
        "bulk_copy_cpu_seconds": restore_cpu,
        "process_start_to_ready_seconds": round(child_report["ready"] - spawned, 3),
        # without the interpreter's start and faust's imports: group join, recovery, first assignment
        "worker_start_to_ready_seconds": round(child_report["ready"] - child_report["started"], 3),
        "peak_rss_mb": child_report.get("peak_rss_mb"),
        "cpu_seconds": child_report.get("cpu_seconds"),
    }


def recovery(args: argparse.Namespace, keys: int) -> dict[str, Any]:
    app_id = f"bench-recovery-{uuid.uuid4().hex[:8]}"
    changelog = f"{app_id}-{TABLE}-changelog"
    cases: list[dict[str, Any]] = []
    try:
        fill_s = asyncio.run(
            fill(args.bootstrap, changelog, args.partitions, args.records, keys, args.value_bytes)
        )
        with tempfile.TemporaryDirectory(prefix="bench-recovery-") as tmp:
            home = Path(tmp)
            plan = [
                ("memory, every restart or move (full replay)", "memory://", home / "memory"),
                (
                    "rocksdb, local state deleted / moved partition (full replay)",
                    "rocksdb://",
                    home / "rocks",
                ),
                ("rocksdb, restart with local state intact (tail only)", "rocksdb://", home / "rocks"),
            ]
            if args.skip_memory:  # the memory store's full replay costs what the rocksdb one does, or less
                plan = plan[1:]
            for label, store, datadir in plan:
                row = measure(args, app_id, store, keys, datadir, label.split(",")[0] + str(len(cases)))
                row["case"] = label
                if row["keys"] != keys:
                    raise SystemExit(f"{label}: recovered {row['keys']} keys, expected {keys}")
                cases.append(row)
            standby = None if args.skip_standby else asyncio.run(moved_to_standby(args, app_id, home))
    finally:
        asyncio.run(drop(args.bootstrap, [changelog, f"{app_id}-source", f"{app_id}-__assignor-__leader"]))
    return {"fill_seconds": round(fill_s, 3), "cases": cases, "standby": standby}


def _states(log: Path) -> list[tuple[float, str, int]]:
    out = []
    for line in log.read_text(errors="replace").splitlines():
        if "STATE " in line:
            at, state, offset = line.split("STATE ", 1)[1].split()[:3]
            out.append((float(at), state, int(offset)))
    return out


def _spawn_standby(
    args: argparse.Namespace, app_id: str, datadir: Path, log: Path
) -> subprocess.Popen[bytes]:
    command = [
        sys.executable,
        "-m",
        "bench.bench_recovery",
        "--child-standby",
        app_id,
        str(datadir),
        "--bootstrap",
        args.bootstrap,
        "--partitions",
        str(args.partitions),
    ]
    with log.open("wb") as out:
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)


async def moved_to_standby(args: argparse.Namespace, app_id: str, home: Path) -> dict[str, Any]:
    """Two workers with a standby replica each share the filled changelog: once the standby of the hot
    partition has read it all, the active one is stopped (SIGTERM) and the time until the standby's
    worker holds it as active, recovered, is measured."""
    workers: list[subprocess.Popen[bytes]] = []
    logs = [home / "standby-a.log", home / "standby-b.log"]
    try:
        started = time.time()
        workers += [
            _spawn_standby(args, app_id, home / f"standby-{n}", log)
            for n, log in zip("ab", logs, strict=True)
        ]
        deadline = time.time() + args.timeout
        active = standby = -1
        while time.time() < deadline:
            await asyncio.sleep(1.0)
            for proc, log in zip(workers, logs, strict=True):
                if proc.poll() is not None:
                    raise SystemExit(f"a standby worker died:\n{log.read_text(errors='replace')[-3000:]}")
            last = [_states(log)[-1:] for log in logs]
            if all(last) and {s[0][1] for s in last} == {"active", "standby"}:
                active = next(i for i, s in enumerate(last) if s[0][1] == "active")
                standby = 1 - active
                if last[standby][0][2] >= args.records - 1:  # the standby has read the whole changelog
                    break
        else:
            raise SystemExit("the standby never caught up with the hot partition")
        caught_up_s = round(time.time() - started, 1)
        stopped_at = time.time()
        workers[active].send_signal(signal.SIGTERM)
        while time.time() < deadline:
            await asyncio.sleep(0.2)
            moved = [at for at, state, _ in _states(logs[standby]) if at >= stopped_at and state == "active"]
            if moved:
                return {
                    "case": "rocksdb, moved partition to the worker holding its standby (tail only)",
                    "sigterm_to_processing_seconds": round(moved[0] - stopped_at, 2),
                    "standby_caught_up_after_seconds": caught_up_s,
                }
        raise SystemExit("the standby's worker never took the hot partition over")
    finally:
        for proc in workers:
            if proc.poll() is None:
                proc.kill()
            proc.wait(30)


class _Child:
    """A failover worker process; its log is polled for HANDLED lines."""

    def __init__(self, app_id: str, home: Path, name: str, bootstrap: str, partitions: int) -> None:
        self.log = home / f"{name}.log"
        command = [
            sys.executable,
            "-m",
            "bench.bench_recovery",
            "--child-failover",
            app_id,
            str(home / name),
            "--bootstrap",
            bootstrap,
            "--partitions",
            str(partitions),
        ]
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    def handled(self, since: float) -> dict[int, float]:
        """partition → first time it was handled at or after ``since``."""
        first: dict[int, float] = {}
        for line in self.log.read_text(errors="replace").splitlines():
            if "HANDLED " in line:  # faust logs a worker's stdout: "[time] [pid] [WARNING] HANDLED ..."
                part, at = line.split("HANDLED ", 1)[1].split()[:2]
                if float(at) >= since:
                    first.setdefault(int(part), float(at))
        return first

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill(self) -> None:
        if self.alive():
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(30)

    def stop(self) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.kill()


async def _steady(children: list[_Child], partitions: int, timeout: float) -> list[set[int]]:
    """Wait until the children handle disjoint, non-empty sets of partitions covering all of them."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        await asyncio.sleep(1.0)
        for child in children:
            if not child.alive():
                raise SystemExit(f"a failover worker died:\n{child.log.read_text(errors='replace')[-3000:]}")
        recent = [set(c.handled(time.time() - 1.5)) for c in children]
        union = set().union(*recent)
        disjoint = sum(len(r) for r in recent) == len(union)
        if union == set(range(partitions)) and disjoint and all(recent):
            return recent
    raise SystemExit("the failover workers never settled on a shared assignment")


async def _taken_over(survivor: _Child, lost: set[int], since: float, timeout: float) -> float:
    deadline = time.time() + timeout
    while time.time() < deadline:
        seen = survivor.handled(since)
        if lost <= set(seen):
            return round(max(seen[p] for p in lost) - since, 2)
        await asyncio.sleep(0.2)
    raise SystemExit(f"partitions {sorted(lost)} were not taken over within {timeout:.0f} s")


async def failover(args: argparse.Namespace) -> dict[str, Any]:
    from aiokafka import AIOKafkaProducer

    from agents.topology import TopicSpec
    from agents.topology_admin import ensure_topics

    app_id = f"bench-failover-{uuid.uuid4().hex[:8]}"
    n = args.partitions
    names = [f"{app_id}-source", f"{app_id}-failover-changelog"]
    await ensure_topics(
        args.bootstrap,
        [TopicSpec(t, "", n) for t in names] + [TopicSpec(f"{app_id}-__assignor-__leader", "", 1)],
    )
    producer = AIOKafkaProducer(bootstrap_servers=args.bootstrap, acks=1)
    await producer.start()
    stop = asyncio.Event()

    async def feed() -> None:
        i = 0
        while not stop.is_set():
            for part in range(n):
                await producer.send(names[0], b"%d" % i, key=b"k%d" % part, partition=part)
            i += 1
            await asyncio.sleep(0.1)

    feeder = asyncio.create_task(feed())
    children: list[_Child] = []
    try:
        with tempfile.TemporaryDirectory(prefix="bench-failover-") as tmp:
            home = Path(tmp)
            a = _Child(app_id, home, "a", args.bootstrap, n)
            b = _Child(app_id, home, "b", args.bootstrap, n)
            children += [a, b]
            held = await _steady([a, b], n, args.timeout)
            killed_at = time.time()
            a.kill()
            sigkill_s = await _taken_over(b, held[0], killed_at, args.timeout)
            c = _Child(app_id, home, "c", args.bootstrap, n)
            children.append(c)
            held = await _steady([b, c], n, args.timeout)
            stopped_at = time.time()
            c.stop()
            sigterm_s = await _taken_over(b, held[1], stopped_at, args.timeout)
    finally:
        stop.set()
        await feeder
        await producer.stop()
        for child in children:
            child.kill()
        await drop(args.bootstrap, [*names, f"{app_id}-__assignor-__leader"])
    return {
        "sigkill_to_processing_seconds": sigkill_s,
        "sigterm_to_processing_seconds": sigterm_s,
        "session_timeout_seconds": 10.0,
    }


def run(records: int = 1_000_000, partitions: int = 6, *extra: str) -> dict[str, Any]:
    """Both parts, for ``bench.run`` (section 7); ``extra``: more command-line options."""
    args = _parser().parse_args(["--records", str(records), "--partitions", str(partitions), *extra])
    keys = args.keys or max(1, args.records // 10)
    return _report(args, keys, recovery(args, keys), asyncio.run(failover(args)))


def _report(args: argparse.Namespace, keys: int, rec: dict[str, Any], fail: dict[str, Any]) -> dict[str, Any]:
    return {
        "benchmark": "restart, moved partition and failover costs",
        "records": args.records,
        "keys": keys,
        "value_bytes": args.value_bytes,
        "partitions": args.partitions,
        "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
        **rec,
        "failover": fail,
    }


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench.bench_recovery", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--records", type=int, default=1_000_000, help="changelog records (default 1M)")
    parser.add_argument("--keys", type=int, default=0, help="distinct keys (default: records / 10)")
    parser.add_argument("--value-bytes", type=int, default=100, help="value size (default 100)")
    parser.add_argument("--partitions", type=int, default=6)
    parser.add_argument("--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP", "127.0.0.1:9092"))
    parser.add_argument("--timeout", type=float, default=900.0, help="per-step limit, seconds")
    parser.add_argument(
        "--skip-failover", action="store_true", help="only the restart / moved partition part"
    )
    parser.add_argument(
        "--faust-recovery",
        action="store_true",
        help="recover record by record through faust (as before agents/bulk_recovery.py) instead of in bulk",
    )
    parser.add_argument("--skip-memory", action="store_true", help="no memory:// run (the old default)")
    parser.add_argument("--child", nargs=3, metavar=("APP", "STORE", "DATADIR"), help=argparse.SUPPRESS)
    parser.add_argument("--skip-standby", action="store_true", help="no moved partition with a standby")
    parser.add_argument("--child-standby", nargs=2, metavar=("APP", "DATADIR"), help=argparse.SUPPRESS)
    parser.add_argument("--child-failover", nargs=2, metavar=("APP", "DATADIR"), help=argparse.SUPPRESS)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    keys = args.keys or max(1, args.records // 10)
    if args.child:
        app_id, store, datadir = args.child
        child(app_id, store, datadir, args.bootstrap, args.partitions, keys, not args.faust_recovery)
        return 0
    if args.child_standby:
        app_id, datadir = args.child_standby
        child_standby(app_id, datadir, args.bootstrap, args.partitions)
        return 0
    if args.child_failover:
        app_id, datadir = args.child_failover
        child_failover(app_id, datadir, args.bootstrap, args.partitions)
        return 0
    rec = recovery(args, keys)
    fail = {} if args.skip_failover else asyncio.run(failover(args))
    print(json.dumps(_report(args, keys, rec, fail), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
