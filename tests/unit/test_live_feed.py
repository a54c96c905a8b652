"""The live feed's ids and resume cut (projections.live_feed): a client that disconnects anywhere and comes
back with its Last-Event-ID gets every one of its events once, in the same order, and nobody else's."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from projections.live_feed import (
    BadEventId,
    Delivery,
    FeedRecord,
    advance,
    event_id,
    merged,
    parse_event_id,
    sse_frame,
)

TENANTS = ("acme", "beta", None)


@st.composite
def logs(draw: st.DrawFn) -> list[FeedRecord]:
    """Records of a few sources with increasing offsets (gaps allowed, as after compaction)."""
    out: list[FeedRecord] = []
    for source in draw(st.sets(st.tuples(st.integers(0, 1), st.integers(0, 3)), max_size=5)):
        offset = 0
        for _ in range(draw(st.integers(0, 12))):
            offset += draw(st.integers(1, 3))
            tenant = draw(st.sampled_from(TENANTS))
            ts = draw(st.integers(0, 50))
            out.append(FeedRecord(source, offset, ts, tenant, "run", {"n": f"{source}/{offset}"}))
    return out


def polls(records: list[FeedRecord], cuts: list[int]) -> list[list[FeedRecord]]:
    """The log as a consumer might hand it over: split at ``cuts`` (each poll a mix of sources)."""
    ordered = sorted(records, key=lambda r: (r.source, r.offset))
    bounds = sorted({min(c, len(ordered)) for c in cuts} | {0, len(ordered)})
    return [ordered[a:b] for a, b in itertools.pairwise(bounds)]


def read(cursor: dict[tuple[int, int], int], records: list[FeedRecord], tenant: str) -> list[Delivery]:
    """What a consumer seeking to ``cursor`` would deliver: it refetches from the cursor, so records below
    it may come again (the cut must drop them)."""
    out, _ = advance(cursor, records, tenant)
    return out


@settings(max_examples=300, deadline=None)
@given(logs(), st.sampled_from(("acme", "beta")), st.lists(st.integers(0, 60), max_size=4), st.data())
def test_resume_anywhere_no_gap_no_duplicate(
    records: list[FeedRecord], tenant: str, cuts: list[int], data: st.DataObject
) -> None:
    whole = read({}, records, tenant)
    # Sent in polls: the same deliveries (ids included) as in one go.
    cursor: dict[tuple[int, int], int] = {}
    polled: list[Delivery] = []
    for batch in polls(records, cuts):
        got, cursor = advance(cursor, batch, tenant)
        polled += got
    assert [d.data for d in polled] == [d.data for d in whole] or _same_multiset_per_source(polled, whole)
    # Disconnect after any k events, resume from the k-th id with a consumer that re-reads everything.
    k = data.draw(st.integers(0, len(whole)))
    start = parse_event_id(whole[k - 1].event_id) if k else {}
    resumed = read(start, records, tenant)
    assert [d.data for d in whole[:k]] + [d.data for d in resumed] == [d.data for d in whole]
    assert [d.event_id for d in whole[k:]] == [d.event_id for d in resumed]


def _same_multiset_per_source(a: list[Delivery], b: list[Delivery]) -> bool:
    # Split polls may interleave sources differently from one poll; per source the order is the same.
    def per_source(ds: list[Delivery]) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for d in ds:
            out.setdefault(d.data["n"].split("/")[0], []).append(d.data["n"])
        return out

    return per_source(a) == per_source(b)


@settings(max_examples=200, deadline=None)
@given(logs(), st.sampled_from(("acme", "beta")))
def test_ids_are_monotonic_and_only_the_tenants_events_are_sent(
    records: list[FeedRecord], tenant: str
) -> None:
    out, final = advance({}, records, tenant)
    seqs = [int(d.event_id.split(":")[0]) for d in out]
    assert seqs == sorted(seqs)
    assert len(set(seqs)) == len(seqs)
    assert len(out) == sum(1 for r in records if r.tenant == tenant)
    mine = {str(r.data["n"]) for r in records if r.tenant == tenant}
    assert {d.data["n"] for d in out} == mine
    # the final cursor is past every record
    for r in records:
        assert final[r.source] > r.offset


@settings(max_examples=200, deadline=None)
@given(logs())
def test_merge_keeps_each_source_in_offset_order(records: list[FeedRecord]) -> None:
    out = merged(records)
    assert sorted(out, key=lambda r: (r.source, r.offset)) == sorted(
        records, key=lambda r: (r.source, r.offset)
    )
    for source in {r.source for r in records}:
        offsets = [r.offset for r in out if r.source == source]
        assert offsets == sorted(offsets)


@given(st.dictionaries(st.tuples(st.integers(0, 1), st.integers(0, 500)), st.integers(0, 2**40), max_size=12))
def test_event_id_round_trips(cursor: dict[tuple[int, int], int]) -> None:
    assert parse_event_id(event_id(cursor)) == cursor


@pytest.mark.parametrize(
    "text",
    [
        "",
        "abc",
        "3:0-0-2",
        "2:0-0-2.0-0-0",
        "1:5-0-1",
        "1:0-0-1.x",
        "-1:0-0-1",
        "2:0-0-1.1-0-1.",
        "1:0-0-01x",
    ],
)
def test_foreign_ids_are_refused(text: str) -> None:
    with pytest.raises(BadEventId):
        parse_event_id(text)


def test_sse_frame() -> None:
    assert sse_frame("run", '{"a":1}', "1:0-0-1") == 'id: 1:0-0-1\nevent: run\ndata: {"a":1}\n\n'
    assert sse_frame("ready", "{}") == "event: ready\ndata: {}\n\n"
