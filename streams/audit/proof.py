"""Inclusion proofs for a job's entries: which signed snapshot covers each, and the Merkle path from the
entry's leaf to that snapshot's root (RFC 6962 audit path)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from schemas.audit import AuditEntry, AuditSnapshot
from streams.audit import merkle
from streams.audit.ledger import entry_leaf


@dataclass(frozen=True)
class Inclusion:
    entry: AuditEntry
    snapshot: AuditSnapshot | None  # None: not sealed yet (after the last snapshot)
    leaf_index: int = 0
    tree_size: int = 0
    leaf: str = ""
    path: tuple[str, ...] = ()
    verified: bool = False


def prove(entries: Sequence[AuditEntry], snapshots: Sequence[AuditSnapshot], job_id: str) -> list[Inclusion]:
    """One inclusion per entry of ``job_id`` (in seq order), each proved against its snapshot's root."""
    by_seq = {(e.tenant, e.seq): e for e in entries}
    out = []
    for entry in sorted((e for e in entries if e.job_id == job_id), key=lambda e: (e.tenant, e.seq)):
        snapshot = next(
            (s for s in snapshots if s.tenant == entry.tenant and s.first_seq <= entry.seq <= s.last_seq),
            None,
        )
        if snapshot is None:
            out.append(Inclusion(entry, None))
            continue
        batch = [by_seq.get((entry.tenant, seq)) for seq in range(snapshot.first_seq, snapshot.last_seq + 1)]
        if any(e is None for e in batch):
            out.append(Inclusion(entry, snapshot))  # entries of the batch are missing: no proof
            continue
        leaves = [entry_leaf(e) for e in batch if e is not None]
        index = entry.seq - snapshot.first_seq
        path = merkle.inclusion_proof(leaves, index)
        ok = merkle.verify_inclusion(leaves[index], index, len(leaves), path, bytes.fromhex(snapshot.root))
        out.append(
            Inclusion(
                entry,
                snapshot,
                leaf_index=index,
                tree_size=len(leaves),
                leaf=leaves[index].hex(),
                path=tuple(p.hex() for p in path),
                verified=ok,
            )
        )
    return out
