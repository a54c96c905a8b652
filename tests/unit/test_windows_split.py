"""The stream's split window state (streams.windows, "the stream's split state"): an index per tenant and
one entry per pending job. Folding through it gives the jobs of the whole-state fold, byte for byte, also
when a crash stops a fold's writes part-way and its records are redelivered in other batches."""

from __future__ import annotations

from collections.abc import Callable

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas.canonical import dumps
from schemas.messages import Impact
from streams.jobs import PendingJob
from streams.windows import (
    INLINE_REASONS,
    Needed,
    WindowIndex,
    WindowState,
    add_impact,
    add_impacts,
    all_entries,
    decode_index,
    encode_index,
    encode_windows,
    entries_needed,
    flush_idle,
    fold_split,
    is_index_key,
    load_entries,
    store_changes,
)
from tests.unit.test_windows import impact

W, GRACE = 30, 10
TENANT = "t1"


class Store:
    """The table: bytes by key, written in order; `crash_after` stops a fold's writes after that many."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}
        self.completed = True
        self.budget = INLINE_REASONS
        self.missing: list[str] = []  # chunks the folds reported lost

    def index(self) -> tuple[WindowIndex, dict[tuple[int, tuple[str, str]], PendingJob]]:
        raw = self.data.get(TENANT)
        return decode_index(raw) if raw is not None else (WindowIndex(), {})

    def fold(
        self,
        needed: Callable[[WindowIndex], Needed],
        step: Callable[[WindowState], tuple[WindowState, list]],  # type: ignore[type-arg]
        crash_after: int | None = None,
    ) -> list[bytes]:
        """The fold's jobs; with `crash_after`, the writes stop there, and if the index was not written the
        index's guard (not modelled here) has not seen the records, so they are folded again."""
        index, carried = self.index()
        loaded = load_entries(self.data.get, TENANT, index, needed(index), carried, self.missing)
        result = fold_split(index, loaded, step, self.budget)
        writes = store_changes(TENANT, result)
        self.completed = crash_after is None or crash_after >= len(writes)
        for key, value in writes[:crash_after]:
            if value is None:
                self.data.pop(key, None)
            else:
                self.data[key] = value
        return [dumps(j) for j in result.jobs]


def whole(impacts: list[Impact]) -> list[bytes]:
    state, out = None, []
    for i in impacts:
        state, jobs = add_impact(state, i, W, GRACE)
        out += [dumps(j) for j in jobs]
    _, jobs = flush_idle(state, W)
    return out + [dumps(j) for j in jobs]


def add(impacts: list[Impact]) -> tuple[Callable[[WindowIndex], Needed], Callable[[WindowState], tuple]]:  # type: ignore[type-arg]
    return (
        lambda index: entries_needed(index, impacts, W, GRACE),
        lambda state: add_impacts(state, impacts, W, GRACE),
    )


def flush() -> tuple[Callable[[WindowIndex], Needed], Callable[[WindowState], tuple]]:  # type: ignore[type-arg]
    return all_entries, lambda state: flush_idle(state, W)


rows = st.lists(
    st.tuples(st.sampled_from(["d1", "d2", "d3", "d4"]), st.integers(0, 200), st.sampled_from("ABC")),
    max_size=40,
)


@settings(max_examples=150)
@given(rows, st.data())
def test_split_folds_with_crashes_give_the_whole_state_jobs(
    rows: list[tuple[str, int, str]], data: st.DataObject
) -> None:
    impacts = [impact(d, at, rid=f"{rid}{at % 5}") for d, at, rid in rows]
    expected = whole(impacts)
    store, out, done = Store(), [], 0
    # 0: every window spills at once (all chunked); a few: some stay inline, some spill; default: inline.
    store.budget = data.draw(st.sampled_from([0, 3, 12, INLINE_REASONS]), label="inline budget")
    while done < len(impacts):
        end = data.draw(st.integers(done + 1, len(impacts)), label="batch end")
        batch = impacts[done:end]
        if data.draw(st.booleans(), label="crash"):
            cut = data.draw(st.integers(0, 40), label="writes before the crash")
            crashed = store.fold(*add(batch), crash_after=cut)
            if store.completed:  # the index was written: the guard skips the redelivered records
                out += crashed
                done = end
                continue
            # Redelivered: the same records again, maybe regrouped (a shorter batch first).
            end = data.draw(st.integers(done + 1, end), label="redelivered batch end")
            again = store.fold(*add(impacts[done:end]))
            if end == done + len(batch):
                assert again == crashed  # byte-identical re-publication
            out += again
        else:
            out += store.fold(*add(batch))
        done = end
    out += store.fold(*flush())
    assert out == expected
    # Nothing but the index and the open windows' entries is left after one more fold deletes the closed.
    store.fold(*add([]))
    index, _ = store.index()
    assert index.open == {}
    assert [k for k in store.data if not is_index_key(k)] == []


