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
    rejected: list[Problem] = field(default_factory=list)
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
) -> tuple[Batch, list[Any]]:
    """Parse every file; returns the batch and the messages (in file order)."""
    from ingest.detect import parse_file
    from schemas.codec import encode

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
        for message in result.messages:
            batch.records.append((topic, message_key(kind, message), encode(message)))
            messages.append(message)
    return batch, messages


async def send(bootstrap: str, prefix: str, records: list[tuple[str, bytes, bytes]], quiet: bool) -> None:
    import asyncio

    from cli.kafka_io import producer, require_topics

    await require_topics(bootstrap, {prefix + t for t, _, _ in records}, prefix)
    async with producer(bootstrap) as client:
        pending = []
        for topic, key, value in progress(records, total=len(records), desc="send", quiet=quiet, unit="msg"):
            pending.append(await client.send(prefix + topic, value, key=key))
        await client.flush()
        await asyncio.gather(*pending)


def summary(batch: Batch, kind: str, prefix: str, *, dry_run: bool) -> dict[str, Any]:
    per_topic = Counter(prefix + t for t, _, _ in batch.records)

    def rows(problems: list[Problem]) -> list[dict[str, str]]:
        return [{"source": p.source, "field": p.field, "message": p.message} for p in problems]

    return {
        "kind": kind,
        "dry_run": dry_run,
        "files": batch.files,
        "files_rejected": batch.files_rejected,
        "files_without_messages": batch.files_empty,
        "messages": dict(sorted(per_topic.items())),
        "sent": 0 if dry_run else len(batch.records),
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
        run_async(send(bootstrap, prefix, batch.records, args.quiet or args.json), bootstrap)
    report = summary(batch, args.kind, prefix, dry_run=args.dry_run)
    if args.json:
        print_json(report)
    else:
        print_summary(report, args.verbose)
    if batch.rejected:
        if not args.json:
            eprint(f"error: {len(batch.rejected)} problem(s) in the input; exit code 1")
        return EXIT_REJECTED
    return EXIT_OK
