"""``stella-sched publish KIND PATH...``: parse input files, validate, key and produce them to Kafka."""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from cli.output import EXIT_OK, EXIT_REJECTED, CliError, UsageError, eprint, print_json, progress
from ingest.kinds import KIND_TOPICS

SUFFIXES = (".json", ".yaml", ".yml")


@dataclass(frozen=True)
class Problem:
    source: str
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.source}: {self.field}: {self.message}"


@dataclass
class Batch:
    """What parsing produced: records to send, problems, counts."""

    records: list[tuple[str, bytes, bytes]] = field(default_factory=list)  # (logical topic, key, value)
    sources: list[str] = field(default_factory=list)  # the file each record came from (same order)
    rejected: list[Problem] = field(default_factory=list)
    failed: list[Problem] = field(default_factory=list)  # valid records the broker did not accept
    failed_at: list[int] = field(default_factory=list)  # their indexes in ``records``
    warnings: list[Problem] = field(default_factory=list)
    files: int = 0
    files_rejected: int = 0
    files_empty: int = 0


def collect_files(paths: list[str]) -> list[Path]:
    """Files as given, folders recursively (*.json, *.yaml, *.yml), sorted, without duplicates."""
    out: list[Path] = []
    seen: set[Path] = set()
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES)
        elif path.is_file():
            found = [path]
        else:
            raise UsageError(f"{raw}: no such file or folder")
        for p in found:
            if p.resolve() not in seen:
                seen.add(p.resolve())
                out.append(p)
    return out


def message_key(kind: str, message: Any) -> bytes:
    """The Kafka key of a message of this kind (schemas.keys)."""
    if kind not in KIND_TOPICS:
        raise ValueError(f"unknown kind {kind!r}")
    from schemas.keys import message_key as key_of

    return key_of(message)


def load_kev_ids(path: str) -> frozenset[str]:
    """CISA KEV catalog JSON (``vulnerabilities[].cveID``), a JSON list of ids, or one id per line."""
    import orjson

    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise UsageError(f"{path}: cannot read the KEV file: {exc.strerror}") from None
    try:
        doc = orjson.loads(data)
    except orjson.JSONDecodeError:
        lines = data.decode("utf-8", "replace").splitlines()
        return frozenset(s.strip() for s in lines if s.strip() and not s.lstrip().startswith("#"))
    if isinstance(doc, dict) and isinstance(doc.get("vulnerabilities"), list):
        vulns = doc["vulnerabilities"]
        return frozenset(str(v["cveID"]) for v in vulns if isinstance(v, dict) and "cveID" in v)
    if isinstance(doc, list) and all(isinstance(v, str) for v in doc):
        return frozenset(doc)
    raise CliError(f"{path}: $: expected a CISA KEV catalog (vulnerabilities[].cveID) or a list of ids")


