"""The audit ledger's message contracts (docs/audit-ledger.md): the lifecycle facts re-keyed by tenant, the
chain entries on ``audit`` and the signed batch snapshots. The chain logic that makes them lives in
streams/audit/; this package holds only their shape, like every other topic's contract."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.messages import Timestamp

Kind = Literal[
    "planned",
    "started",
    "attempt-failed",
    "cancel-requested",
    "completed",
    "failed",
    "skipped",
    "sla-breached",
    "dead-lettered",
    "run-planning",
    "run-queued",
    "run-running",
    "run-completed",
    "run-cancelled",
    "run-error",
    "seal",
]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class AuditFact(_Model):
    """One lifecycle step, re-keyed by tenant onto ``audit-facts``. ``seal`` closes the open batch."""

    schema_id: Literal["scheduler.audit-fact@1"] = Field("scheduler.audit-fact@1", alias="schema")
    tenant: str
    kind: Kind
    at: Timestamp
    fact_id: str = Field(description="sha256 of kind and the canonical source record: duplicates share it")
    job_id: str = ""
    run_id: str = ""
    image_digest: str = ""
    attempt: int = 0
    detail: str = ""


class AuditEntry(_Model):
    """One link of a tenant's chain, on the ``audit`` topic (key: tenant)."""

    schema_id: Literal["scheduler.audit-entry@1"] = Field("scheduler.audit-entry@1", alias="schema")
    tenant: str
    seq: int
    hlc: str
    kind: Kind
    at: Timestamp
    fact_id: str
    job_id: str = ""
    run_id: str = ""
    image_digest: str = ""
    attempt: int = 0
    detail: str = ""
    prev: str
    link: str


class AuditSnapshot(_Model):
    """A closed batch of a tenant's chain; signed as the payload of a DSSE envelope."""

    schema_id: Literal["scheduler.audit-snapshot@1"] = Field("scheduler.audit-snapshot@1", alias="schema")
    tenant: str
    index: int = Field(description="1, 2, ... per tenant: a missing index is a missing snapshot")
    first_seq: int
    last_seq: int
    count: int
    prev: str = Field(description="link before the batch's first entry (GENESIS for the first batch)")
    head: str = Field(description="link of the batch's last entry")
    root: str = Field(description="hex Merkle root (RFC 6962 hashing) over the batch's entries")
    first_hlc: str
    last_hlc: str


AUDIT_MODELS: list[type[BaseModel]] = [AuditFact, AuditEntry, AuditSnapshot]
