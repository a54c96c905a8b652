"""Long synchronous work on the event loop is done in bounded turns.

Everything a worker runs on its main event loop shares it: faust's agents and timers, the projector's own
aiokafka consumer (agents/projector.py) and the knowledge feed (agents/knowledge.py). faust runs *its*
consumer in a thread of its own, so a busy loop does not cost faust's group membership; the projector's
consumer does not: aiokafka sends its heartbeats from a task on the loop it was started on. A loop turn
longer than the projector's session timeout (10 s) gets it expelled from its group.

That is what crashed the worker in the 20,000-statement VEX soak (docs/partitioning.md, failure modes):
the knowledge feed decoded and absorbed a fetched batch of up to 2,000 source records in one turn
(about 1 s on a quiet machine, 14 s and 40 s with the load average at 25), the projector missed its
heartbeats, its group rebalanced, and its commit raised CommitFailedError out of the app's task (that
commit is now skipped, agents/projector.py `_commit`). The fold stages' batches (up to `batch_max`
records, `Pipeline._batch`) were one turn each too: `topic.send` only suspends when the producer's
buffer is full.

`in_turns` hands the loop back every `TURN_RECORDS` items. Not a time budget: a count keeps the
behaviour the same on a loaded and an idle machine, and ~100 records is ~50 ms of decoding on an idle one.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from typing import TypeVar

T = TypeVar("T")
TURN_RECORDS = 100


def yields_before(index: int, per_turn: int = TURN_RECORDS) -> bool:
    """Whether the loop is handed back before the item at `index` (every `per_turn` items, never first)."""
    if per_turn < 1:
        raise ValueError(f"per_turn must be at least 1, not {per_turn}")
    return index > 0 and index % per_turn == 0


async def in_turns(items: Iterable[T], per_turn: int = TURN_RECORDS) -> AsyncIterator[T]:
    """Yield `items`, letting every other task run (one `sleep(0)`) after each `per_turn` of them."""
    for index, item in enumerate(items):
        if yields_before(index, per_turn):
            await asyncio.sleep(0)
        yield item
