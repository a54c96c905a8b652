"""The per-tenant hash chain and its batch snapshots (docs/audit-ledger.md).

A *fact* is one lifecycle step of a job or run, derived from a record that already flows through the
pipeline (``facts_of``). The chain stage folds a tenant's facts, in the order of the tenant-keyed
``audit-facts`` partition, into *entries*: each gets the next sequence number, an HLC timestamp whose
physical part is the fact's event time, and ``link = sha256(prev_link || canonical(body))``. Every
``every`` entries, or once the batch spans ``seconds`` of event time, the batch is closed by a *snapshot*:
its first/last sequence, the links around it, the entry count and the Merkle root over its entries.

Everything here is a pure function of the chain state and the fact, so replaying the same ``audit-facts``
log gives the same entries, links and snapshots byte for byte.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

import orjson
from pydantic import BaseModel

from schemas.audit import AuditEntry, AuditFact, AuditSnapshot, Kind
from schemas.canonical import dumps
from schemas.messages import (
    DeadLetter,
    JobAttempt,
    JobCancel,
    JobCommand,
    JobResult,
    JobStarted,
    RunEvent,
    SlaBreach,
)
from streams.audit import hlc, merkle

GENESIS = "0" * 64
SNAPSHOT_PAYLOAD_TYPE = "application/vnd.stella-sched.audit-snapshot+json"

JOB_KINDS: frozenset[str] = frozenset(
    {"planned", "started", "attempt-failed", "cancel-requested", "completed", "failed", "skipped"}
    | {"sla-breached", "dead-lettered"}
)
TERMINAL_JOB_KINDS: frozenset[str] = frozenset({"completed", "failed", "skipped"})


def _fact_id(kind: str, record: BaseModel) -> str:
    return hashlib.sha256(kind.encode() + b"\n" + dumps(record)).hexdigest()


def facts_of(message: Any) -> list[AuditFact]:
    """The lifecycle facts a pipeline record states (none for records that state none)."""

    def fact(kind: Kind, tenant: str, at: datetime, **extra: Any) -> AuditFact:
        return AuditFact(tenant=tenant, kind=kind, at=at, fact_id=_fact_id(kind, message), **extra)

    if isinstance(message, JobCommand):
        # The job stage enqueues exactly the job command on `jobs`: planned and enqueued are one record.
        ids = {"job_id": message.job_id, "run_id": message.run_id, "image_digest": message.image_digest}
        return [fact("planned", message.tenant, message.window_end, detail=message.priority, **ids)]
    if isinstance(message, JobStarted):
        ids = {"job_id": message.job_id, "run_id": message.run_id}
        return [fact("started", message.tenant, message.at, attempt=message.attempt, **ids)]
    if isinstance(message, JobAttempt):
        last = message.attempts[-1] if message.attempts else None
        return [
            fact(
                "attempt-failed",
                message.tenant,
                last.at if last else message.next_at,
                job_id=message.job_id,
                image_digest=message.image_digest,
                attempt=last.attempt if last else 0,
                detail=f"{last.outcome}: {last.error}" if last else "",
            )
        ]
    if isinstance(message, JobCancel):
        ids = {"job_id": message.job_id, "run_id": message.run_id, "image_digest": message.image_digest}
        return [fact("cancel-requested", message.tenant, message.at, **ids)]
    if isinstance(message, JobResult):
        ids = {"job_id": message.job_id, "run_id": message.run_id, "image_digest": message.image_digest}
        detail = message.error if message.status == "failed" else message.verdict
        return [
            fact(
                message.status,
                message.tenant,
                message.finished_at,
                attempt=len(message.attempts),
                detail=detail,
                **ids,
            )
        ]
    if isinstance(message, SlaBreach):
        ids = {"job_id": message.job_id, "run_id": message.run_id, "image_digest": message.image_digest}
        return [fact("sla-breached", message.tenant, message.at, detail=message.reason, **ids)]
    if isinstance(message, DeadLetter) and message.job is not None:
        job = message.job
        ids = {"job_id": job.job_id, "run_id": job.run_id, "image_digest": job.image_digest}
        return [fact("dead-lettered", job.tenant, message.at, detail=message.error, **ids)]
    if isinstance(message, RunEvent):
        kind: Kind = f"run-{message.state}"  # type: ignore[assignment]
        return [fact(kind, message.tenant, message.at, run_id=message.run_id)]
    return []


def body_bytes(entry: AuditEntry) -> bytes:
    """What a link hashes: the entry without ``prev`` (hashed in front) and ``link`` (the result)."""
    return dumps(entry.model_dump(mode="json", by_alias=True, exclude={"prev", "link"}))


def link_of(prev: str, body: bytes) -> str:
    return hashlib.sha256(bytes.fromhex(prev) + body).hexdigest()


def entry_leaf(entry: AuditEntry) -> bytes:
    """The Merkle leaf of an entry: RFC 6962 leaf hash of its whole canonical record."""
    return merkle.leaf_hash(dumps(entry))


@dataclass(frozen=True)
class SnapshotPolicy:
    every: int = 64  # entries per batch at most
    seconds: int = 300  # event-time span of a batch at most

    def __post_init__(self) -> None:
        if self.every < 1 or self.seconds < 0:
            raise ValueError("snapshot policy needs every >= 1 and seconds >= 0")


@dataclass(frozen=True)
class ChainState:
    """Table value of one tenant's chain (JSON). ``leaves`` are the open batch's Merkle leaves (hex)."""

    tenant: str
    seq: int = 0
    head: str = GENESIS
    hlc: str = ""
    snapshots: int = 0
    batch_prev: str = GENESIS
    batch_first_hlc: str = ""
    leaves: tuple[str, ...] = field(default_factory=tuple)

    def encode(self) -> bytes:
        return orjson.dumps(
            {
                "tenant": self.tenant,
                "seq": self.seq,
                "head": self.head,
                "hlc": self.hlc,
                "snapshots": self.snapshots,
                "batch_prev": self.batch_prev,
                "batch_first_hlc": self.batch_first_hlc,
                "leaves": list(self.leaves),
            },
            option=orjson.OPT_SORT_KEYS,
        )

    @classmethod
    def decode(cls, data: bytes) -> ChainState:
        raw = orjson.loads(data)
        return cls(
            tenant=raw["tenant"],
            seq=raw["seq"],
            head=raw["head"],
            hlc=raw["hlc"],
            snapshots=raw["snapshots"],
            batch_prev=raw["batch_prev"],
            batch_first_hlc=raw["batch_first_hlc"],
            leaves=tuple(raw["leaves"]),
        )


def _close(state: ChainState) -> tuple[ChainState, AuditSnapshot]:
    count = len(state.leaves)
    snapshot = AuditSnapshot(
        tenant=state.tenant,
        index=state.snapshots + 1,
        first_seq=state.seq - count + 1,
        last_seq=state.seq,
        count=count,
        prev=state.batch_prev,
        head=state.head,
        root=merkle.root([bytes.fromhex(leaf) for leaf in state.leaves]).hex(),
        first_hlc=state.batch_first_hlc,
        last_hlc=state.hlc,
    )
    closed = replace(state, snapshots=snapshot.index, batch_prev=state.head, batch_first_hlc="", leaves=())
    return closed, snapshot


def append(
    state: ChainState, fact: AuditFact, node: str, policy: SnapshotPolicy
) -> tuple[ChainState, AuditEntry | None, AuditSnapshot | None]:
    """Fold one fact into the chain: the entry it adds and the snapshot it closes, if any.

    A ``seal`` fact adds no entry; it closes the open batch (if any) so a quiet tenant's tail is covered
    by a signed root too."""
    if fact.kind == "seal":
        if not state.leaves:
            return state, None, None
        closed, snapshot = _close(state)
        return closed, None, snapshot
    last = hlc.Hlc.parse(state.hlc) if state.hlc else None
    stamp = hlc.tick(last, int(fact.at.timestamp()) * 1000, node)
    draft = AuditEntry(
        tenant=state.tenant,
        seq=state.seq + 1,
        hlc=str(stamp),
        kind=fact.kind,
        at=fact.at,
        fact_id=fact.fact_id,
        job_id=fact.job_id,
        run_id=fact.run_id,
        image_digest=fact.image_digest,
        attempt=fact.attempt,
        detail=fact.detail,
        prev=state.head,
        link=GENESIS,
    )
    entry = draft.model_copy(update={"link": link_of(state.head, body_bytes(draft))})
    first_hlc = state.batch_first_hlc or entry.hlc
    grown = replace(
        state,
        seq=entry.seq,
        head=entry.link,
        hlc=entry.hlc,
        batch_first_hlc=first_hlc,
        leaves=(*state.leaves, entry_leaf(entry).hex()),
    )
    span_ms = stamp.physical_ms - hlc.Hlc.parse(first_hlc).physical_ms
    if len(grown.leaves) >= policy.every or span_ms >= policy.seconds * 1000:
        closed, snapshot = _close(grown)
        return closed, entry, snapshot
    return grown, entry, None
