"""The audit ledger's shell (docs/audit-ledger.md): two agents around streams/audit.

* ``audit-collect`` (stateless) reads the lifecycle records that already flow (jobs, job-attempts,
  job-results, run-inputs, run-events, sla-breaches, deadletter), derives their facts
  (``streams.audit.ledger.facts_of``) and re-keys them by tenant onto ``audit-facts``.
* ``audit-chain`` owns the chains: it folds a tenant's facts, in ``audit-facts`` partition order, into
  entries on ``audit`` and DSSE-signed snapshots on ``audit-snapshots``. The chain state (seq, head link,
  HLC, open batch) lives in the changelog-backed ``audit-chains`` table under the tenant, guarded by source
  position like every table (streams/guard.py). A tenant's facts are all in one partition, so one worker
  at a time extends its chain, and after a rebalance the new owner continues from the recovered table.

A fact already chained (same ``fact_id``: a redelivered or republished lifecycle record) is skipped via
``audit-seen``. A quiet tenant's open batch is sealed after ``STELLA_AUDIT_SEAL_SECONDS`` of wall-clock
silence by a ``seal`` fact sent through ``audit-facts`` (so the fold stays a function of that log).
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import faust

from agents.pipeline import Pipeline
from agents.shell import Output, apply_guarded, publish, read, write
from schemas.audit import AuditFact
from schemas.canonical import dumps
from schemas.codec import Decoded, decode
from schemas.messages import JobStarted
from signing.dsse import sign
from signing.keys import SigningKey
from streams.audit.ledger import (
    SNAPSHOT_PAYLOAD_TYPE,
    ChainState,
    SnapshotPolicy,
    append,
    facts_of,
)
from streams.guard import Guarded, source_of
from streams.guard import decode as unguard
from streams.guard import encode as encode_guarded

log = logging.getLogger("stella.audit")
LIFECYCLE_TOPICS = (
    "jobs",
    "job-attempts",
    "job-results",
    "run-inputs",
    "run-events",
    "sla-breaches",
    "deadletter",
)


@dataclass(frozen=True)
class AuditConfig:
    policy: SnapshotPolicy
    seal_seconds: float

    @classmethod
    def from_env(cls) -> AuditConfig:
        every = int(os.environ.get("STELLA_AUDIT_SNAPSHOT_EVERY", "64"))
        seconds = int(os.environ.get("STELLA_AUDIT_SNAPSHOT_SECONDS", "300"))
        return cls(SnapshotPolicy(every, seconds), float(os.environ.get("STELLA_AUDIT_SEAL_SECONDS", "30")))


def register(pipe: Pipeline, key: SigningKey, config: AuditConfig | None = None) -> None:
    app, settings = pipe.app, pipe.settings
    config = config or AuditConfig.from_env()
    chains = pipe.table("audit-chains")
    seen = pipe.table("audit-seen")
    last_activity: dict[str, float] = {}  # wall clock, this process: only decides *when* to seal
    sealed: dict[str, int] = {}  # tenant -> seq a seal was last sent for

    @app.agent(pipe.source(*LIFECYCLE_TOPICS), name="audit-collect")
    async def collect_agent(stream: faust.StreamT[Any]) -> None:
        async def handle(event: faust.EventT[Any]) -> None:
            # The stage owning the topic dead-letters what does not decode; a second letter would only
            # duplicate it (and on `deadletter` itself would loop).
            result = decode(pipe.logical_of(event), event.key, event.value, settings.max_message_bytes)
            if not isinstance(result, Decoded) or result.model is None:
                return
            if result.topic == "run-inputs" and not isinstance(result.model, JobStarted):
                return  # its job commands and results are read from their own topics
            facts = facts_of(result.model)
            if facts:
                await publish([pipe.out("audit-facts", f.tenant, f) for f in facts])

        await pipe.run(stream, "audit-collect", handle, batched=True)

    @app.agent(pipe.source("audit-facts"), name="audit-chain")
    async def chain_agent(stream: faust.StreamT[Any]) -> None:
        async def handle(event: faust.EventT[Any]) -> None:
            decoded = await pipe.decode(event)
            if decoded is None or not isinstance(decoded.model, AuditFact):
                return
            fact = decoded.model
            message = event.message
            here = f"{source_of(message.topic, message.partition)}@{message.offset}".encode()
            seen_key = f"{fact.tenant}/{fact.fact_id}"
            marker = unguard(read(seen, seen_key)).state
            # A marker written by this very input (a crash between the two table writes) is no duplicate.
            if fact.kind != "seal" and marker is not None and marker != here:
                return
            node = f"p{message.partition}"

            def fold(state: bytes | None) -> tuple[bytes | None, list[Output]]:
                chain = ChainState.decode(state) if state else ChainState(fact.tenant)
                chain, entry, snapshot = append(chain, fact, node, config.policy)
                outputs = []
                if entry is not None:
                    outputs.append(pipe.out("audit", fact.tenant, entry))
                if snapshot is not None:
                    envelope = sign(SNAPSHOT_PAYLOAD_TYPE, dumps(snapshot), [key])
                    outputs.append(pipe.out("audit-snapshots", fact.tenant, dumps(envelope)))
                return chain.encode(), outputs

            if await apply_guarded(chains, fact.tenant, event, fold) and fact.kind != "seal":
                write(seen, seen_key, encode_guarded(Guarded(here)), event)
            last_activity[fact.tenant] = time.monotonic()

        await pipe.run(stream, "audit-chain", handle, batched=True)

    @app.timer(interval=max(1.0, config.seal_seconds / 3))
    async def seal_quiet_chains() -> None:
        now = time.monotonic()
        outputs = []
        for tenant, raw in list(chains.items()):
            state = unguard(raw).state
            if not state:
                continue
            chain = ChainState.decode(state)
            if not chain.leaves or sealed.get(tenant) == chain.seq:
                continue
            if now - last_activity.setdefault(tenant, now) < config.seal_seconds:
                continue
            seal = AuditFact(
                tenant=tenant,
                kind="seal",
                at=datetime.now(UTC),
                fact_id=f"seal/{chain.seq}",
            )
            outputs.append(pipe.out("audit-facts", tenant, seal))
            sealed[tenant] = chain.seq
        if outputs:
            await publish(outputs)
            log.info("sealed the open audit batch of %d quiet tenant(s)", len(outputs))
