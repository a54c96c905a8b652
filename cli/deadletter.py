"""``stella-sched deadletter list|show|replay``: inspect the dead-letter topic and re-produce originals."""

from __future__ import annotations

import argparse
import base64
import sys
from collections.abc import Sequence
from typing import Any

from cli.output import (
    EXIT_OK,
    EXIT_REJECTED,
    EXIT_USAGE,
    CliError,
    eprint,
    parse_args,
    print_json,
    print_table,
)

EPILOG = """\
A dead letter is named by its position on the deadletter topic, PARTITION:OFFSET (the first column of
`list`). `replay` re-produces the original key and value, byte for byte, to the source topic it came from.

examples:
  stella-sched deadletter list
  stella-sched deadletter show 0:12
  stella-sched deadletter replay 0:12 --yes
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="stella-sched deadletter",
        description="List, show and replay messages the scheduler could not use.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("action", choices=("list", "show", "replay"))
    parser.add_argument("position", nargs="?", metavar="PARTITION:OFFSET", help="show / replay: which one")
    parser.add_argument("--yes", action="store_true", help="replay without asking")
    parser.add_argument("--timeout", type=float, default=3.0, metavar="S", help="stop reading after S idle s")
    parser.add_argument("--json", action="store_true", help="JSON output")
    parser.add_argument("--bootstrap", metavar="HOST:PORT", help="Kafka bootstrap (default $KAFKA_BOOTSTRAP)")
    parser.add_argument("--topic-prefix", metavar="P", help="topic prefix (default $STELLA_TOPIC_PREFIX)")
    return parser


async def _read(bootstrap: str, topic: str, timeout: float) -> list[tuple[str, Any]]:
    import time

    from cli.kafka_io import consumer, partitions_of
    from schemas.messages import DeadLetter

    out: list[tuple[str, Any]] = []
    async with consumer(bootstrap) as client:
        parts = await partitions_of(client, topic)
        client.assign(parts)
        await client.seek_to_beginning(*parts)
        end = await client.end_offsets(parts)
        last = time.monotonic()
        while time.monotonic() - last < timeout:
            positions = [await client.position(tp) for tp in parts]
            if all(pos >= end[tp] for pos, tp in zip(positions, parts, strict=True)):
                break
            batch = await client.getmany(timeout_ms=500)
            for record in (r for rs in batch.values() for r in rs):
                last = time.monotonic()
                try:
                    letter: Any = DeadLetter.model_validate_json(record.value or b"")
                except ValueError as exc:
                    letter = f"undecodable dead letter: {type(exc).__name__}"
                out.append((f"{record.partition}:{record.offset}", letter))
    return sorted(out, key=lambda x: tuple(int(p) for p in x[0].split(":")))


def _b64(text: str | None) -> bytes | None:
    return None if text is None else base64.b64decode(text)


async def _original(bootstrap: str, letter: Any) -> tuple[bytes | None, bytes]:
    """The key and value of a dead letter kept by reference, read back from its source position and
    checked against the recorded sha256 (a record the topic no longer holds is an error, never a null)."""
    import hashlib

    from aiokafka import TopicPartition

    from cli.kafka_io import consumer

    ref = letter.original
    where = f"{letter.source_topic} {letter.partition}@{letter.offset}"
    tp = TopicPartition(letter.source_topic, letter.partition)
    async with consumer(bootstrap) as client:
        client.assign([tp])
        client.seek(tp, letter.offset)
        batch = await client.getmany(tp, timeout_ms=10_000, max_records=1)
    records = batch.get(tp, [])
    if not records or records[0].offset != letter.offset:
        raise CliError(f"the original at {where} is no longer on the topic (retention?); nothing replayed")
    record = records[0]
    value = record.value or b""
    if hashlib.sha256(value).hexdigest() != ref.value_sha256:
        raise CliError(f"the record at {where} does not match the dead letter's sha256; nothing replayed")
    return record.key, value


def run(args: argparse.Namespace) -> int:
    from cli.kafka_io import default_bootstrap, default_prefix, producer
    from cli.kafka_io import run as run_async

    bootstrap = default_bootstrap(args.bootstrap)
    topic = default_prefix(args.topic_prefix) + "deadletter"
    letters = run_async(_read(bootstrap, topic, args.timeout), bootstrap)
    if args.action == "list":
        if args.json:
            rows = [
                {
                    "position": p,
                    **({"error": x} if isinstance(x, str) else x.model_dump(mode="json", by_alias=True)),
                }
                for p, x in letters
            ]
            print_json(rows)
        else:
            print_table(
                ["position", "source", "reason", "at", "error"],
                [
                    (p, "-", "-", "-", x)
                    if isinstance(x, str)
                    else (p, f"{x.source_topic}/{x.partition}@{x.offset}", x.reason, str(x.at), x.error[:60])
                    for p, x in letters
                ],
            )
        return EXIT_OK
    if not args.position:
        raise CliError(f"deadletter {args.action} needs PARTITION:OFFSET (see `deadletter list`)", EXIT_USAGE)
    found = dict(letters).get(args.position)
    if found is None or isinstance(found, str):
        raise CliError(f"no usable dead letter at {topic} {args.position}")
    if args.action == "show":
        doc = found.model_dump(mode="json", by_alias=True)
        value = _b64(found.value_b64)
        doc["value_text"] = value.decode("utf-8", "replace") if value is not None else None
        print_json(doc)
        return EXIT_OK
    key, value = _b64(found.key_b64), _b64(found.value_b64)
    if found.original is not None:  # too large to copy: it is still at its source position
        key, value = run_async(_original(bootstrap, found), bootstrap)
    elif value is None:
        raise CliError(f"the dead letter at {args.position} carries no original value to replay")
    target = found.source_topic
    if not args.yes:
        sys.stderr.write(f"Re-produce the original record ({len(value or b'')} bytes) to {target}? [y/N] ")
        sys.stderr.flush()
        if sys.stdin.readline().strip().lower() not in ("y", "yes"):
            eprint("aborted: nothing produced")
            return EXIT_REJECTED

    async def send() -> None:
        async with producer(bootstrap) as client:
            await client.send_and_wait(target, value, key=key)

    run_async(send(), bootstrap)
    sys.stdout.write(f"replayed {args.position} to {target}\n")
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parse_args(parser, argv)
    if isinstance(args, int):
        return args
    try:
        return run(args)
    except CliError as exc:
        sys.stderr.write(f"stella-sched: error: {exc.message}\n")
        return exc.code
