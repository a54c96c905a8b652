"""``stella-sched audit``: verify, export and prove the audit ledger (docs/audit-ledger.md).

Reads the ``audit`` and ``audit-snapshots`` topics from the beginning up to their end offsets (a
group-less consumer, progress bar on a terminal), or an export file; the checks themselves are the pure
``streams.audit.verify``.
"""

from __future__ import annotations

import argparse
import os
import sys
import textwrap
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from cli.output import (
    EXIT_OK,
    EXIT_REJECTED,
    CliError,
    UsageError,
    mongo_client,
    parse_args,
    print_json,
    print_table,
    progress_enabled,
)
from streams.audit.verify import Record

PROG = "stella-sched audit"
FORMAT = "stella-sched/audit-export@1"

EPILOG = """\
The ledger: every job lifecycle step (planned, started, attempt-failed, cancel-requested, completed,
failed, skipped, sla-breached, dead-lettered) and every run state gets an entry in its tenant's hash
chain (link = sha256(prev link || canonical entry), HLC timestamp physical_ms:logical:node) on the `audit`
topic; every N entries or T seconds a DSSE-signed snapshot carries the Merkle root of the batch on
`audit-snapshots`. `verify` names the first bad entry of each tenant: deleted, altered, reordered
(swapped), a fork, a truncated tail, a snapshot missing or not matching, a bad signature.

exit codes: 0 verified, 1 a problem found, 2 usage error, 3 Kafka / MongoDB unreachable

examples:
  stella-sched audit verify --public-keys keys/                      # every tenant, from the topics
  stella-sched audit verify --tenant acme --from 120 --public-keys keys/signer.pub.json
  stella-sched audit verify --check-read-models --public-keys keys/  # every job in MongoDB is chained
  stella-sched audit export --out audit.jsonl                        # self-contained, for an auditor
  stella-sched audit verify --file audit.jsonl --public-keys signer.pub.json   # offline
  stella-sched audit prove --job 3f2a... --file audit.jsonl --public-keys keys/ --json
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=textwrap.fill("Verify, export and prove the verifiable audit ledger.", 100),
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    subs = parser.add_subparsers(dest="action", required=True, metavar="{verify,export,prove}")

    def common(p: argparse.ArgumentParser, *, keys: bool) -> None:
        p.add_argument("--file", metavar="PATH", help="an export file instead of the topics")
        p.add_argument("--tenant", metavar="T", help="only this tenant's chain")
        if keys:
            p.add_argument(
                "--public-keys",
                metavar="PATH",
                default=os.environ.get("STELLA_PUBLIC_KEYS") or None,
                help="public key file or folder (default $STELLA_PUBLIC_KEYS)",
            )
        p.add_argument("--json", action="store_true", help="JSON output")
        p.add_argument("--quiet", action="store_true", help="no progress bar")
        group = p.add_argument_group("Kafka")
        group.add_argument(
            "--bootstrap", metavar="HOST:PORT", help="Kafka bootstrap (default $KAFKA_BOOTSTRAP)"
        )
        group.add_argument("--topic-prefix", metavar="P", help="topic prefix (default $STELLA_TOPIC_PREFIX)")

    v = subs.add_parser(
        "verify",
        help="check the chains, snapshots, signatures; name the first bad entry",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    common(v, keys=True)
    v.add_argument("--from", dest="start", type=_seq, default=1, metavar="SEQ", help="first seq to check (1)")
    v.add_argument(
        "--check-read-models",
        action="store_true",
        help="also check that every job in the MongoDB read models has a `planned` entry",
    )
    v.add_argument("--mongo-url", metavar="URL", help="default $MONGO_URL")
    v.add_argument("--db", metavar="NAME", help="default $STELLA_MONGO_DB")
    e = subs.add_parser(
        "export",
        help="write a self-contained file an auditor verifies offline with the public key only",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    common(e, keys=False)
    e.add_argument("--out", required=True, metavar="FILE", help="JSON Lines file to write ('-': stdout)")
    p = subs.add_parser(
        "prove",
        help="print the Merkle inclusion path of a job's entries",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    common(p, keys=True)
    p.add_argument("--job", required=True, metavar="ID", help="job id")
    return parser


def _seq(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"--from needs a sequence number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError("--from must be >= 1")
    return value


# ---------------------------------------------------------------- reading


def load_file(path: Path) -> list[Record]:
    """Records of an export file; a line that is not a record is a CliError naming file:line."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UsageError(f"{path}: cannot read: {exc.strerror}") from None
    out: list[Record] = []
    for number, line in enumerate(data.splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            doc = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            raise CliError(f"{where}: not JSON: {exc}") from None
        if not isinstance(doc, dict):
            raise CliError(f"{where}: expected an object")
        if "format" in doc:
            if doc["format"] != FORMAT:
                raise CliError(f"{where}: format: {doc['format']!r} is not {FORMAT!r}")
            continue
        if "entry" in doc:
            out.append(Record(where, "entry", doc["entry"]))
        elif "snapshot" in doc:
            out.append(Record(where, "snapshot", doc["snapshot"]))
        else:
            raise CliError(f"{where}: neither an `entry` nor a `snapshot` line")
    return out


async def read_topics(bootstrap: str, prefix: str, *, quiet: bool) -> list[Record]:
    """Every record of `audit` then `audit-snapshots`, up to the end offsets seen at the start."""
    from cli.kafka_io import consumer, partitions_of

    kinds = {prefix + "audit": "entry", prefix + "audit-snapshots": "snapshot"}
    async with consumer(bootstrap) as client:
        # Partitions of both topics before any assign(): an assigned consumer only refreshes the
        # metadata of the topics it is assigned.
        parts = [tp for topic in kinds for tp in await partitions_of(client, topic)]
        client.assign(parts)
        await client.seek_to_beginning(*parts)
        begin = await client.beginning_offsets(parts)
        end = await client.end_offsets(parts)
        bar = _bar(sum(end[tp] - begin[tp] for tp in parts), "audit", quiet)
        remaining = {tp for tp in parts if end[tp] > begin[tp]}
        by_part: dict[Any, list[Record]] = {tp: [] for tp in parts}
        while remaining:
            batch = await client.getmany(*remaining, timeout_ms=1000, max_records=2000)
            for tp, records in batch.items():
                for r in records:
                    if r.offset >= end[tp]:
                        continue
                    try:
                        doc: Any = orjson.loads(r.value) if r.value is not None else None
                    except orjson.JSONDecodeError:
                        doc = None
                    kind: Any = kinds[tp.topic]
                    by_part[tp].append(Record(f"{tp.topic}/{r.partition}@{r.offset}", kind, doc))
                    bar.update(1)
            for tp in list(remaining):
                if await client.position(tp) >= end[tp]:
                    remaining.discard(tp)
        bar.close()
    return [record for tp in parts for record in by_part[tp]]


def _bar(total: int, desc: str, quiet: bool) -> Any:
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="rec", file=sys.stderr, disable=not progress_enabled(quiet))


