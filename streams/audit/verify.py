"""The offline verifier: checks a tenant's chain, its signed snapshots and their Merkle roots, and names
the first bad entry (docs/audit-ledger.md).

Records are checked in the order they were read (topic partition order, or the lines of an export): an
entry must carry the next sequence number and the previous entry's link, and its link must hash its
content. Kafka is at-least-once, so a byte-identical repeat of an entry already accepted is a redelivery
and skipped; a *different* entry with a sequence number already taken is a fork.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import ValidationError

from schemas.audit import AuditEntry, AuditSnapshot
from schemas.canonical import dumps
from signing.dsse import verify as verify_envelope
from streams.audit import merkle
from streams.audit.ledger import (
    GENESIS,
    SNAPSHOT_PAYLOAD_TYPE,
    body_bytes,
    entry_leaf,
    link_of,
)

RecordKind = Literal["entry", "snapshot"]
Code = Literal[
    "malformed",
    "altered",
    "broken-link",
    "deleted",
    "reordered",
    "fork",
    "truncated",
    "bad-signature",
    "snapshot-gap",
    "snapshot-mismatch",
    "missing-job",
]


@dataclass(frozen=True)
class Record:
    location: str  # file:line or topic/partition@offset
    kind: RecordKind
    doc: Any  # an entry (dict) or a DSSE envelope (dict) of a snapshot


@dataclass(frozen=True)
class Problem:
    tenant: str
    code: Code
    seq: int | None
    location: str
    message: str

    def __str__(self) -> str:
        where = f"seq {self.seq} " if self.seq is not None else ""
        return f"tenant {self.tenant}: {where}at {self.location}: {self.code}: {self.message}"


@dataclass
class TenantReport:
    tenant: str
    entries: int = 0
    duplicates: int = 0
    snapshots: int = 0
    sealed_through: int = 0  # last seq covered by a verified snapshot
    head_seq: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def unsealed(self) -> int:
        return max(0, self.head_seq - self.sealed_through)


def tenant_of(record: Record) -> str | None:
    doc = record.doc
    if record.kind == "entry":
        return doc.get("tenant") if isinstance(doc, Mapping) and isinstance(doc.get("tenant"), str) else None
    return None


@dataclass
class _Chain:
    report: TenantReport
    accepted: dict[int, tuple[str, AuditEntry]] = field(default_factory=dict)


def _check_chain(tenant: str, records: Sequence[Record], start: int) -> _Chain:
    chain = _Chain(TenantReport(tenant))
    report = chain.report
    parsed: list[tuple[str, AuditEntry]] = []
    for record in records:
        try:
            entry = AuditEntry.model_validate(record.doc)
        except (ValidationError, ValueError, TypeError) as exc:
            report.problems.append(
                Problem(tenant, "malformed", None, record.location, f"not an audit entry: {exc}")
            )
            return chain
        if entry.seq >= start:
            parsed.append((record.location, entry))
    expected, prev = start, None
    where_prev = "(start)"
    for index, (location, entry) in enumerate(parsed):
        if entry.seq < expected:
            seen = chain.accepted.get(entry.seq)
            if seen is not None and dumps(seen[1]) == dumps(entry):
                report.duplicates += 1
                continue
            first = seen[0] if seen else "?"
            report.problems.append(
                Problem(
                    tenant,
                    "fork",
                    entry.seq,
                    location,
                    f"a different entry with seq {entry.seq} was already accepted at {first} (forked chain "
                    "or altered copy)",
                )
            )
            return chain
        if entry.seq > expected:
            later = next((loc for loc, e in parsed[index + 1 :] if e.seq == expected), None)
            if later is not None:
                message = (
                    f"seq {entry.seq} comes before seq {expected} (found later at {later}): entries swapped "
                    "or reordered"
                )
                report.problems.append(Problem(tenant, "reordered", expected, location, message))
            else:
                message = (
                    f"entry seq {expected} is missing (deleted): {where_prev} is followed by seq {entry.seq}"
                )
                report.problems.append(Problem(tenant, "deleted", expected, location, message))
            return chain
        if prev is None:
            prev = entry.prev if expected > 1 else GENESIS
        if entry.prev != prev:
            report.problems.append(
                Problem(
                    tenant,
                    "broken-link",
                    entry.seq,
                    location,
                    f"prev {entry.prev[:16]}… is not the link of seq {entry.seq - 1} ({prev[:16]}… at "
                    f"{where_prev}): an entry before it was altered or replaced",
                )
            )
            return chain
        if link_of(entry.prev, body_bytes(entry)) != entry.link:
            report.problems.append(
                Problem(tenant, "altered", entry.seq, location, "content does not hash to its link (altered)")
            )
            return chain
        chain.accepted[entry.seq] = (location, entry)
        report.entries += 1
        report.head_seq = entry.seq
        expected, prev, where_prev = entry.seq + 1, entry.link, f"seq {entry.seq} at {location}"
    return chain


def open_snapshot(record: Record, trusted: Mapping[str, Any]) -> tuple[AuditSnapshot | None, str]:
    result = verify_envelope(record.doc, trusted, payload_type=SNAPSHOT_PAYLOAD_TYPE)
    if not result.ok:
        return None, f"{result.error}: {result.detail}"
    try:
        return AuditSnapshot.model_validate(result.statement), ""
    except (ValidationError, ValueError, TypeError) as exc:
        return None, f"signed payload is not an audit snapshot: {exc}"


def snapshot_tenant(record: Record) -> str | None:
    """The tenant a snapshot envelope claims, read without verifying (only to group records)."""
    import base64
    import binascii

    import orjson

    doc = record.doc
    if not isinstance(doc, Mapping) or not isinstance(doc.get("payload"), str):
        return None
    try:
        payload = orjson.loads(base64.b64decode(doc["payload"]))
    except (binascii.Error, ValueError, orjson.JSONDecodeError):
        return None
    tenant = payload.get("tenant") if isinstance(payload, Mapping) else None
    return tenant if isinstance(tenant, str) else None


def _check_snapshots(
    chain: _Chain, records: Sequence[Record], trusted: Mapping[str, Any], start: int
) -> None:
    report = chain.report
    tenant = report.tenant
    by_index: dict[int, tuple[str, AuditSnapshot]] = {}
    for record in records:
        snapshot, error = open_snapshot(record, trusted)
        if snapshot is None:
            report.problems.append(Problem(tenant, "bad-signature", None, record.location, error))
            return
        seen = by_index.get(snapshot.index)
        if seen is not None and seen[1] != snapshot:
            report.problems.append(
                Problem(
                    tenant,
                    "fork",
                    None,
                    record.location,
                    f"two different signed snapshots #{snapshot.index} (other at {seen[0]})",
                )
            )
            return
        by_index[snapshot.index] = (record.location, snapshot)
    report.snapshots = len(by_index)
    chain_ok = not report.problems
    expected_first = None
    for index in sorted(by_index):
        location, snapshot = by_index[index]
        if snapshot.last_seq < start:
            expected_first = snapshot.last_seq + 1
            continue
        if expected_first is not None and snapshot.first_seq != expected_first:
            report.problems.append(
                Problem(
                    tenant,
                    "snapshot-gap",
                    expected_first,
                    location,
                    f"snapshot #{index} starts at seq {snapshot.first_seq}, the previous one ended at seq "
                    f"{expected_first - 1} (a snapshot is missing)",
                )
            )
            return
        expected_first = snapshot.last_seq + 1
        if snapshot.count != snapshot.last_seq - snapshot.first_seq + 1:
            report.problems.append(
                Problem(tenant, "snapshot-mismatch", None, location, f"snapshot #{index}: count disagrees")
            )
            return
        if not chain_ok:
            continue  # the chain already named its first bad entry; roots over it prove nothing more
        if snapshot.last_seq > report.head_seq:
            report.problems.append(
                Problem(
                    tenant,
                    "truncated",
                    report.head_seq + 1,
                    location,
                    f"the chain ends at seq {report.head_seq} but signed snapshot #{index} covers seq "
                    f"{snapshot.first_seq}..{snapshot.last_seq}: entries {report.head_seq + 1}.."
                    f"{snapshot.last_seq} are missing (tail truncated)",
                )
            )
            return
        if snapshot.first_seq < start:
            continue  # only partly inside a --from range: its root needs entries not read
        entries = [chain.accepted[seq][1] for seq in range(snapshot.first_seq, snapshot.last_seq + 1)]
        root = merkle.root([entry_leaf(e) for e in entries]).hex()
        if root != snapshot.root or entries[0].prev != snapshot.prev or entries[-1].link != snapshot.head:
            report.problems.append(
                Problem(
                    tenant,
                    "snapshot-mismatch",
                    snapshot.first_seq,
                    location,
                    f"snapshot #{index} (seq {snapshot.first_seq}..{snapshot.last_seq}) does not match the "
                    "entries: Merkle root or boundary links differ",
                )
            )
            return
        report.sealed_through = snapshot.last_seq


def verify(
    records: Iterable[Record], trusted: Mapping[str, Any], *, tenant: str | None = None, start: int = 1
) -> list[TenantReport]:
    """One report per tenant (sorted); each names its first problem. ``start``: first seq to check."""
    entries: dict[str, list[Record]] = {}
    snapshots: dict[str, list[Record]] = {}
    orphans: list[Problem] = []
    for record in records:
        owner = tenant_of(record) if record.kind == "entry" else snapshot_tenant(record)
        if owner is None:
            orphans.append(Problem("?", "malformed", None, record.location, f"not an audit {record.kind}"))
            continue
        if tenant is not None and owner != tenant:
            continue
        (entries if record.kind == "entry" else snapshots).setdefault(owner, []).append(record)
    reports = []
    for name in sorted(set(entries) | set(snapshots)):
        chain = _check_chain(name, entries.get(name, []), start)
        _check_snapshots(chain, snapshots.get(name, []), trusted, start)
        reports.append(chain.report)
    if orphans:
        reports.append(TenantReport("?", problems=orphans[:1]))
    return reports


def missing_jobs(
    records: Iterable[Record], job_ids: Iterable[str], *, tenant: str | None = None
) -> list[str]:
    """Jobs known elsewhere (the read models) without a ``planned`` entry in the chain, sorted."""
    planned = {
        r.doc.get("job_id")
        for r in records
        if r.kind == "entry"
        and isinstance(r.doc, Mapping)
        and r.doc.get("kind") == "planned"
        and (tenant is None or r.doc.get("tenant") == tenant)
    }
    return sorted(set(job_ids) - planned)
