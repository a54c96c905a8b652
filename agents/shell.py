"""The thin imperative shell every agent uses around its pure fold.

`apply_guarded` is the at-least-once protocol of streams/guard.py: skip inputs a table value has already
absorbed, publish the fold's outputs and wait for the broker's acks, and only then write the table.

Inside a `Batch` (the fold stages process their input a fetched batch at a time, see `Pipeline.run`) the
same protocol holds per batch instead of per record: outputs are sent at once and their acks awaited
together when the batch closes, table writes are held back until then (reads see them meanwhile through the
batch's overlay), and faust acks the batch's input offsets only after that. A crash before the acks leaves
no table write and no committed input, so the whole batch is redelivered and recomputed.
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import faust
from aiokafka.errors import KafkaError
from aiokafka.partitioner import murmur2
from faust.streams import _current_event

from streams.guard import Guarded, decode, encode, source_of

T = TypeVar("T")
log = logging.getLogger("stella.agents")


@dataclass(frozen=True)
class Output:
    """One record to publish: a faust topic, key and value bytes, optional explicit partition."""

    topic: faust.TopicT
    key: bytes | None
    value: bytes | None
    partition: int | None = None


def partition_of(key: str, partitions: int) -> int:
    """The partition the default (murmur2) partitioner gives a key. Records sent with an explicit partition
    (batched shuffles, ticks) must land where a record keyed by ``key`` would: the tables and the other
    co-partitioned topics are partitioned by key."""
    return int(murmur2(key.encode()) & 0x7FFFFFFF) % partitions


async def _send(outputs: Iterable[Output]) -> list[Awaitable[Any]]:
    return [
        await out.topic.send(key=out.key, value=out.value, partition=out.partition, force=True)
        for out in outputs
    ]


@dataclass
class Batch:
    """The outputs and table writes of the records handled since the batch opened."""

    outputs: list[Output] = field(default_factory=list)
    acks: list[Awaitable[Any]] = field(default_factory=list)
    # (id(table), key) → the key's last value this batch: one table (changelog) write per changed key,
    # in the order of their last writes (a key written after others reaches the changelog after them: the
    # split window state relies on it). The event is the last one that wrote it (same partition as every
    # other writer of the key). A None value deletes the key.
    writes: dict[tuple[int, str], tuple[Any, str, bytes | None, faust.EventT[Any]]] = field(
        default_factory=dict
    )
    after: list[Callable[[], None]] = field(default_factory=list)
    open: bool = True

    async def close(self, on_retry: Callable[[int, KafkaError], Awaitable[None]]) -> None:
        """Wait for every output's ack, re-sending all of them after a broker error (duplicates are
        harmless: consumers dedupe) until they are acked; then apply the held-back table writes (each key's
        last value) and run the deferred callbacks."""
        self.open = False
        attempt = 0
        while self.acks:
            try:
                await asyncio.gather(*self.acks)
                break
            except KafkaError as exc:
                attempt += 1
                await on_retry(attempt, exc)
                self.acks = await _send(self.outputs)
        for table, key, value, event in self.writes.values():
            with as_current(event):  # faust picks the store's and the changelog's partition from it
                _set(table, key, value)
        for callback in self.after:
            callback()


def withhold_acks(events: Iterable[faust.EventT[Any]]) -> None:
    """Make sure these events are never acked (so never committed) by this process.

    faust's ``Stream.take_events`` acks every event of a batch in the ``finally`` around its ``yield``: when
    the loop body raises or is cancelled (SIGTERM stops the agent while a batch waits for its outputs'
    acks), closing the generator acks the batch anyway and the worker then commits past records whose
    outputs were never published. Marking the messages acked *without* telling the consumer makes that
    ack a no-op: the offsets stay uncommitted and the records are delivered again after a restart."""
    from faust.types.tuples import ack_lock

    with ack_lock:
        for event in events:
            event.message.acked = True


_batch: ContextVar[Batch | None] = ContextVar("stella_batch", default=None)


def open_batch() -> tuple[Batch, Any]:
    batch = Batch()
    return batch, _batch.set(batch)


def end_batch(token: Any) -> None:
    _batch.reset(token)


def _current() -> Batch | None:
    batch = _batch.get()
    # Tasks spawned while a batch was open inherit it; once it is closed they publish directly.
    return batch if batch is not None and batch.open else None


async def publish(outputs: Iterable[Output]) -> None:
    """Send every output now; wait until all are acked (in a batch: when the batch closes)."""
    outputs = list(outputs)
    pending = await _send(outputs)
    batch = _current()
    if batch is not None:
        batch.outputs.extend(outputs)
        batch.acks.extend(pending)
    elif pending:
        await asyncio.gather(*pending)


def read(table: Any, key: str) -> Any:
    """A table value as this record should see it: the batch's pending write, else the table's."""
    batch = _current()
    if batch is not None and (pending := batch.writes.get((id(table), key))) is not None:
        return pending[2]
    return table.get(key)


def keys(table: Any) -> set[str]:
    """The table's keys, including those this batch adds."""
    found = set(table.keys())
    batch = _current()
    if batch is not None:
        found.update(key for (table_id, key) in batch.writes if table_id == id(table))
    return found