def parse_files(
    kind: str,
    files: list[Path],
    *,
    tenant: str | None,
    image_digest: str | None,
    repository: str | None,
    observed_at: datetime | None,
    kev_ids: frozenset[str],
    quiet: bool,
    max_bytes: int | None = None,
) -> tuple[Batch, list[Any]]:
    """Parse every file; returns the batch and the messages (in file order). Every check the real run
    makes before sending is made here, so ``--dry-run`` refuses what the real run would refuse: a message
    over the record limit (``STELLA_MAX_MESSAGE_BYTES``, the limit the worker enforces) is rejected."""
    from ingest.detect import parse_file
    from schemas.codec import encode

    if max_bytes is None:
        from agents.settings import Settings

        max_bytes = Settings.from_env().max_message_bytes
    batch = Batch()
    messages: list[Any] = []
    topic = KIND_TOPICS[kind]
    for path in progress(files, total=len(files), desc=f"parse {kind}", quiet=quiet):
        batch.files += 1
        source = str(path)
        try:
            data = path.read_bytes()
        except OSError as exc:
            batch.rejected.append(Problem(source, "$", f"cannot read: {exc.strerror}"))
            batch.files_rejected += 1
            continue
        result = parse_file(
            kind,
            data,
            source,
            tenant=tenant,
            image_digest=image_digest,
            repository=repository,
            observed_at=observed_at,
            kev_ids=kev_ids,
        )
        errors = [Problem(e.source, e.field, e.message) for e in result.errors if e.level == "error"]
        warnings = [Problem(e.source, e.field, e.message) for e in result.errors if e.level != "error"]
        batch.rejected += errors
        batch.warnings += warnings
        if errors:
            batch.files_rejected += 1
        elif not result.messages:
            batch.files_empty += 1
        oversized = False
        for i, message in enumerate(result.messages):
            key, value = message_key(kind, message), encode(message)
            if len(key) + len(value) > max_bytes:
                where = f"[{i}]" if len(result.messages) > 1 else "$"
                size = len(key) + len(value)
                limit = f"the record limit is {max_bytes} (STELLA_MAX_MESSAGE_BYTES)"
                batch.rejected.append(Problem(source, where, f"the message would be {size} bytes; {limit}"))
                oversized = True
                continue
            batch.records.append((topic, key, value))
            batch.sources.append(source)
            messages.append(message)
        if oversized and not errors:
            batch.files_rejected += 1
    return batch, messages


async def _send_once(
    bootstrap: str, prefix: str, records: list[tuple[int, tuple[str, bytes, bytes]]], quiet: bool
) -> list[tuple[int, BaseException]]:
    import asyncio

    from aiokafka.errors import KafkaError

    from cli.kafka_io import producer

    failed: list[tuple[int, BaseException]] = []
    async with producer(bootstrap) as client:
        pending: list[tuple[int, asyncio.Future[Any]]] = []
        for i, (topic, key, value) in progress(
            records, total=len(records), desc="send", quiet=quiet, unit="msg"
        ):
            try:
                pending.append((i, await client.send(prefix + topic, value, key=key)))
            except KafkaError as exc:
                failed.append((i, exc))
        await client.flush()
        outcomes = await asyncio.gather(*(fut for _, fut in pending), return_exceptions=True)
        failed += [
            (i, out) for (i, _), out in zip(pending, outcomes, strict=True) if isinstance(out, BaseException)
        ]
    return sorted(failed, key=lambda item: item[0])


async def send(
    bootstrap: str, prefix: str, records: list[tuple[str, bytes, bytes]], quiet: bool
) -> list[tuple[int, str]]:
    """Send every record; a record the broker refuses is reported, never the end of the run. Returns
    ``(index, reason)`` of the records not acknowledged.

    A refused record also breaks the idempotent producer's sequence for the records after it on that
    partition (OutOfOrderSequenceNumber), so those are sent again once with a new producer; records the
    broker refuses for their size are not retried."""
    from aiokafka.errors import MessageSizeTooLargeError, RecordTooLargeError

    from cli.kafka_io import require_topics

    await require_topics(bootstrap, {prefix + t for t, _, _ in records}, prefix)
    final: dict[int, str] = {}
    todo = list(enumerate(records))
    for attempt in range(2):
        failed = await _send_once(bootstrap, prefix, todo, quiet)
        retry: list[int] = []
        for i, exc in failed:
            reason = f"not acknowledged: {type(exc).__name__}: {exc}"
            if attempt == 0 and not isinstance(exc, MessageSizeTooLargeError | RecordTooLargeError):
                retry.append(i)
            final[i] = reason
        if not retry:
            break
        for i in retry:
            final.pop(i)
        todo = [(i, records[i]) for i in retry]
    return sorted(final.items())


