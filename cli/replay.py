"""``stella-sched replay``: rewind a stopped consumer group to earliest / latest / a time / an offset.

Kafka only lets a group's offsets be changed from outside while the group has no live members, so this
refuses while the group is not Empty (or Dead, i.e. unknown). New offsets are committed with a group-less
assignment (``assign`` + ``commit``) that never joins the group: aiokafka 0.14's admin client has no
``alter_consumer_group_offsets``, and a standalone commit is exactly what Kafka's own
``kafka-consumer-groups --reset-offsets`` sends.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from cli.output import EXIT_OK, EXIT_REJECTED, CliError, UsageError, eprint, print_json, print_table

STOPPED_STATES = ("Empty", "Dead")


@dataclass(frozen=True)
class Target:
    mode: str  # earliest | latest | timestamp | offset
    timestamp: datetime | None = None
    offset: int | None = None

    def __str__(self) -> str:
        if self.mode == "timestamp" and self.timestamp is not None:
            from schemas.canonical import format_time

            return f"timestamp:{format_time(self.timestamp)}"
        if self.mode == "offset":
            return f"offset:{self.offset}"
        return self.mode


def parse_target(text: str) -> Target:
    """argparse type for --to."""
    if text in ("earliest", "latest"):
        return Target(text)
    mode, _, value = text.partition(":")
    if mode == "offset":
        try:
            offset = int(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"offset:N needs an integer, got {value!r}") from None
        if offset < 0:
            raise argparse.ArgumentTypeError("offset:N needs N >= 0")
        return Target("offset", offset=offset)
    if mode == "timestamp":
        from schemas.canonical import parse_time

        try:
            return Target("timestamp", timestamp=parse_time(value))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"timestamp:ISO8601 needs a time like 2025-01-31T12:00:00Z, got {value!r}"
            ) from None
    raise argparse.ArgumentTypeError(
        f"{text!r}: use earliest, latest, timestamp:2025-01-31T12:00:00Z or offset:N"
    )


@dataclass(frozen=True)
class Row:
    topic: str
    partition: int
    current: int | None
    target: int
    end: int
    lag: int
    note: str = ""


@dataclass(frozen=True)
class GroupInfo:
    state: str
    members: int


async def describe_group(admin: Any, group: str) -> GroupInfo:
    responses = await admin.describe_consumer_groups([group])
    groups = responses[0].to_object()["groups"]
    for g in groups:
        if g["group"] == group:
            if g["error_code"]:
                from aiokafka.errors import for_code

                raise CliError(f"cannot describe group {group!r}: {for_code(g['error_code']).__name__}")
            return GroupInfo(str(g["state"]), len(g["members"]))
    return GroupInfo("Dead", 0)


def refuse_if_live(group: str, info: GroupInfo) -> None:
    if info.state not in STOPPED_STATES:
        raise CliError(
            f"consumer group {group!r} is {info.state} with {info.members} live member(s); stop its "
            "consumers (workers, projectors) first, then run replay again. Offsets of a live group cannot be "
            "changed from outside."
        )


async def plan(bootstrap: str, group: str, target: Target, topics: list[str]) -> tuple[GroupInfo, list[Row]]:
    from aiokafka import TopicPartition

    from cli.kafka_io import admin, consumer, partitions_of

    async with admin(bootstrap) as client:
        info = await describe_group(client, group)
        refuse_if_live(group, info)
        committed_raw = await client.list_consumer_group_offsets(group)
    committed = {tp: meta.offset for tp, meta in committed_raw.items() if meta.offset >= 0}
    chosen = sorted(set(topics)) if topics else sorted({tp.topic for tp in committed})
    if not chosen:
        raise CliError(
            f"consumer group {group!r} has no committed offsets (state {info.state}); name the topics to "
            "position it on with --topic"
        )
    rows: list[Row] = []
    async with consumer(bootstrap) as client:
        parts: list[TopicPartition] = []
        for topic in chosen:
            parts += await partitions_of(client, topic)
        begin = await client.beginning_offsets(parts)
        end = await client.end_offsets(parts)
        by_time: dict[TopicPartition, Any] = {}
        if target.mode == "timestamp" and target.timestamp is not None:
            ms = int(target.timestamp.timestamp() * 1000)
            by_time = await client.offsets_for_times({tp: ms for tp in parts})
        for tp in parts:
            note = ""
            if target.mode == "earliest":
                offset = begin[tp]
            elif target.mode == "latest":
                offset = end[tp]
            elif target.mode == "offset":
                wanted = target.offset or 0
                offset = min(max(wanted, begin[tp]), end[tp])
                if offset != wanted:
                    note = f"clamped from {wanted}"
            else:
                found = by_time.get(tp)
                offset = found.offset if found is not None else end[tp]
                if found is None:
                    note = "no record at/after the time: end"
            lag = end[tp] - offset
            rows.append(Row(tp.topic, tp.partition, committed.get(tp), offset, end[tp], lag, note))
    return info, rows


async def commit(bootstrap: str, group: str, rows: list[Row]) -> dict[tuple[str, int], int]:
    from aiokafka import TopicPartition

    from cli.kafka_io import admin, consumer

    # Check again right before writing: a worker may have started while the user was reading the table.
    async with admin(bootstrap) as client:
        refuse_if_live(group, await describe_group(client, group))
    offsets = {TopicPartition(r.topic, r.partition): r.target for r in rows}
    async with consumer(bootstrap, group_id=group) as client:
        client.assign(list(offsets))
        try:
            await client.commit(offsets)
        except Exception as exc:
            raise CliError(
                f"the broker refused the new offsets for group {group!r} ({type(exc).__name__}); a consumer "
                "probably joined meanwhile: stop it and retry"
            ) from None
    async with admin(bootstrap) as client:
        after = await client.list_consumer_group_offsets(group)
    return {(tp.topic, tp.partition): meta.offset for tp, meta in after.items()}


def confirm(group: str, rows: list[Row]) -> bool:
    sys.stderr.write(f"Commit these offsets for group {group!r} on {len(rows)} partition(s)? [y/N] ")
    sys.stderr.flush()
    answer = sys.stdin.readline()
    return answer.strip().lower() in ("y", "yes")


def _dash(value: int | None) -> str | int:
    return "-" if value is None else value


def run(args: argparse.Namespace) -> int:
    from cli.kafka_io import default_bootstrap
    from cli.kafka_io import run as run_async

    if not args.group:
        raise UsageError("--group is required")
    bootstrap = default_bootstrap(args.bootstrap)
    info, rows = run_async(plan(bootstrap, args.group, args.to, args.topic or []), bootstrap)
    if args.json:
        doc: dict[str, Any] = {
            "group": args.group,
            "state": info.state,
            "to": str(args.to),
            "dry_run": args.dry_run,
            "partitions": [asdict(r) for r in rows],
        }
    else:
        sys.stdout.write(f"group {args.group} ({info.state}), rewind to {args.to}\n")
        print_table(
            ["topic", "partition", "current", "target", "end", "lag", "note"],
            [(r.topic, r.partition, _dash(r.current), r.target, r.end, r.lag, r.note) for r in rows],
        )
        total = sum(r.lag for r in rows)
        sys.stdout.write(f"total lag after the rewind: {total} record(s)\n")
    if args.dry_run:
        if args.json:
            print_json(doc)
        else:
            sys.stdout.write("dry run: nothing committed\n")
        return EXIT_OK
    if not args.yes and not confirm(args.group, rows):
        if args.json:
            print_json({**doc, "committed": False})
        eprint("aborted: nothing committed")
        return EXIT_REJECTED
    after = run_async(commit(bootstrap, args.group, rows), bootstrap)
    if args.json:
        doc["committed"] = {f"{t}/{p}": o for (t, p), o in sorted(after.items())}
        print_json(doc)
    else:
        sys.stdout.write(f"committed {len(rows)} offset(s) for group {args.group}\n")
    return EXIT_OK
