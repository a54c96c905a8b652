"""The audit_snapshots read model: one document per tenant and snapshot index, envelope included."""

from __future__ import annotations

from projections.fold import AUDIT_SNAPSHOTS, Position, apply_all, fold
from schemas.canonical import dumps
from schemas.codec import Decoded, decode
from signing.dsse import sign
from streams.audit.ledger import SNAPSHOT_PAYLOAD_TYPE, SnapshotPolicy
from tests.unit.test_audit_ledger import KEY, build


def test_snapshots_fold_into_documents() -> None:
    _, _, snaps = build(list(range(9)), SnapshotPolicy(every=4, seconds=10_000), seal=True)
    state: dict = {}  # type: ignore[type-arg]
    for offset, snap in enumerate(snaps):
        raw = dumps(sign(SNAPSHOT_PAYLOAD_TYPE, dumps(snap), [KEY]))
        decoded = decode("audit-snapshots", b"acme", raw, 1 << 20)
        assert isinstance(decoded, Decoded)
        updates = fold(decoded.model, Position("audit-snapshots", 0, offset))
        state = apply_all(state, updates)
        state = apply_all(state, updates)  # a redelivery changes nothing
    docs = state[AUDIT_SNAPSHOTS]
    assert sorted(docs) == ["acme/1", "acme/2", "acme/3"]
    assert docs["acme/3"]["last_seq"] == 9
    assert docs["acme/1"]["root"] == snaps[0].root
    assert docs["acme/1"]["envelope"]["payloadType"] == SNAPSHOT_PAYLOAD_TYPE


def test_other_envelopes_are_not_snapshots() -> None:
    envelope = sign("application/vnd.in-toto+json", b"{}", [KEY])
    assert fold(envelope, Position("audit-snapshots", 0, 0)) == []
    broken = envelope.model_copy(update={"payloadType": SNAPSHOT_PAYLOAD_TYPE, "payload": "!!"})
    assert fold(broken, Position("audit-snapshots", 0, 1)) == []
