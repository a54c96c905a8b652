"""The idle-flush gate (streams.windows.idle_flush): the wall clock decides when, the broker whether."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from streams.windows import (
    FlushDecision,
    Quiescence,
    cannot_cause_impact,
    covers,
    idle_flush,
    lagging_partitions,
)

TP = st.tuples(st.sampled_from(["inventory", "vex", "index-updates"]), st.integers(0, 5))
offsets = st.integers(0, 1000)
seconds = st.floats(0, 1000, allow_nan=False)
snapshots = st.one_of(
    st.none(),
    st.builds(
        Quiescence,
        st.lists(TP, max_size=3, unique=True).map(lambda xs: tuple(sorted(xs))),
        st.dictionaries(st.integers(0, 5), offsets, max_size=6),
    ),
)


@given(st.dictionaries(TP, st.one_of(st.none(), st.integers(-1, 1000))), st.dictionaries(TP, offsets))
def test_a_partition_lags_exactly_when_its_end_is_past_what_was_committed(
    committed: dict[tuple[str, int], int | None], ends: dict[tuple[str, int], int]
) -> None:
    lagging = lagging_partitions(committed, ends)
    assert list(lagging) == sorted(lagging)
    for tp, end in ends.items():
        done = committed.get(tp)
        assert (tp in lagging) == (end > (done if done is not None and done > 0 else 0))
    assert set(lagging) <= set(ends)


@given(
    st.dictionaries(TP, st.one_of(st.none(), st.integers(-1, 1000))),
    st.dictionaries(TP, offsets),
    st.dictionaries(TP, offsets),
)
def test_a_partition_whose_uncommitted_records_are_all_inert_does_not_lag(
    committed: dict[tuple[str, int], int | None],
    ends: dict[tuple[str, int], int],
    inert_from: dict[tuple[str, int], int],
) -> None:
    lagging = lagging_partitions(committed, ends, inert_from)
    for tp, end in ends.items():
        done = max(committed.get(tp) or 0, 0)
        assert (tp in lagging) == (end > done and inert_from.get(tp, end) > done)
    assert set(lagging) <= set(lagging_partitions(committed, ends))  # never more lag than without it


def test_only_a_completed_job_s_report_is_inert() -> None:
    assert cannot_cause_impact("scheduler.report-seen@1")
    for schema in ("scheduler.inventory@1", "scheduler.runtime-event@1", "scheduler.image-removed@1", None):
        assert not cannot_cause_impact(schema)


def test_never_committed_empty_partitions_do_not_lag_but_filled_ones_do() -> None:
    ends = {("vex", 0): 0, ("vex", 1): 3, ("vex", 2): 3}
    assert lagging_partitions({("vex", 0): -1, ("vex", 1): -1, ("vex", 2): 3}, ends) == (("vex", 1),)


@given(seconds, seconds, seconds, snapshots, st.integers(0, 5), offsets)
def test_the_gate(
    idle_for: float, idle_after: float, extra: float, snapshot: Quiescence | None, partition: int, tick: int
) -> None:
    max_idle = idle_after + extra
    decision = idle_flush(idle_for, idle_after, max_idle, snapshot, partition, tick)
    drained = (
        snapshot is not None and not snapshot.lagging and snapshot.impacts_end.get(partition) == tick + 1
    )
    if idle_for < idle_after:
        assert decision is FlushDecision.WAIT  # the wall clock alone never flushes early
    elif drained:
        assert decision is FlushDecision.FLUSH
    elif idle_for >= max_idle:
        assert decision is FlushDecision.FORCE  # bounded: a stuck upstream cannot hold windows forever
    else:
        assert decision is FlushDecision.WAIT
    if decision is FlushDecision.FLUSH:
        assert covers(snapshot, partition, tick)


def test_upstream_lag_or_a_record_after_the_tick_holds_the_flush_until_the_bound() -> None:
    drained = Quiescence((), {2: 11})
    assert idle_flush(5, 3, 300, drained, 2, 10) is FlushDecision.FLUSH
    # an impact (or anything) written after the tick may belong to a window the flush would close
    assert idle_flush(5, 3, 300, Quiescence((), {2: 12}), 2, 10) is FlushDecision.WAIT
    # a snapshot taken before the tick was written says nothing about what precedes it
    assert not covers(Quiescence((), {2: 10}), 2, 10)
    assert idle_flush(5, 3, 300, Quiescence((), {2: 10}), 2, 10) is FlushDecision.WAIT
    lagging = Quiescence((("index-updates", 4),), {2: 11})
    assert idle_flush(5, 3, 300, lagging, 2, 10) is FlushDecision.WAIT
    assert idle_flush(300, 3, 300, lagging, 2, 10) is FlushDecision.FORCE
    assert idle_flush(300, 3, 300, None, 2, 10) is FlushDecision.FORCE
    assert idle_flush(2, 3, 300, drained, 2, 10) is FlushDecision.WAIT


@given(
    st.dictionaries(st.integers(0, 5), offsets, max_size=6),
    st.dictionaries(st.integers(0, 5), offsets, max_size=6),
    st.integers(0, 5),
    offsets,
)
def test_only_ticks_after_the_tick_is_as_good_as_nothing_after_it(
    ends: dict[int, int], ticks_from: dict[int, int], partition: int, tick: int
) -> None:
    """The gate flushes when every record written after the tick (up to the snapshot's end offsets) is a
    tick itself, and only then: an impact after the tick, or a snapshot from before it, holds the flush."""
    snapshot = Quiescence((), ends, ticks_from)
    decision = idle_flush(5, 3, 300, snapshot, partition, tick)
    end = ends.get(partition)
    quiet = end is not None and end > tick and (end == tick + 1 or ticks_from.get(partition, end) <= tick + 1)
    assert (decision is FlushDecision.FLUSH) == quiet
    if quiet:
        assert covers(snapshot, partition, tick)


def test_ticks_written_after_the_tick_do_not_hold_the_flush_but_an_impact_does() -> None:
    # offsets 11 and 12 are ticks written while tick 10 was handled: flush
    assert idle_flush(5, 3, 300, Quiescence((), {2: 13}, {2: 11}), 2, 10) is FlushDecision.FLUSH
    # offset 11 is an impact (only 12 is a tick): wait for it to be folded
    assert idle_flush(5, 3, 300, Quiescence((), {2: 13}, {2: 12}), 2, 10) is FlushDecision.WAIT
    # another partition's tail says nothing about this one
    assert idle_flush(5, 3, 300, Quiescence((), {2: 13}, {3: 0}), 2, 10) is FlushDecision.WAIT
