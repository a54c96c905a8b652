"""``stella-sched schedules``: cron sweeps. ``next`` is offline (the worker's own fire-time core)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from datetime import UTC, datetime

from cli.output import EXIT_USAGE, CliError, UsageError, print_json

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


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    try:
        args = build_parser().parse_args(args_list)
    except SystemExit as exc:
        return int(exc.code or 0) if not isinstance(exc.code, str) else EXIT_USAGE
    try:
        if args.action == "next":
            return run_next(args)
    except CliError as exc:
        print(f"stella-sched: error: {exc.message}", file=sys.stderr)
        return exc.code
    return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
