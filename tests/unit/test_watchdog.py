"""agents/watchdog.py: a busy partition is not a stalled one, and a stalled one is sought before it is
re-activated. The first test shows why with faust's own offset accounting: a gap opened over records that
were delivered and are still queued is counted as processed at the first ack past it."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from types import SimpleNamespace
from typing import Any

from faust.transport import consumer as faust_consumer
from faust.types import TP
from hypothesis import given
from hypothesis import strategies as st
from intervaltree import IntervalTree

from agents import watchdog
from agents.rewind import RewindingConsumer
from agents.watchdog import STALL_AFTER, STALL_ROUNDS, Seen, is_stalled, observe_round

TP0 = TP("vex", 1)


def faust_books(committed: int) -> Any:
    """The bookkeeping faust's Consumer keeps per partition (consumer.py __init__), for its own methods."""
    return SimpleNamespace(
        _gap=defaultdict(IntervalTree),
        _acked=defaultdict(list),
        _acked_index=defaultdict(set),
        _committed_offset=defaultdict(lambda: None, {TP0: committed}),
    )


def commit_rounds(books: Any) -> list[int]:
    """The offsets faust's periodic commit takes, round after round, until it has nothing new."""
    offsets: list[int] = []
    while (offset := faust_consumer.Consumer._new_offset(books, TP0)) is not None:  # type: ignore[arg-type]
        offsets.append(offset)
        books._committed_offset[TP0] = offset  # as _commit_offsets does
    return offsets


def test_a_gap_over_queued_records_lets_the_commit_pass_them() -> None:
    # Committed 100; records 100..150 were delivered and sit in the stream queue behind a busy agent. A
    # seek to the committed offset sets faust's read offset to 100; the next record of the batch fetched
    # before the seek, 151, then opens the gap 101..151 (_drain_messages: gap = 151 - 100 > 1).
    books = faust_books(committed=100)
    asyncio.run(faust_consumer.Consumer._add_gap(books, TP0, 101, 151))  # type: ignore[arg-type]
    for handled in (100, 101, 102):  # the agent handles the first three records of its queue
        books._acked[TP0].append(handled)
        books._acked_index[TP0].add(handled)
    # 103..150 were never handled, yet within a few commit rounds (one per `broker_commit_interval`) the
    # committed offset passes all of them: after a crash or a rebalance nobody reads them again. Hence the
    # watchdog never seeks a busy partition.
    assert commit_rounds(books) == [102, 103, 152]


def test_without_a_gap_the_commit_waits_for_the_queued_records() -> None:
    books = faust_books(committed=100)
    for handled in (100, 101, 102):
        books._acked[TP0].append(handled)
        books._acked_index[TP0].add(handled)
    assert commit_rounds(books) == [103]


def rounds(marks: list[tuple[int, int | None]], busy: list[bool], start: float = 0.0) -> Seen:
    seen: Seen | None = None
    for i, (mark, b) in enumerate(zip(marks, busy, strict=True)):
        seen = observe_round(seen, mark, lag=5, busy=b, now=start + i * watchdog.INTERVAL)
    assert seen is not None
    return seen


def test_a_partition_without_progress_for_enough_rounds_is_stalled() -> None:
    n = STALL_ROUNDS + 1
    seen = rounds([(10, 10)] * n, [False] * n)
    assert is_stalled(seen, (n - 1) * watchdog.INTERVAL)
    assert not is_stalled(rounds([(10, 10)] * (n - 1), [False] * (n - 1)), (n - 2) * watchdog.INTERVAL)


def test_commits_are_progress_even_when_the_position_stands_still() -> None:
    # faust stops fetching a partition whose stream buffer is full: its position stands, its acks commit.
    n = STALL_ROUNDS + 3
    seen = rounds([(10, 3 + i) for i in range(n)], [False] * n)
    assert seen.rounds == 1
    assert not is_stalled(seen, n * watchdog.INTERVAL)


def test_one_late_round_is_not_a_stall() -> None:
    # The event loop held for 50 s: the next round comes late, once.
    first = observe_round(None, (10, 10), lag=5, busy=False, now=0.0)
    late = observe_round(first, (10, 10), lag=5, busy=False, now=50.0)
    assert late.rounds == 2
    assert not is_stalled(late, 50.0 + STALL_AFTER)


@given(st.lists(st.booleans(), min_size=1, max_size=12), st.integers(0, STALL_ROUNDS - 1))
def test_a_partition_whose_agent_holds_a_record_is_never_stalled(busy: list[bool], tail: int) -> None:
    busy = [*busy, True, *([False] * tail)]  # busy in one of the last STALL_ROUNDS rounds
    seen = rounds([(10, 10)] * len(busy), busy)
    assert not is_stalled(seen, len(busy) * watchdog.INTERVAL + STALL_AFTER)


def test_holds_record_looks_at_the_partition_of_unacked_messages() -> None:
    consumer = SimpleNamespace(_unacked_messages=[SimpleNamespace(tp=TP("vex", 2))])
    assert not watchdog.holds_record(consumer, TP0)
    consumer._unacked_messages.append(SimpleNamespace(tp=TP0))
    assert watchdog.holds_record(consumer, TP0)


def test_a_stalled_partition_is_sought_before_it_is_reactivated() -> None:
    calls: list[str] = []
    consumer: Any = RewindingConsumer.__new__(RewindingConsumer)

    async def seek(tp: TP) -> int:
        calls.append(f"seek {tp.topic}/{tp.partition}")
        return 7

    consumer.seek_to_committed_or_beginning = seek
    consumer.resume_partitions = lambda tps: calls.append(
        f"resume {[f'{t.topic}/{t.partition}' for t in tps]}"
    )
    asyncio.run(watchdog.unstall(consumer, TP0, 12))
    assert calls == ["seek vex/1", "resume ['vex/1']"]