def load(args: argparse.Namespace) -> list[Record]:
    if args.file:
        records = load_file(Path(args.file))
    else:
        from cli.kafka_io import default_bootstrap, default_prefix
        from cli.kafka_io import run as run_async

        bootstrap = default_bootstrap(args.bootstrap)
        prefix = default_prefix(args.topic_prefix)
        records = run_async(read_topics(bootstrap, prefix, quiet=args.quiet), bootstrap)
    if args.tenant:
        from streams.audit.verify import snapshot_tenant, tenant_of

        records = [
            r for r in records if (tenant_of(r) if r.kind == "entry" else snapshot_tenant(r)) == args.tenant
        ]
    return records


def trusted_keys(path: str | None) -> Any:
    if not path:
        raise UsageError("--public-keys is required (or set STELLA_PUBLIC_KEYS)")
    from cli.verify import load_trusted

    return load_trusted(path)


# ---------------------------------------------------------------- commands


def verify(args: argparse.Namespace) -> int:
    from streams.audit.verify import Problem, TenantReport, missing_jobs
    from streams.audit.verify import verify as check

    trusted = trusted_keys(args.public_keys)
    records = load(args)
    reports = check(records, trusted, tenant=args.tenant, start=args.start)
    if args.check_read_models:
        absent = missing_jobs(records, _read_model_jobs(args), tenant=args.tenant)
        if absent:
            where = "read models (jobs)"
            problem = Problem(
                args.tenant or "*",
                "missing-job",
                None,
                where,
                f"{len(absent)} job(s) have no `planned` entry, first {absent[0]}",
            )
            reports.append(TenantReport(args.tenant or "*", problems=[problem]))
    failed = [r for r in reports if not r.ok]
    if args.json:
        print_json(
            {
                "ok": not failed,
                "tenants": [
                    {
                        "tenant": r.tenant,
                        "ok": r.ok,
                        "entries": r.entries,
                        "duplicates": r.duplicates,
                        "snapshots": r.snapshots,
                        "head_seq": r.head_seq,
                        "sealed_through": r.sealed_through,
                        "unsealed": r.unsealed,
                        "problem": (
                            None
                            if r.ok
                            else {
                                "code": r.problems[0].code,
                                "seq": r.problems[0].seq,
                                "location": r.problems[0].location,
                                "message": r.problems[0].message,
                            }
                        ),
                    }
                    for r in reports
                ],
            }
        )
    else:
        print_table(
            ["tenant", "entries", "snapshots", "head", "sealed to", "result"],
            [
                (r.tenant, r.entries, r.snapshots, r.head_seq, r.sealed_through, "ok" if r.ok else "FAIL")
                for r in reports
            ],
        )
        for r in failed:
            sys.stderr.write(f"{PROG}: {r.problems[0]}\n")
        unsealed = sum(r.unsealed for r in reports if r.ok)
        if unsealed:
            sys.stdout.write(
                f"note: {unsealed} entr{'y is' if unsealed == 1 else 'ies are'} after the last signed snapshot "
                "(chained, but a truncation there would not show until the next snapshot)\n"
            )
        if not reports:
            sys.stdout.write("no audit records found\n")
    return EXIT_REJECTED if failed else EXIT_OK