@contextmanager
def as_current(event: faust.EventT[Any]) -> Iterator[None]:
    """Make `event` faust's current event meanwhile. faust's rocksdb store reads a key from the database of
    the current event's partition (`Store._get`), and writes go to it: a fold of held-back records (the
    tenant stage folds a batch's impacts at its end, or before an unrelated record of another partition)
    must run as its own records' event, or it reads an empty value and drops the key's state."""
    token = _current_event.set(weakref.ref(event))
    try:
        yield
    finally:
        _current_event.reset(token)


# The broker's record limit for a table's changelog (set by agents.pipeline from STELLA_MAX_MESSAGE_BYTES).
# faust sends a changelog record without waiting for it and only logs a refusal ("FutureMessage exception
# was never retrieved"), so a value over the limit is in the local store but not in the changelog: lost
# on the next recovery. Seen with a tenant's windows during a 5,000-advisory re-sync (bench/NOTES.md,
# session 7; since split over keys, streams.windows); should any other value grow so, `write` says so,
# loudly and once per key.
changelog_limit: int | None = None
_oversized: set[tuple[str, str]] = set()


def _check_size(table: Any, key: str, value: bytes | None) -> None:
    if changelog_limit is None or value is None or len(value) + len(key) <= changelog_limit:
        return
    name = str(getattr(table, "name", None) or type(table).__name__)
    if (name, key) in _oversized:
        return
    _oversized.add((name, key))
    log.error(
        "table %s: the value of %r is %d bytes, over the record limit of %d: its changelog write will be "
        "refused, so this state is not durable (a recovery would lose it) until it shrinks again",
        name,
        key,
        len(value),
        changelog_limit,
    )


def _set(table: Any, key: str, value: bytes | None) -> None:
    if value is None:
        table.pop(key, None)
    else:
        table[key] = value


def write(table: Any, key: str, value: bytes | None, event: faust.EventT[Any]) -> None:
    """Set a table value, or delete it with None (in a batch: when the batch closes, after the outputs'
    acks, in the order of the keys' last writes)."""
    _check_size(table, key, value)
    batch = _current()
    if batch is None:
        _set(table, key, value)
        return
    batch.writes.pop((id(table), key), None)
    batch.writes[(id(table), key)] = (table, key, value, event)


def defer(callback: Callable[[], None]) -> None:
    """Run ``callback`` once this record's table writes are applied (in a batch: when the batch closes),
    for in-memory effects that must not run ahead of the table (e.g. offering a job to the runner)."""
    batch = _current()
    if batch is None:
        callback()
    else:
        batch.after.append(callback)


