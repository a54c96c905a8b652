"""``stella-sched schedules``: cron sweeps.

``next`` is offline (the worker's own fire-time core). ``create`` / ``update`` / ``pause`` / ``resume`` /
``delete`` / ``run`` produce a ScheduleCommand to the `schedules` topic (key: tenant), as the API does;
``list`` / ``show`` / ``preview`` / ``catchup`` read the MongoDB read models and evaluate with the same code
as the worker (``projections.schedule_view``).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cli.output import EXIT_USAGE, CliError, InfraError, UsageError, mongo_hint, print_json

PROG = "stella-sched schedules"

NEXT_EPILOG = """\
Times are printed in UTC and in the schedule's zone. Daylight saving time follows Debian cron: a wall
time skipped by the spring-forward fires once at the first valid instant after the gap, a wall time that
occurs twice on the fall-back day fires once (the first time); expressions with * in the minute or hour
field fire at every matching instant. An optional sixth, leading field is seconds.

examples:
  stella-sched schedules next --cron '30 2 * * *' --tz Europe/Berlin --from 2026-03-28T00:00:00Z --count 3
  stella-sched schedules next --cron '0 6 * * MON-FRI' --tz America/New_York --json
  stella-sched schedules next --cron '*/20 * * * * *' --count 5            (every 20 seconds)
"""


def _time(text: str) -> datetime:
    from schemas.canonical import parse_time

    try:
        return parse_time(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not an RFC 3339 time (like 2026-03-28T00:00:00Z): {text!r}"
        ) from None


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= 10_000:
        raise argparse.ArgumentTypeError(f"want a whole number from 1 to 10000, got {text!r}")
    return value


MANAGE_EPILOG = """\
A spec file is JSON or YAML with the fields of ScheduleSpec (schemas/json/scheduler.schedule-command.v1.json):
  cron: "30 2 * * *"            # 5 fields, or 6 with seconds first
  timezone: Europe/Berlin       # IANA zone, default UTC
  mode: analysis-only           # or content-refresh (jobs re-scan: kind rescan)
  selection: {all: true}        # or namespaces / repositories (globs) / digests / labels
  only_if: {last_report_older_than_days: 7}
  limits: {max_jobs: 500, parallelism: 8, rate_per_second: 20}   # per run: in flight, started a second
  missed: {policy: latest, max_catchup: 10, grace_seconds: 300}   # skip | latest | all
  priority: background          # the class of the sweep's jobs

examples:
  stella-sched schedules create nightly --tenant acme --spec nightly.yaml
  stella-sched schedules create nightly --tenant acme --cron '30 2 * * *' --tz Europe/Berlin
  stella-sched schedules pause nightly --tenant acme --reason 'registry maintenance'
  stella-sched schedules run nightly --tenant acme          (a manual run now)
"""

READ_EPILOG = """\
examples:
  stella-sched schedules list --tenant acme
  stella-sched schedules show nightly --tenant acme --json
  stella-sched schedules preview nightly --tenant acme      (images selected now, onlyIf filtered, missed)
  stella-sched schedules catchup nightly --tenant acme --dry-run