def _read_model_jobs(args: argparse.Namespace) -> list[str]:

    from agents.settings import Settings
    from projections.mongo_store import active_prefix

    settings = Settings.from_env()
    url = args.mongo_url or settings.mongo_url
    db_name = args.db or settings.mongo_db
    with mongo_client(url) as client:
        query = {"tenant": args.tenant} if args.tenant else {}
        collection = client[db_name][active_prefix(client, db_name) + "jobs"]
        return [str(doc["_id"]) for doc in collection.find(query, {"_id": 1})]


def export(args: argparse.Namespace) -> int:
    from schemas.canonical import dumps

    records = load(args)
    entries = [r for r in records if r.kind == "entry"]
    snapshots = [r for r in records if r.kind == "snapshot"]
    header = {
        "format": FORMAT,
        "exported_at": datetime.now(UTC),
        "tenant": args.tenant,
        "entries": len(entries),
        "snapshots": len(snapshots),
        "verify": "stella-sched audit verify --file THIS_FILE --public-keys PUBLIC_KEY",
    }
    lines = [dumps(header)]
    lines += [dumps({"entry": r.doc}) for r in entries]
    lines += [dumps({"snapshot": r.doc}) for r in snapshots]
    data = b"\n".join(lines) + b"\n"
    if args.out == "-":
        sys.stdout.buffer.write(data)
    else:
        out = Path(args.out)
        tmp = out.with_name(f".{out.name}.tmp")
        tmp.write_bytes(data)
        tmp.replace(out)  # an interrupted export never leaves a half file under the real name
        sys.stderr.write(f"wrote {len(entries)} entries and {len(snapshots)} snapshots to {out}\n")
    return EXIT_OK


def prove(args: argparse.Namespace) -> int:
    from schemas.audit import AuditEntry, AuditSnapshot
    from streams.audit.proof import prove as inclusions
    from streams.audit.verify import open_snapshot

    trusted = trusted_keys(args.public_keys)
    records = load(args)
    entries = []
    for r in records:
        if r.kind == "entry" and isinstance(r.doc, dict) and r.doc.get("job_id") == args.job:
            entries.append(AuditEntry.model_validate(r.doc))
    if not entries:
        raise CliError(f"job {args.job}: no audit entries found")
    tenants = {e.tenant for e in entries}
    batch_entries = [
        AuditEntry.model_validate(r.doc)
        for r in records
        if r.kind == "entry" and isinstance(r.doc, dict) and r.doc.get("tenant") in tenants
    ]
    snapshots: list[AuditSnapshot] = []
    for r in records:
        if r.kind == "snapshot":
            snapshot, _error = open_snapshot(r, trusted)  # unverified snapshots prove nothing
            if snapshot is not None and snapshot.tenant in tenants:
                snapshots.append(snapshot)
    proofs = inclusions(batch_entries, snapshots, args.job)
    if args.json:
        print_json(
            {
                "job_id": args.job,
                "proofs": [
                    {
                        "tenant": p.entry.tenant,
                        "seq": p.entry.seq,
                        "kind": p.entry.kind,
                        "hlc": p.entry.hlc,
                        "link": p.entry.link,
                        "snapshot": p.snapshot.index if p.snapshot else None,
                        "root": p.snapshot.root if p.snapshot else None,
                        "leaf_index": p.leaf_index,
                        "tree_size": p.tree_size,
                        "leaf": p.leaf,
                        "path": list(p.path),
                        "verified": p.verified,
                    }
                    for p in proofs
                ],
            }
        )
    else:
        for p in proofs:
            head = f"seq {p.entry.seq} {p.entry.kind} hlc {p.entry.hlc} link {p.entry.link[:16]}…"
            if p.snapshot is None:
                sys.stdout.write(f"{head}\n  not sealed by a signed snapshot yet\n")
                continue
            state = "verified" if p.verified else "NOT verified"
            sys.stdout.write(
                f"{head}\n  snapshot #{p.snapshot.index} root {p.snapshot.root} ({state})\n"
                f"  leaf {p.leaf_index} of {p.tree_size}: {p.leaf}\n"
            )
            for level, sibling in enumerate(p.path):
                sys.stdout.write(f"    path[{level}] {sibling}\n")
    return EXIT_OK if all(p.verified for p in proofs) else EXIT_REJECTED


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parse_args(parser, argv)
    if isinstance(args, int):
        return args
    try:
        return {"verify": verify, "export": export, "prove": prove}[args.action](args)
    except CliError as exc:
        print(f"{PROG}: error: {exc.message}", file=sys.stderr)
        return exc.code


if __name__ == "__main__":
    sys.exit(main())
