"""The hash chain, snapshot decisions and the verifier that names the first bad entry."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.canonical import dumps
from signing.dsse import sign
from signing.keys import SigningKey
from streams.audit.ledger import (
    GENESIS,
    SNAPSHOT_PAYLOAD_TYPE,
    AuditEntry,
    AuditFact,
    AuditSnapshot,
    ChainState,
    SnapshotPolicy,
    append,
    facts_of,
)
from streams.audit.proof import prove
from streams.audit.verify import Record, missing_jobs, verify

KEY = SigningKey.from_seed(b"\x07" * 32)
TRUSTED = {KEY.keyid: KEY.verify_key}
T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


def fact(n: int, at_s: int, kind: str = "planned", tenant: str = "acme") -> AuditFact:
    return AuditFact(
        tenant=tenant, kind=kind, at=T0 + timedelta(seconds=at_s), fact_id=f"{n:064x}", job_id=f"job-{n % 7}"
    )  # type: ignore[arg-type]


def build(
    times: list[int], policy: SnapshotPolicy, tenant: str = "acme", seal: bool = False
) -> tuple[ChainState, list[AuditEntry], list[AuditSnapshot]]:
    state = ChainState(tenant)
    entries: list[AuditEntry] = []
    snaps: list[AuditSnapshot] = []
    facts = [fact(n, t, tenant=tenant) for n, t in enumerate(times)]
    if seal:
        facts.append(AuditFact(tenant=tenant, kind="seal", at=T0, fact_id="seal"))
    for f in facts:
        state, entry, snap = append(state, f, "p0", policy)
        entries += [entry] if entry else []
        snaps += [snap] if snap else []
    return state, entries, snaps


def records(entries: list[AuditEntry], snaps: list[AuditSnapshot]) -> list[Record]:
    out = [Record(f"f:{i + 1}", "entry", orjson.loads(dumps(e))) for i, e in enumerate(entries)]
    for j, s in enumerate(snaps):
        envelope = sign(SNAPSHOT_PAYLOAD_TYPE, dumps(s), [KEY])
        out.append(Record(f"s:{j + 1}", "snapshot", orjson.loads(dumps(envelope))))
    return out


times = st.lists(st.integers(min_value=-3600, max_value=3600), min_size=1, max_size=60)
policies = st.builds(
    SnapshotPolicy, st.integers(min_value=1, max_value=10), st.integers(min_value=0, max_value=600)
)


@settings(deadline=None)  # signs and verifies: slow on a loaded machine, not wrong
@given(times, policies)
def test_chain_is_linked_sequenced_and_hlc_ordered(ts: list[int], policy: SnapshotPolicy) -> None:
    state, entries, snaps = build(ts, policy, seal=True)
    assert [e.seq for e in entries] == list(range(1, len(ts) + 1))
    assert entries[0].prev == GENESIS
    assert all(b.prev == a.link for a, b in itertools.pairwise(entries))
    stamps = [tuple(int(x) for x in e.hlc.split(":")[:2]) for e in entries]
    assert stamps == sorted(stamps)
    assert len(set(stamps)) == len(stamps)
    # snapshots tile the chain exactly once the tail is sealed
    assert [s.index for s in snaps] == list(range(1, len(snaps) + 1))
    assert snaps[0].first_seq == 1
    assert snaps[-1].last_seq == len(entries)
    assert all(b.first_seq == a.last_seq + 1 for a, b in itertools.pairwise(snaps))
    assert all(s.count <= policy.every for s in snaps)
    assert state.snapshots == len(snaps)
    assert state.leaves == ()
    assert ChainState.decode(state.encode()) == state
    reports = verify(records(entries, snaps), TRUSTED)
    assert [r.ok for r in reports] == [True], [str(p) for r in reports for p in r.problems]
    assert reports[0].sealed_through == len(entries)


@settings(deadline=None)
@given(times, policies)
def test_replay_gives_the_same_links(ts: list[int], policy: SnapshotPolicy) -> None:
    assert build(ts, policy) == build(ts, policy)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=100), min_size=4, max_size=30), st.data())
def test_verifier_names_the_tampered_entry(ts: list[int], data: st.DataObject) -> None:
    _, entries, snaps = build(ts, SnapshotPolicy(every=5, seconds=10_000), seal=True)
    recs = records(entries, snaps)
    n = len(entries)
    victim = data.draw(st.integers(min_value=1, max_value=n - 1))  # seq, not the last one
    deleted = [r for i, r in enumerate(recs) if i != victim - 1]
    assert _first(deleted) == ("deleted", victim)
    altered = list(recs)
    altered[victim - 1] = Record("f:x", "entry", {**recs[victim - 1].doc, "detail": "forged"})
    assert _first(altered) == ("altered", victim)
    swapped = list(recs)
    swapped[victim - 1], swapped[victim] = swapped[victim], swapped[victim - 1]
    assert _first(swapped) == ("reordered", victim)
    cut = data.draw(st.integers(min_value=1, max_value=n - 1))
    truncated = recs[:cut] + recs[n:]
    assert _first(truncated) == ("truncated", cut + 1)


def test_redelivered_entries_are_not_a_fork_but_a_different_one_is() -> None:
    _, entries, snaps = build([1, 2, 3, 4], SnapshotPolicy(every=2, seconds=60))
    recs = records(entries, snaps)
    again = recs[:3] + recs[1:3] + recs[3:]  # a crash re-sent seq 2..3
    (report,) = verify(again, TRUSTED)
    assert report.ok
    assert report.duplicates == 2
    forged = {**recs[1].doc, "detail": "x"}
    (report,) = verify([*recs[:3], Record("f:9", "entry", forged), *recs[3:]], TRUSTED)
    assert report.problems[0].code == "fork"
    assert report.problems[0].seq == 2


def test_snapshot_signature_and_gap() -> None:
    _, entries, snaps = build(list(range(6)), SnapshotPolicy(every=2, seconds=60))
    recs = records(entries, snaps)
    other = SigningKey.from_seed(b"\x08" * 32)
    (report,) = verify(recs, {other.keyid: other.verify_key})
    assert report.problems[0].code == "bad-signature"
    (report,) = verify([r for r in recs if r.location != "s:2"], TRUSTED)
    assert report.problems[0].code == "snapshot-gap"
    wrong = snaps[0].model_copy(update={"root": "00" * 32})
    bad = records(entries, [wrong, *snaps[1:]])
    (report,) = verify(bad, TRUSTED)
    assert report.problems[0].code == "snapshot-mismatch"
    assert report.problems[0].seq == 1


def test_tenants_are_independent_and_from_skips() -> None:
    _, a, sa = build([1, 2, 3], SnapshotPolicy(every=3, seconds=60), tenant="a")
    _, b, sb = build([1, 2], SnapshotPolicy(every=3, seconds=60), tenant="b")
    recs = records(a, sa) + records(b[1:], sb)
    reports = {r.tenant: r for r in verify(recs, TRUSTED)}
    assert reports["a"].ok
    assert not reports["b"].ok
    assert verify(recs, TRUSTED, tenant="b", start=2)[0].ok
    assert [r.tenant for r in verify(recs, TRUSTED, tenant="a")] == ["a"]


def test_time_based_snapshot_and_seal() -> None:
    state, _entries, snaps = build([0, 10, 400], SnapshotPolicy(every=100, seconds=300))
    assert [(s.first_seq, s.last_seq) for s in snaps] == [(1, 3)]
    state, entry, snap = append(
        state, AuditFact(tenant="acme", kind="seal", at=T0, fact_id="s"), "p0", SnapshotPolicy()
    )
    assert entry is None
    assert snap is None


def test_prove_every_entry_of_a_job() -> None:
    _, entries, snaps = build(list(range(20)), SnapshotPolicy(every=6, seconds=10_000), seal=True)
    proofs = prove(entries, snaps, "job-3")
    assert [p.entry.seq for p in proofs] == [e.seq for e in entries if e.job_id == "job-3"]
    assert all(p.verified and p.snapshot is not None for p in proofs)
    _, entries, snaps = build(list(range(3)), SnapshotPolicy(every=6, seconds=10_000))
    assert all(p.snapshot is None for p in prove(entries, snaps, "job-1"))


def test_facts_of_lifecycle_records() -> None:
    from schemas.messages import JobResult, RunEvent, SlaBreach

    result = JobResult(
        job_id="j",
        run_id="r",
        tenant="t",
        image_digest="sha256:a",
        priority="normal",
        status="completed",
        finished_at=T0,
    )
    (f,) = facts_of(result)
    assert (f.kind, f.tenant, f.job_id, f.at) == ("completed", "t", "j", T0)
    assert facts_of(result)[0].fact_id == f.fact_id  # a redelivery has the same id
    assert facts_of(RunEvent(run_id="r", tenant="t", state="completed", at=T0))[0].kind == "run-completed"
    breach = SlaBreach(
        job_id="j", run_id="r", tenant="t", image_digest="d", priority="high", deadline=T0, at=T0, reason="x"
    )
    assert facts_of(breach)[0].kind == "sla-breached"
    assert facts_of(object()) == []


def test_missing_jobs() -> None:
    _, entries, snaps = build([1, 2], SnapshotPolicy())
    assert missing_jobs(records(entries, snaps), ["job-0", "job-1", "job-9"]) == ["job-9"]


def _first(recs: list[Record]) -> tuple[str, int | None]:
    (report,) = verify(recs, TRUSTED)
    assert report.problems, "tampering went unnoticed"
    return report.problems[0].code, report.problems[0].seq
