"""The thin imperative shell every agent uses around its pure fold.

`apply_guarded` is the at-least-once protocol of streams/guard.py: skip inputs a table value has already
absorbed, publish the fold's outputs and wait for the broker's acks, and only then write the table.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import faust

from streams.guard import Guarded, decode, encode, source_of


@dataclass(frozen=True)
class Output:
    """One record to publish: a faust topic, key and value bytes, optional explicit partition."""

    topic: faust.TopicT
    key: bytes | None
    value: bytes | None
    partition: int | None = None


async def publish(outputs: Iterable[Output]) -> None:
    """Send every output now (not attached to the input's commit) and wait until all are acked."""
    pending: list[Awaitable[Any]] = []
    for out in outputs:
        fut = await out.topic.send(key=out.key, value=out.value, partition=out.partition, force=True)
        pending.append(fut)
    if pending:
        await asyncio.gather(*pending)


Fold = Callable[[bytes | None], tuple[bytes | None, list[Output]]]


async def apply_guarded(table: Any, key: str, event: faust.EventT[Any], fold: Fold) -> bool:
    """Apply `fold` to the table value at `key` unless this input was applied already.

    Returns False for a duplicate (redelivered) input. `fold` receives the current encoded state and
    returns the new encoded state (None deletes the key's state but keeps its positions, so a late
    duplicate of a delete is still recognised) and the outputs to publish first.
    """
    message = event.message
    source = source_of(message.topic, message.partition)
    current: Guarded = decode(table.get(key))
    if current.seen(source, message.offset):
        return False
    new_state, outputs = fold(current.state)
    await publish(outputs)
    # Not awaited: faust-streaming flushes its producer (acks included) before it commits any input
    # offset (`Consumer._commit_offsets`), so a changelog record lost in a crash belongs to an input that
    # is redelivered and recomputed. Only the outputs above need their acks first.
    table[key] = encode(current.advance(new_state, source, message.offset))
    return True