@settings(max_examples=150)
@given(rows, st.data())
def test_a_lost_chunk_is_folded_without_and_stops_no_later_fold(
    rows: list[tuple[str, int, str]], data: st.DataObject
) -> None:
    impacts = [impact(d, at, rid=f"{rid}{at % 5}") for d, at, rid in rows]
    expected = {(j["image_digest"], j["window_start"]): j for j in map(orjson.loads, whole(impacts))}
    store, out, done, lost = Store(), [], 0, []
    store.budget = 0  # every window chunked: a chunk is what a lost table write loses
    while done < len(impacts):
        end = data.draw(st.integers(done + 1, len(impacts)), label="batch end")
        out += store.fold(*add(impacts[done:end]))
        done = end
        chunks = sorted(k for k in store.data if not is_index_key(k))
        if chunks and data.draw(st.booleans(), label="lose a chunk"):
            name = data.draw(st.sampled_from(chunks), label="lost chunk")
            del store.data[name]
            lost.append(name)
    out += store.fold(*flush())
    got = {(j["image_digest"], j["window_start"]): j for j in map(orjson.loads, out)}
    assert got.keys() == expected.keys()  # every image of every window is still re-evaluated
    for key, job in got.items():
        reasons = {(r["source"], r["id"]) for r in job["reasons"]}
        assert reasons <= {(r["source"], r["id"]) for r in expected[key]["reasons"]}
    assert set(store.missing) <= set(lost)  # reported, never invented
    if not lost:
        assert out == whole(impacts)


def test_a_lost_chunk_is_reported_and_keeps_the_others() -> None:
    store = Store()
    store.budget = 0
    store.fold(*add([impact("d1", 1, rid="A"), impact("d2", 2, rid="B")]))
    store.fold(*add([impact("d1", 3, rid="C")]))
    first = next(k for k in store.data if k.endswith("\x1fd1\x1f0"))
    del store.data[first]  # d1's first chunk (reason A) is lost; its second (C) is there
    jobs = [orjson.loads(j) for j in store.fold(*flush())]
    assert store.missing == [first]
    assert {j["image_digest"]: [r["id"] for r in j["reasons"]] for j in jobs} == {"d1": ["C"], "d2": ["B"]}


def test_an_index_from_before_the_split_carries_its_entries_over() -> None:
    first = [impact("d1", 1, rid="A"), impact("d2", 2, rid="B")]
    state, _ = add_impacts(None, first, W, GRACE)
    store = Store()
    store.data[TENANT] = encode_windows(state)  # the whole state, as written before the split
    later = [impact("d1", 5, rid="C"), impact("d3", 12, rid="D")]  # the window stays open
    out = store.fold(*add(later))
    assert sorted(k for _, (_, k) in store.index()[1]) == ["d1", "d2", "d3"]  # inline in the new index
    out += store.fold(*add([impact("d4", 70, rid="E")])) + store.fold(*flush())
    assert out == whole([*first, *later, impact("d4", 70, rid="E")])


def test_a_window_closed_without_its_entries_is_refused() -> None:
    store = Store()
    store.budget = 0  # chunked
    store.fold(*add([impact("d1", 1), impact("d2", 2)]))
    index, _ = store.index()
    with pytest.raises(ValueError, match="closed without 2 of its entries"):
        fold_split(index, {}, lambda state: flush_idle(state, W))


def test_index_round_trips() -> None:
    store = Store()
    store.budget = 0  # chunked
    store.fold(*add([impact("d1", 1)]))
    store.fold(*add([impact("d2", 45)]))
    index, carried = store.index()
    assert carried == {}
    assert decode_index(encode_index(index)) == (index, {})
    t0 = 1704067200  # T0
    assert index.closed == (((t0, ("t1", "d1")), 1),)
    assert sorted(index.open) == [t0 + 30]


def test_a_small_window_stays_inline_and_a_large_one_spills_to_chunks() -> None:
    store = Store()
    store.budget = 5
    store.fold(*add([impact("d1", 1, rid="A"), impact("d2", 2, rid="B")]))
    index, inline = store.index()
    assert index.open == {}
    assert len(inline) == 2  # 2 jobs, 2 reasons: 4 <= 5
    assert [k for k in store.data if not is_index_key(k)] == []
    store.fold(*add([impact("d1", 3, rid="C"), impact("d3", 4, rid="D")]))
    index, inline = store.index()
    assert inline == {}
    assert [len(keys) for keys in index.open.values()] == [3]  # 3 jobs, 4 reasons: spilled
    assert len([k for k in store.data if not is_index_key(k)]) == 3
    store.fold(*add([impact("d4", 40, rid="E")]))  # closes the spilled window; the new one is inline
    index, inline = store.index()
    assert list(inline) == [(1704067230, ("t1", "d4"))]
