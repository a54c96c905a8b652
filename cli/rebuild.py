"""``stella-sched rebuild``: rebuild the MongoDB read models from offset 0 into new collections, then switch.

docs/architecture.md §6: a rebuild writes new collections (a fresh prefix, ``rb<UTC timestamp>_``) by folding
every projected topic (``projections.topics.PROJECTED``) from its first offset with the very same fold the live
projector uses, in memory (``MemoryStore``), bulk-loads the result with unordered inserts (nobody else writes
those collections, so no per-document guard is needed: ``MongoStore.load_memory``), then flips the
active-projection pointer (``MongoStore.switch_to``). The live projector
notices the pointer within seconds and continues from the rebuild's checkpoints (same group name), so no
record is lost between the end of the rebuild and the switch.

The reader is a plain aiokafka consumer: no group, every partition assigned, seek to the beginning, read up
to the end offsets captured at the start (the progress bar's total), then keep reading until it has caught
up with the *current* end (records that arrived meanwhile). Nothing is produced to Kafka: replaying a
projection cannot re-emit jobs or signed events.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import sys
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from cli.output import EXIT_OK, CliError, InfraError, eprint, kafka_hint, mongo_hint, print_json, print_table

EPILOG = """\
examples:
  stella-sched rebuild --dry-run                 count what a rebuild would read, per topic
  stella-sched rebuild                           rebuild into rb<timestamp>_ collections and switch to them
  stella-sched rebuild --drop-old                ... and drop the collections that were active before
  STELLA_TOPIC_PREFIX=demo. STELLA_MONGO_DB=demo stella-sched rebuild --json