class LastDecoded(Generic[T]):
    """Per key, the last encoded state seen and what `decode` made of it: a hot key read again unchanged
    (a tenant's windows, batch after batch) is not decoded again. Valid by construction, since a hit needs
    equal bytes; the decoded values must be treated as immutable."""

    def __init__(self, decode: Callable[[bytes], T], limit: int = 10_000) -> None:
        self._decode = decode
        self._limit = limit
        self._last: dict[str, tuple[bytes, T]] = {}

    def __call__(self, key: str, data: bytes) -> T:
        hit = self._last.get(key)
        if hit is not None and hit[0] == data:
            return hit[1]
        value = self._decode(data)
        self.remember(key, data, value)
        return value

    def remember(self, key: str, data: bytes, value: T) -> None:
        """Record that `data` decodes to `value` (the fold that encoded it knows)."""
        if len(self._last) >= self._limit:
            self._last.clear()
        self._last[key] = (data, value)


Fold = Callable[[bytes | None], tuple[bytes | None, list[Output]]]
# A fold over several inputs at once: the current state and the indices of the inputs not yet absorbed.
ManyFold = Callable[[bytes | None, list[int]], tuple[bytes | None, list[Output]]]
# A ManyFold whose state spans other keys of the same table: it also returns those keys' writes (None
# deletes), which are written before the guarded key, so that key is the last to reach the changelog.
SplitFold = Callable[
    [bytes | None, list[int]], tuple[bytes | None, list[Output], list[tuple[str, bytes | None]]]
]


async def apply_guarded(table: Any, key: str, event: faust.EventT[Any], fold: Fold) -> bool:
    """Apply `fold` to the table value at `key` unless this input was applied already.

    Returns False for a duplicate (redelivered) input. `fold` receives the current encoded state and
    returns the new encoded state (None deletes the key's state but keeps its positions, so a late
    duplicate of a delete is still recognised) and the outputs to publish first.
    """
    return bool(await apply_guarded_many(table, key, [event], lambda state, _fresh: fold(state)))


async def apply_guarded_many(
    table: Any, key: str, events: Sequence[faust.EventT[Any]], fold: ManyFold
) -> list[int]:
    """`apply_guarded` for several inputs to one key, folded together: the inputs the value has not absorbed
    yet (their indices in `events`, in order) go to one fold, one publish and one table write that advances
    each one's source position. Equal to applying them one at a time when the fold is (the tenant stage
    folds a batch's impacts per tenant so, instead of decoding and encoding its windows per record).

    Returns the indices folded (empty: every input was a duplicate)."""
    return await apply_guarded_split(table, key, events, lambda state, fresh: (*fold(state, fresh), []))


async def apply_guarded_split(
    table: Any, key: str, events: Sequence[faust.EventT[Any]], fold: SplitFold
) -> list[int]:
    """`apply_guarded_many` for a state split over several keys of one table, guarded at `key`: the other
    keys' writes come first, `key` (with the inputs' positions) last. A crash between them leaves the
    other keys ahead of the guard, and the redelivered inputs are folded into them again: the fold must
    make that change nothing (streams.windows, "the stream's split state")."""
    running = _current_event.get(None)
    if running is not None and running() is events[-1]:
        return await _apply_guarded(table, key, events, fold)  # already its event (a record's own fold)
    with as_current(events[-1]):
        return await _apply_guarded(table, key, events, fold)


async def _apply_guarded(
    table: Any, key: str, events: Sequence[faust.EventT[Any]], fold: SplitFold
) -> list[int]:
    current: Guarded = decode(read(table, key))
    fresh = [
        i
        for i, event in enumerate(events)
        if not current.seen(source_of(event.message.topic, event.message.partition), event.message.offset)
    ]
    if not fresh:
        return fresh
    new_state, outputs, others = fold(current.state, fresh)
    await publish(outputs)
    # Not awaited: faust-streaming flushes its producer (acks included) before it commits any input
    # offset (`Consumer._commit_offsets`), so a changelog record lost in a crash belongs to an input that
    # is redelivered and recomputed. Only the outputs above need their acks first.
    last = events[fresh[-1]]
    for other, value in others:
        write(table, other, value, last)
    advanced = current
    for i in fresh:
        message = events[i].message
        advanced = advanced.advance(new_state, source_of(message.topic, message.partition), message.offset)
    write(table, key, encode(advanced), last)
    return fresh