"""


def _infra(p: argparse.ArgumentParser) -> None:
    p.add_argument("--tenant", required=True, help="the schedule's tenant")
    p.add_argument("--json", action="store_true", help="JSON output")
    p.add_argument("--bootstrap", help="Kafka bootstrap servers (default $KAFKA_BOOTSTRAP)")
    p.add_argument("--topic-prefix", help="topic prefix (default $STELLA_TOPIC_PREFIX)")
    p.add_argument("--mongo-url", help="MongoDB URL (default $MONGO_URL)")
    p.add_argument("--db", help="read-model database (default $STELLA_MONGO_DB)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Cron sweeps over a tenant's images: fire times, and (with a worker) the schedules.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    subs = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    p = subs.add_parser(
        "next",
        help="print the next fire times of a cron expression in a time zone (offline)",
        description="Print the next fire times of a cron expression in an IANA time zone, in UTC and local "
        "time, computed by the same code the worker fires with. Reads and writes nothing.",
        epilog=NEXT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--cron", required=True, help="5 fields (minute hour day month weekday), or 6 (second first)"
    )
    p.add_argument("--tz", default="UTC", help="IANA zone (default UTC), e.g. Europe/Berlin")
    p.add_argument("--from", dest="start", type=_time, help="RFC 3339 instant to start after (default now)")
    p.add_argument("--count", type=_count, default=5, help="how many fire times (default 5)")
    p.add_argument("--json", action="store_true", help="JSON output")

    def sub(name: str, help_text: str, epilog: str) -> argparse.ArgumentParser:
        q = subs.add_parser(
            name,
            help=help_text,
            description=help_text,
            epilog=epilog,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        _infra(q)
        return q

    q = sub("list", "list the tenant's schedules (read model)", READ_EPILOG)
    for name, help_text in (
        ("show", "one schedule: spec, status, next fire, last fired, recent occurrences"),
        ("preview", "how many images the schedule selects now, how many onlyIf filters out, what is missed"),
        ("catchup", "what the next tick would fire or skip under the missed-run policy"),
    ):
        q = sub(name, help_text, READ_EPILOG)
        q.add_argument("schedule_id")
        if name == "catchup":
            q.add_argument(
                "--dry-run", action="store_true", help="list only (the worker catches up by itself; required)"
            )
    for name, help_text in (
        ("create", "create a schedule"),
        ("update", "replace a schedule's spec (occurrences from now on follow it)"),
    ):
        q = sub(name, help_text, MANAGE_EPILOG)
        q.add_argument("schedule_id")
        q.add_argument("--spec", type=Path, help="spec file (JSON or YAML)")
        q.add_argument("--cron", help="cron expression (instead of, or overriding, the spec file's)")
        q.add_argument("--tz", help="IANA time zone (overrides the spec file's)")
        q.add_argument("--reason", default="", help="why (kept on the command)")
    for name, help_text in (
        ("pause", "pause a schedule (occurrences while paused never fire and are not missed)"),
        ("resume", "resume a paused schedule from now"),
        ("delete", "delete a schedule"),
        ("run", "a manual run of the schedule now"),
    ):
        q = sub(name, help_text, MANAGE_EPILOG)
        q.add_argument("schedule_id")
        q.add_argument("--reason", default="", help="why (kept on the command)")
    return parser


def run_next(args: argparse.Namespace) -> int:
    from schemas.canonical import format_time
    from schemas.cron import check_cron, zone
    from streams.schedules import next_fires

    try:
        cron = check_cron(args.cron)
        tz = zone(args.tz)
    except ValueError as exc:
        raise UsageError(f"--cron/--tz: {exc}") from None
    start = args.start or datetime.now(UTC).replace(microsecond=0)
    times = next_fires(cron, args.tz, start, args.count)
    rows = [
        {
            "utc": format_time(t),
            "local": t.astimezone(tz).isoformat(),
            "zone": t.astimezone(tz).tzname() or "",
        }
        for t in times
    ]
    if args.json:
        print_json({"cron": cron, "timezone": args.tz, "from": format_time(start), "fires": rows})
        return 0
    print(f"cron {cron!r} in {args.tz}, after {format_time(start)}:")
    for row in rows:
        print(f"  {row['utc']}  {row['local']} {row['zone']}")
    if len(rows) < args.count:
        print(f"  (no further fire times within 50 years of the last: {len(rows)} found)")
    return 0


def _spec(args: argparse.Namespace) -> Any:
    import orjson
    import yaml
    from pydantic import ValidationError

    from schemas.messages import ScheduleSpec

    data: dict[str, Any] = {}
    where = "command line"
    if args.spec is not None:
        where = str(args.spec)
        try:
            text = args.spec.read_text(encoding="utf-8")
        except OSError as exc:
            raise CliError(f"{args.spec}: {exc.strerror or exc}") from None
        try:
            loaded = orjson.loads(text) if args.spec.suffix == ".json" else yaml.safe_load(text)
        except (orjson.JSONDecodeError, yaml.YAMLError) as exc:
            raise CliError(f"{args.spec}: not valid JSON/YAML: {exc}") from None
        if not isinstance(loaded, dict):
            raise CliError(f"{args.spec}: want a mapping of ScheduleSpec fields")
        data = loaded
    if args.cron:
        data["cron"] = args.cron
    if args.tz:
        data["timezone"] = args.tz
    if "cron" not in data:
        raise UsageError("give --spec FILE or --cron EXPR")
    try:
        return ScheduleSpec.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]) or "$"
        raise CliError(f"{where}: {field}: {first['msg']}") from None


def run_command(args: argparse.Namespace) -> int:
    from cli.kafka_io import default_bootstrap, default_prefix, producer, require_topics, run
    from schemas.canonical import format_time
    from schemas.codec import encode
    from schemas.keys import message_key
    from schemas.messages import ScheduleCommand

    spec = _spec(args) if args.action in ("create", "update") else None
    try:
        command = ScheduleCommand(
            action=args.action,
            tenant=args.tenant,
            schedule_id=args.schedule_id,
            at=datetime.now(UTC).replace(microsecond=0),
            spec=spec,
            requested_by="cli",
            reason=args.reason,
        )
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    bootstrap = default_bootstrap(args.bootstrap)
    topic = default_prefix(args.topic_prefix) + "schedules"

    async def send() -> tuple[int, int]:
        await require_topics(bootstrap, [topic], default_prefix(args.topic_prefix))
        async with producer(bootstrap) as client:
            meta = await client.send_and_wait(topic, encode(command), key=message_key(command))
            return meta.partition, meta.offset

    partition, offset = run(send(), bootstrap)
    out = {
        "action": args.action,
        "tenant": args.tenant,
        "schedule_id": args.schedule_id,
        "at": format_time(command.at),
        "position": f"{topic}:{partition}:{offset}",
    }
    if args.json:
        print_json(out)
    else:
        print(f"{args.action} {args.tenant}/{args.schedule_id} sent ({out['position']})")
        if args.action == "run":
            from streams.schedules import schedule_run_id

            print(f"run id: {schedule_run_id(args.tenant, args.schedule_id, command.at, 'manual')}")
    return 0


def _store(args: argparse.Namespace) -> tuple[Any, Any]:
    from pymongo import MongoClient
    from pymongo.errors import PyMongoError

    from agents.settings import Settings
    from projections.mongo_store import MongoStore

    settings = Settings.from_env()
    url = args.mongo_url or settings.mongo_url
    client: Any = MongoClient(url, serverSelectionTimeoutMS=5000)
    try:
        client.admin.command("ping")
    except PyMongoError as exc:
        client.close()
        raise InfraError(mongo_hint(url, exc)) from None
    return client, MongoStore.open_active(client, args.db or settings.mongo_db)


def _images(store: Any, tenant: str) -> list[dict[str, Any]]:
    from projections.fold import IMAGES

    docs: list[dict[str, Any]] = []
    after = None
    while True:
        page = store.find(IMAGES, {"tenant": tenant}, after=after, limit=1000)
        docs.extend(page.items)
        if page.next_after is None:
            return docs
        after = page.next_after


def run_read(args: argparse.Namespace) -> int:
    from projections.fold import SCHEDULE_RUNS, SCHEDULES, schedule_doc_id
    from projections.schedule_view import catchup, preview
    from schemas.messages import ScheduleSpec

    if args.action == "catchup" and not args.dry_run:
        raise UsageError("catchup only lists (--dry-run): the worker applies the missed-run policy itself")
    client, store = _store(args)
    try:
        if args.action == "list":
            page = store.find(SCHEDULES, {"tenant": args.tenant}, limit=1000)
            items = [_clean(d) for d in page.items if "spec" in d]
            if args.json:
                print_json({"items": items})
            else:
                for d in items:
                    print(
                        f"{d['schedule_id']:<24} {d['status']:<8} {d['spec']['cron']!r} {d['spec']['timezone']}"
                        f"  next {d.get('next_fire')}  last {d.get('last_fired')}"
                        f"  fired {d.get('fired_total', 0)} missed {d.get('missed_total', 0)}"
                    )
                print(f"{len(items)} schedule(s)", file=sys.stderr)
            return 0
        doc = store.get(SCHEDULES, schedule_doc_id(args.tenant, args.schedule_id))
        if doc is None or "spec" not in doc or doc.get("status") == "deleted":
            raise CliError(f"schedule {args.schedule_id!r} not found for tenant {args.tenant!r}")
        now = datetime.now(UTC).replace(microsecond=0)
        if args.action == "show":
            runs = store.find(
                SCHEDULE_RUNS, {"tenant": args.tenant, "schedule_id": args.schedule_id}, limit=1000
            )
            recent = sorted((_clean(r) for r in runs.items), key=lambda r: r["nominal"])[-20:]
            out: dict[str, Any] = {**_clean(doc), "recent": recent}
        elif args.action == "preview":
            spec = ScheduleSpec.model_validate(doc["spec"])
            out = {**preview(spec, _images(store, args.tenant), now), "missed": catchup(doc, now)}
        else:
            out = catchup(doc, now)
    finally:
        client.close()
    print_json(out) if args.json else _print_human(out)
    return 0


def _clean(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k not in ("_pos", "_id")}


def _span(times: list[str]) -> str:
    if len(times) <= 3:
        return ", ".join(times) or "none"
    return f"{len(times)}: {times[0]} ... {times[-1]}"


def _print_human(out: dict[str, Any]) -> None:
    for key, value in out.items():
        if key == "decisions":
            continue  # the would_fire / would_skip lines say it; --json has every decision
        if key in ("would_fire", "would_skip", "images") and isinstance(value, list):
            print(f"{key}: {_span([str(v) for v in value])}")
        elif isinstance(value, dict):
            print(f"{key}:")
            for sub, item in value.items():
                if sub == "decisions":
                    continue
                shown = _span([str(v) for v in item]) if isinstance(item, list) else item
                print(f"  {sub}: {shown}")
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            print(f"{key}:")
            for item in value:
                print("  " + " ".join(f"{k}={v}" for k, v in item.items()))
        else:
            print(f"{key}: {value}")


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(args_list)
    except SystemExit as exc:
        return int(exc.code or 0) if not isinstance(exc.code, str) else EXIT_USAGE
    try:
        if args.action == "next":
            return run_next(args)
        if args.action in ("list", "show", "preview", "catchup"):
            return run_read(args)
        return run_command(args)
    except CliError as exc:
        print(f"stella-sched: error: {exc.message}", file=sys.stderr)
        return exc.code
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
