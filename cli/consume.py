"""``stella-sched tail`` (follow events.signed, verifying each) and ``stella-sched query`` (read models)."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from cli.output import (
    EXIT_OK,
    EXIT_REJECTED,
    CliError,
    UsageError,
    mongo_client,
    parse_args,
    print_json,
)

QUERY_COLLECTIONS = ("runs", "jobs", "images", "deltas", "cursors")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stella-sched", formatter_class=argparse.RawDescriptionHelpFormatter
    )
    subs = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    tail = subs.add_parser(
        "tail",
        description="Follow the events.signed topic and verify every envelope as it arrives.",
        epilog="examples:\n  stella-sched tail --public-keys keys/\n"
        "  stella-sched tail --public-keys keys/ --from-beginning --idle-timeout 5 --json\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    tail.add_argument("--public-keys", required=True, metavar="PATH", help="public key file or folder")
    tail.add_argument("--from-beginning", action="store_true", help="start at the oldest record")
    tail.add_argument("--max", type=int, metavar="N", help="stop after N records")
    tail.add_argument("--idle-timeout", type=float, metavar="S", help="stop after S seconds without records")
    tail.add_argument("--json", action="store_true", help="one JSON object per event")
    tail.add_argument("--bootstrap", metavar="HOST:PORT", help="Kafka bootstrap (default $KAFKA_BOOTSTRAP)")
    tail.add_argument("--topic-prefix", metavar="P", help="topic prefix (default $STELLA_TOPIC_PREFIX)")
    query = subs.add_parser(
        "query",
        description="Read the MongoDB read models. 'deltas' prints a run's DeltaSummary (needs --run).",
        epilog="examples:\n  stella-sched query runs --tenant acme --limit 20\n"
        "  stella-sched query jobs --run run-0123 --json\n  stella-sched query deltas --run run-0123\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    query.add_argument("collection", choices=QUERY_COLLECTIONS)
    query.add_argument("--tenant", help="only this tenant's documents")
    query.add_argument("--run", metavar="RUN", help="a run id (runs: that run; jobs: its jobs; deltas)")
    query.add_argument("--limit", type=int, default=50, help="at most N documents (1..1000, default 50)")
    query.add_argument("--json", action="store_true", help="JSON output")
    query.add_argument("--mongo-url", help="MongoDB URL (default $MONGO_URL)")
    query.add_argument("--db", help="database (default $STELLA_MONGO_DB)")
    return parser


def _tail(args: argparse.Namespace) -> int:
    from cli.kafka_io import default_bootstrap, default_prefix
    from cli.kafka_io import run as run_async
    from cli.verify import check, load_trusted, short_predicate

    trusted = load_trusted(args.public_keys)
    bootstrap = default_bootstrap(args.bootstrap)
    topic = default_prefix(args.topic_prefix) + "events.signed"
    failed = 0

    async def follow() -> None:
        import orjson

        from cli.kafka_io import consumer, partitions_of

        nonlocal failed
        seen = 0
        async with consumer(bootstrap) as client:
            parts = await partitions_of(client, topic)
            client.assign(parts)
            await (client.seek_to_beginning(*parts) if args.from_beginning else client.seek_to_end(*parts))
            last = time.monotonic()
            while args.idle_timeout is None or time.monotonic() - last < args.idle_timeout:
                batch = await client.getmany(timeout_ms=500)
                for record in sorted((r for rs in batch.values() for r in rs), key=lambda r: r.timestamp):
                    last = time.monotonic()
                    try:
                        doc: Any = orjson.loads(record.value or b"null")
                    except orjson.JSONDecodeError:
                        doc = None
                    result = check(f"{topic}/{record.partition}@{record.offset}", doc, trusted)
                    failed += not result.ok
                    if args.json:
                        print_json(asdict(result))
                    else:
                        status = "ok" if result.ok else f"FAIL {result.error}: {result.detail}"
                        sys.stdout.write(
                            f"{result.location}  {result.event_id[:16] or '-'}  {result.subject or '-'}  "
                            f"{short_predicate(result.predicate_type)}  {status}\n"
                        )
                    sys.stdout.flush()
                    seen += 1
                    if args.max is not None and seen >= args.max:
                        return

    run_async(follow(), bootstrap)
    return EXIT_REJECTED if failed else EXIT_OK


def _query(args: argparse.Namespace) -> int:

    from agents.settings import Settings
    from projections.mongo_store import MongoStore

    settings = Settings.from_env()
    url = args.mongo_url or settings.mongo_url
    db = args.db or settings.mongo_db
    if not 1 <= args.limit <= 1000:
        raise UsageError("--limit must be 1..1000")
    with mongo_client(url) as client:
        store = MongoStore.open_active(client, db)
        docs = _documents(store, args)
    if args.json:
        print_json({"collection": args.collection, "items": docs})
    else:
        for doc in docs:
            print_json(doc)
        sys.stderr.write(f"{len(docs)} document(s)\n")
    return EXIT_OK


def _documents(store: Any, args: argparse.Namespace) -> list[dict[str, Any]]:
    def clean(doc: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in doc.items() if k != "_pos"}

    def owned(doc: dict[str, Any] | None) -> bool:
        return doc is not None and (args.tenant is None or doc.get("tenant") == args.tenant)

    if args.collection in ("runs", "deltas") and args.run:
        doc = store.get("runs", args.run)
        if not owned(doc):
            raise CliError(
                f"run {args.run!r} not found" + (f" for tenant {args.tenant!r}" if args.tenant else "")
            )
        if args.collection == "deltas":
            return [{"run_id": args.run, "state": doc.get("state"), "summary": doc.get("summary", {})}]
        return [clean(doc)]
    if args.collection == "deltas":
        raise UsageError("query deltas needs --run RUN")
    where: dict[str, Any] = {}
    if args.tenant and args.collection != "cursors":
        where["tenant"] = args.tenant
    if args.run and args.collection == "jobs":
        where["run_id"] = args.run
    page = store.find(args.collection, where or None, limit=args.limit)
    return [clean(d) for d in page.items]


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parse_args(parser, argv)
    if isinstance(args, int):
        return args
    try:
        return _tail(args) if args.command == "tail" else _query(args)
    except CliError as exc:
        sys.stderr.write(f"stella-sched: error: {exc.message}\n")
        return exc.code
    except KeyboardInterrupt:
        return 130