def summary(batch: Batch, kind: str, prefix: str, *, dry_run: bool) -> dict[str, Any]:
    refused = set(batch.failed_at)
    per_topic = Counter(prefix + t for i, (t, _, _) in enumerate(batch.records) if i not in refused)

    def rows(problems: list[Problem]) -> list[dict[str, str]]:
        return [{"source": p.source, "field": p.field, "message": p.message} for p in problems]

    return {
        "kind": kind,
        "dry_run": dry_run,
        "files": batch.files,
        "files_rejected": batch.files_rejected,
        "files_without_messages": batch.files_empty,
        "messages": dict(sorted(per_topic.items())),
        "sent": 0 if dry_run else len(batch.records) - len(batch.failed),
        "failed": rows(batch.failed),
        "rejected": rows(batch.rejected),
        "warnings": len(batch.warnings),
        "warning_details": rows(batch.warnings),
    }


def print_summary(report: dict[str, Any], verbose: bool) -> None:
    out = sys.stdout
    verb = "would send" if report["dry_run"] else "sent"
    out.write(f"files read: {report['files']} ({report['files_rejected']} with errors)\n")
    total = sum(report["messages"].values())
    out.write(f"messages {verb}: {total}\n")
    for topic, n in report["messages"].items():
        out.write(f"  {topic}: {n}\n")
    if report["files_without_messages"]:
        out.write(f"files with nothing to send: {report['files_without_messages']}\n")
    hint = "" if verbose or not report["warnings"] else " (-v lists them)"
    out.write(f"warnings: {report['warnings']}{hint}\n")
    if verbose:
        for w in report["warning_details"]:
            out.write(f"  warning {w['source']}: {w['field']}: {w['message']}\n")
    if report["failed"]:
        out.write(f"not sent (broker refused): {len(report['failed'])}\n")
        for r in report["failed"]:
            out.write(f"  {r['source']}: {r['field']}: {r['message']}\n")
    if report["rejected"]:
        out.write(f"rejected: {len(report['rejected'])}\n")
        for r in report["rejected"]:
            out.write(f"  {r['source']}: {r['field']}: {r['message']}\n")
        if report["dry_run"]:
            out.write("dry run: nothing was sent; fix the rejected input and run again\n")
        elif total:
            out.write(f"the {total} valid message(s) were sent anyway; the rejected parts were left out\n")


def run(args: argparse.Namespace) -> int:
    from cli.kafka_io import default_bootstrap, default_prefix
    from cli.kafka_io import run as run_async

    if args.kind == "sbom" and not args.tenant:
        raise UsageError("publish sbom needs --tenant (SBOMs do not say which tenant they belong to)")
    files = collect_files(args.paths)
    if not files:
        raise UsageError(f"no *.json / *.yaml / *.yml files under {', '.join(args.paths)}")
    if args.image_digest and args.kind == "sbom" and len(files) > 1:
        raise UsageError(
            f"--image-digest names one image but {len(files)} SBOM files were given; publish them one by one"
        )
    kev_ids = load_kev_ids(args.kev_file) if args.kev_file else frozenset()
    batch, _ = parse_files(
        args.kind,
        files,
        tenant=args.tenant,
        image_digest=args.image_digest,
        repository=args.repository,
        observed_at=args.observed_at,
        kev_ids=kev_ids,
        quiet=args.quiet or args.json,
    )
    prefix = default_prefix(args.topic_prefix)
    if not args.dry_run and batch.records:
        bootstrap = default_bootstrap(args.bootstrap)
        failed = run_async(send(bootstrap, prefix, batch.records, args.quiet or args.json), bootstrap)
        batch.failed = [Problem(batch.sources[i], "$", reason) for i, reason in failed]
        batch.failed_at = [i for i, _ in failed]
    report = summary(batch, args.kind, prefix, dry_run=args.dry_run)
    if args.json:
        print_json(report)
    else:
        print_summary(report, args.verbose)
    if batch.rejected or batch.failed:
        if not args.json:
            problems = len(batch.rejected) + len(batch.failed)
            eprint(f"error: {problems} problem(s) (rejected input or refused by the broker); exit code 1")
        return EXIT_REJECTED
    return EXIT_OK
