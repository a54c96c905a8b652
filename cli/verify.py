"""``stella-sched verify``: check DSSE envelopes from a file or from the signed-events topic."""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import sys
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import orjson

from cli.output import EXIT_OK, EXIT_REJECTED, CliError, UsageError, print_json, print_table


@dataclass(frozen=True)
class Checked:
    location: str
    event_id: str
    ok: bool
    keyid: str = ""
    subject: str = ""
    predicate_type: str = ""
    error: str = ""
    detail: str = ""


def load_envelopes(path: Path) -> list[tuple[str, Any]]:
    """(location, document) for a JSON envelope, a JSON list of envelopes, or JSONL (one per line)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError:
        out: list[tuple[str, Any]] = []
        for n, line in enumerate(data.splitlines(), 1):
            if not line.strip():
                continue
            try:
                out.append((f"{path}:{n}", orjson.loads(line)))
            except orjson.JSONDecodeError as exc:
                out.append((f"{path}:{n}", _NotJson(str(exc))))
        if not out:
            raise CliError(f"{path}: $: empty file, no envelopes") from None
        return out
    if isinstance(doc, list):
        return [(f"{path}[{i}]", d) for i, d in enumerate(doc)]
    return [(str(path), doc)]


@dataclass(frozen=True)
class _NotJson:
    error: str


def event_id_of(doc: Any) -> str:
    """sha256 of the payload bytes (the signed-event id), or '' when the payload is not base64."""
    payload = doc.get("payload") if isinstance(doc, Mapping) else None
    if not isinstance(payload, str):
        return ""
    try:
        raw = base64.b64decode(payload, validate=True)
    except (binascii.Error, ValueError):
        try:
            raw = base64.b64decode(payload, altchars=b"-_", validate=True)
        except (binascii.Error, ValueError):
            return ""
    return hashlib.sha256(raw).hexdigest()


def check(location: str, doc: Any, trusted: Mapping[str, Any]) -> Checked:
    from signing.dsse import verify

    if isinstance(doc, _NotJson):
        return Checked(location, "", False, error="malformed", detail=f"not JSON: {doc.error}")
    if not isinstance(doc, Mapping):
        detail = f"expected an object, got {type(doc).__name__}"
        return Checked(location, "", False, error="malformed", detail=detail)
    result = verify(doc, trusted)
    subject, predicate = "", ""
    statement = result.statement
    if isinstance(statement, Mapping):
        subjects = statement.get("subject")
        if isinstance(subjects, list) and subjects and isinstance(subjects[0], Mapping):
            subject = str(subjects[0].get("name", ""))
        predicate = str(statement.get("predicateType", ""))
    return Checked(
        location,
        event_id_of(doc),
        result.ok,
        keyid=result.keyid or "",
        subject=subject,
        predicate_type=predicate,
        error=result.error or "",
        detail=result.detail,
    )


async def read_topic(
    bootstrap: str, topic: str, *, from_beginning: bool, max_records: int | None, timeout: float
) -> list[tuple[str, Any]]:
    """Records of the topic: from the start or from now; stops at --max or after --timeout s idle."""
    from cli.kafka_io import consumer, partitions_of

    out: list[tuple[str, Any]] = []
    async with consumer(bootstrap) as client:
        parts = await partitions_of(client, topic)
        client.assign(parts)
        if from_beginning:
            await client.seek_to_beginning(*parts)
        else:
            await client.seek_to_end(*parts)
        idle_since = time.monotonic()
        while time.monotonic() - idle_since < timeout:
            batch = await client.getmany(timeout_ms=500, max_records=500)
            records = sorted((r for rs in batch.values() for r in rs), key=lambda r: (r.partition, r.offset))
            if records:
                idle_since = time.monotonic()
            for record in records:
                location = f"{topic}/{record.partition}@{record.offset}"
                try:
                    value: Any = orjson.loads(record.value) if record.value is not None else None
                except orjson.JSONDecodeError as exc:
                    value = _NotJson(str(exc))
                out.append((location, value))
                if max_records is not None and len(out) >= max_records:
                    return out
    return out


def load_trusted(path: str) -> Mapping[str, Any]:
    from signing.keys import KeyFileError, load_public_keys

    if not Path(path).exists():
        raise UsageError(f"--public-keys {path}: no such file or folder")
    try:
        keys = load_public_keys(path)
    except KeyFileError as exc:
        raise CliError(str(exc)) from None
    if not keys:
        raise CliError(f"{path}: no public keys found")
    return keys


def short_predicate(predicate_type: str) -> str:
    """``https://stellaops.io/scheduler/job-completed/v1`` -> ``job-completed/v1``."""
    if not predicate_type:
        return "-"
    parts = predicate_type.rstrip("/").split("/")
    return "/".join(parts[-2:]) if len(parts) >= 2 else predicate_type


def report(results: list[Checked], as_json: bool) -> int:
    failed = [r for r in results if not r.ok]
    if as_json:
        print_json({"checked": len(results), "failed": len(failed), "events": [asdict(r) for r in results]})
    else:
        print_table(
            ["where", "event id", "keyid", "subject", "predicate", "result"],
            [
                (
                    r.location,
                    r.event_id[:16] or "-",
                    r.keyid[:16] or "-",
                    r.subject or "-",
                    short_predicate(r.predicate_type),
                    "ok" if r.ok else f"FAIL {r.error}: {r.detail}",
                )
                for r in results
            ],
        )
        sys.stdout.write(f"{len(results)} checked, {len(results) - len(failed)} ok, {len(failed)} failed\n")
    return EXIT_REJECTED if failed else EXIT_OK


def run(args: argparse.Namespace) -> int:
    from cli.kafka_io import default_bootstrap, default_prefix
    from cli.kafka_io import run as run_async

    trusted = load_trusted(args.public_keys)
    if args.file:
        docs = load_envelopes(Path(args.file))
    else:
        bootstrap = default_bootstrap(args.bootstrap)
        topic = default_prefix(args.topic_prefix) + "events.signed"
        docs = run_async(
            read_topic(
                bootstrap,
                topic,
                from_beginning=args.from_beginning,
                max_records=args.max,
                timeout=args.timeout,
            ),
            bootstrap,
        )
        if not docs and not args.json:
            sys.stderr.write(f"no records on {topic} within {args.timeout:g}s\n")
    return report([check(loc, doc, trusted) for loc, doc in docs], args.json)
