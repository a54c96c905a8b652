"""agents.turns: long synchronous work hands the event loop back every TURN_RECORDS items."""

from __future__ import annotations

import asyncio
import itertools

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agents.turns import TURN_RECORDS, in_turns, yields_before


@given(st.integers(min_value=0, max_value=5000), st.integers(min_value=1, max_value=700))
def test_a_turn_never_holds_more_than_per_turn_items(n: int, per_turn: int) -> None:
    breaks = [i for i in range(n) if yields_before(i, per_turn)]
    bounds = [0, *breaks, n]
    assert all(0 < b - a <= per_turn for a, b in itertools.pairwise(bounds) if b > a)
    assert len(breaks) == max(0, (n - 1) // per_turn)


def test_per_turn_must_be_positive() -> None:
    with pytest.raises(ValueError, match="per_turn"):
        yields_before(3, 0)


def test_other_tasks_run_between_turns() -> None:
    """The regression: 2,000 records handled without an await left a heartbeat task no turn at all."""

    async def scenario() -> list[int]:
        handled = 0
        seen_by_ticker: list[int] = []
        stop = asyncio.Event()

        async def ticker() -> None:  # stands in for aiokafka's heartbeat task on the same loop
            while not stop.is_set():
                seen_by_ticker.append(handled)
                await asyncio.sleep(0)

        task = asyncio.create_task(ticker())
        await asyncio.sleep(0)
        async for _ in in_turns(range(2000)):
            handled += 1  # synchronous work, no await of its own
        stop.set()
        await task
        return seen_by_ticker

    seen = asyncio.run(scenario())
    progress = [*sorted(set(seen)), 2000]
    # The ticker ran at every turn boundary, so no turn held more than TURN_RECORDS items.
    assert all(b - a <= TURN_RECORDS for a, b in itertools.pairwise(progress))
    assert len(progress) > 2000 // TURN_RECORDS