The live worker may keep running: its projector follows the switch and continues from the rebuild's
checkpoints. Exit codes: 0 ok, 1 failure, 2 usage error, 3 Kafka / MongoDB unreachable.
"""

CATCH_UP_SECONDS = 60.0


@dataclass
class Report:
    prefix: str
    previous: str
    topics: dict[str, int] = field(default_factory=dict)  # records at the start, per real topic
    total: int = 0
    read: int = 0
    folded: int = 0
    seconds: float = 0.0
    load_seconds: float = 0.0  # of `seconds`: the bulk load and index builds after the last read
    switched: bool = False
    dropped: bool = False
    dry_run: bool = False

    def as_dict(self) -> dict[str, Any]:
        return {
            "prefix": self.prefix,
            "previous": self.previous,
            "topics": dict(sorted(self.topics.items())),
            "total": self.total,
            "read": self.read,
            "folded": self.folded,
            "seconds": round(self.seconds, 3),
            "load_seconds": round(self.load_seconds, 3),
            "switched": self.switched,
            "dropped": self.dropped,
            "dry_run": self.dry_run,
        }


def new_prefix(now: datetime | None = None) -> str:
    at = (now or datetime.now(UTC)).astimezone(UTC)
    return f"rb{at.strftime('%Y%m%d%H%M%S')}{at.microsecond // 1000:03d}_"


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="stella-sched rebuild",
        description="Rebuild the MongoDB read models from offset 0 of every projected topic into new "
        "collections, then make them the active projection.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--bootstrap", help="Kafka bootstrap servers (default: KAFKA_BOOTSTRAP)")
    p.add_argument("--mongo-url", help="MongoDB URL (default: MONGO_URL)")
    p.add_argument("--db", help="database of the read models (default: STELLA_MONGO_DB)")
    p.add_argument("--topic-prefix", help="topic prefix (default: STELLA_TOPIC_PREFIX)")
    p.add_argument("--app-id", help="STELLA_APP_ID; names the projector group the checkpoints belong to")
    p.add_argument("--prefix", help="collection prefix to build into (default: rb<UTC timestamp>_)")
    p.add_argument("--dry-run", action="store_true", help="only count the records a rebuild would read")
    p.add_argument("--drop-old", action="store_true", help="drop the previously active collections")
    p.add_argument("--no-switch", action="store_true", help="build but do not switch (compare first)")
    p.add_argument("--batch-size", type=int, default=1000, help="records per fold batch (default 1000)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(sys.argv[1:] if argv is None else argv)
    if args.batch_size < 1:
        eprint("stella-sched rebuild: error: --batch-size must be >= 1")
        return 2
    if args.drop_old and (args.dry_run or args.no_switch):
        eprint("stella-sched rebuild: error: --drop-old needs a switch (not with --dry-run / --no-switch)")
        return 2
    from agents.settings import Settings

    overrides: dict[str, Any] = {}
    for name, attr in (
        ("bootstrap", "kafka_bootstrap"),
        ("mongo_url", "mongo_url"),
        ("db", "mongo_db"),
        ("topic_prefix", "topic_prefix"),
        ("app_id", "app_id"),
    ):
        value = getattr(args, name)
        if value is not None:
            overrides[attr] = value
    settings = Settings.from_env(**overrides)
    try:
        report = asyncio.run(
            rebuild(
                settings,
                prefix=args.prefix,
                dry_run=args.dry_run,
                switch=not args.no_switch,
                drop_old=args.drop_old,
                batch_size=args.batch_size,
                progress=not args.quiet and sys.stderr.isatty(),
            )
        )
    except CliError as exc:
        eprint(f"stella-sched rebuild: error: {exc.message}")
        return exc.code
    _print(report, args.json)
    return EXIT_OK


def _print(report: Report, as_json: bool) -> None:
    if as_json:
        print_json(report.as_dict())
        return
    print_table(["topic", "records"], sorted(report.topics.items()))
    if report.dry_run:
        print(f"dry run: a rebuild would read {report.total} record(s); active prefix {report.previous!r}")
        return
    print(
        f"read {report.read} record(s) ({report.folded} folded) into prefix {report.prefix!r} "
        f"in {report.seconds:.1f} s"
    )
    if report.switched:
        print(f"switched the active projection from {report.previous!r} to {report.prefix!r}")
    if report.dropped:
        print(f"dropped the collections of {report.previous!r}")


async def rebuild(
    settings: Any,
    *,
    prefix: str | None = None,
    dry_run: bool = False,
    switch: bool = True,
    drop_old: bool = False,
    batch_size: int = 1000,
    progress: bool = False,
    catch_up_seconds: float = CATCH_UP_SECONDS,
) -> Report:
    """Fold every projected topic from offset 0 into ``prefix`` (a new one by default) and switch to it."""
    from aiokafka import AIOKafkaConsumer
    from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError
    from pymongo import MongoClient
    from pymongo.errors import PyMongoError

    from projections.mongo_store import MongoStore, active_prefix
    from projections.store import MemoryStore, Projector
    from projections.topics import PROJECTED, positioned, projector_group

    client: MongoClient[dict[str, Any]] = MongoClient(
        settings.mongo_url, tz_aware=True, serverSelectionTimeoutMS=10_000
    )
    try:
        try:
            previous = await asyncio.to_thread(active_prefix, client, settings.mongo_db)
        except PyMongoError as exc:
            raise InfraError(mongo_hint(settings.mongo_url, exc)) from None
        target = prefix if prefix is not None else new_prefix()
        if not dry_run:
            if target == previous:
                raise CliError(f"prefix {target!r} is the active projection; choose another")
            existing = await asyncio.to_thread(client[settings.mongo_db].list_collection_names)
            if any(name.startswith(target) for name in existing):
                raise CliError(f"collections with prefix {target!r} exist already; choose another prefix")
        report = Report(prefix=target, previous=previous, dry_run=dry_run)
        logical = {settings.topic(t): t for t in PROJECTED}
        consumer = AIOKafkaConsumer(
            bootstrap_servers=settings.kafka_bootstrap,
            group_id=None,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            max_partition_fetch_bytes=settings.max_message_bytes * 2,
        )
        try:
            await consumer.start()
        except (KafkaConnectionError, KafkaTimeoutError, OSError) as exc:
            raise InfraError(kafka_hint(settings.kafka_bootstrap, exc)) from None
        try:
            parts = await _partitions(consumer, sorted(logical))
            begin = await consumer.beginning_offsets(parts)
            end = await consumer.end_offsets(parts)
            for tp in parts:
                report.topics[tp.topic] = report.topics.get(tp.topic, 0) + end[tp] - begin[tp]
            report.total = sum(end[tp] - begin[tp] for tp in parts)
            if dry_run:
                return report

            store = MongoStore(client, settings.mongo_db, target)
            # Fold in memory with the live projector's fold, then bulk-load the result (load_memory).
            memory = MemoryStore(take_updates=True)  # fed by the projector alone
            projector = Projector(memory, projector_group(settings), window_seconds=settings.window_seconds)
            consumer.assign(parts)
            await consumer.seek_to_beginning(*parts)
            bar = _bar(report.total, progress)
            started = time.perf_counter()
            try:
                goal = dict(end)
                deadline: float | None = None
                while True:
                    behind = [tp for tp in parts if await consumer.position(tp) < goal[tp]]
                    if not behind:
                        # Caught up with the goal: records may have arrived meanwhile; chase the current end.
                        latest = await consumer.end_offsets(parts)
                        if all(latest[tp] <= goal[tp] for tp in parts):
                            break
                        if deadline is None:
                            deadline = time.monotonic() + catch_up_seconds
                        elif time.monotonic() > deadline:
                            break  # a busy topic (ticks); the live projector continues from our checkpoints
                        added = sum(latest[tp] - goal[tp] for tp in parts)
                        goal = latest
                        bar.total = (bar.total or 0) + added
                        bar.refresh()
                        continue
                    batch = await consumer.getmany(*behind, timeout_ms=1000, max_records=batch_size)
                    items: list[tuple[object, Any]] = []
                    count = 0
                    for tp, records in batch.items():
                        for record in records:
                            count += 1
                            item = positioned(settings, logical[tp.topic], record)
                            if item is not None:
                                items.append(item)
                    if items:
                        await asyncio.to_thread(projector.process, items)
                        # The folded documents live until the load: left to the collector, every full
                        # collection walks all of them again, which was 40% of the fold's CPU time. Frozen,
                        # collections see only what the next batch allocates. Unfrozen after the loop.
                        gc.freeze()
                    report.read += count
                    report.folded += len(items)
                    bar.update(count)
            finally:
                gc.unfreeze()
                bar.close()
            loading = time.perf_counter()
            await asyncio.to_thread(store.load_memory, memory)
            report.load_seconds = time.perf_counter() - loading
            report.seconds = time.perf_counter() - started
        finally:
            await consumer.stop()

        if switch:
            await asyncio.to_thread(store.switch_to)
            report.switched = True
            if drop_old:
                # Refused by MongoStore.drop while still active; after the switch it no longer is.
                await asyncio.to_thread(MongoStore(client, settings.mongo_db, previous).drop)
                report.dropped = True
        return report
    except PyMongoError as exc:
        raise InfraError(mongo_hint(settings.mongo_url, exc)) from None
    finally:
        client.close()


async def _partitions(consumer: Any, topics: list[str]) -> list[Any]:
    from aiokafka import TopicPartition

    await consumer._client.force_metadata_update()
    parts: list[TopicPartition] = []
    missing: list[str] = []
    for topic in topics:
        found = consumer.partitions_for_topic(topic)
        if not found:
            missing.append(topic)
            continue
        parts += [TopicPartition(topic, p) for p in sorted(found)]
    if missing:
        raise CliError(
            f"topic(s) {', '.join(missing)} do not exist (check STELLA_TOPIC_PREFIX / --topic-prefix)", 3
        )
    return parts


def _bar(total: int, enabled: bool) -> Any:
    from tqdm import tqdm

    return tqdm(
        total=total, desc="rebuild", unit="rec", file=sys.stderr, disable=not enabled, dynamic_ncols=True
    )


if __name__ == "__main__":
    sys.exit(main())
