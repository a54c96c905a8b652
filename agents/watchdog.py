"""Consumer lag per partition, and a guard against partitions that stop being fetched.

After a rebalance, faust-streaming sometimes leaves an assigned partition without fetches or outside its
set of active partitions (faust-streaming issue #629, open): the partition has lag, the worker reports
ready, and nothing moves until the next rebalance. Every `INTERVAL` seconds this reports each assigned
partition's lag and, when one has had lag and no progress for `STALL_AFTER` seconds while the worker is
neither rebalancing nor recovering, puts it back among the active partitions and seeks it to the group's
committed offset, or to its beginning when there is none (agents/rewind.py), which makes the fetcher ask
for it again. Not to its position: records fetched and dropped while the partition was inactive are
already behind the position. Re-reading from the committed offset is safe: every effect is guarded by
source position (streams/guard.py).

When is a partition stalled, and not busy (the VEX soak of issue 15: 45 firings on `vex`, `advisories`,
`impact-requests`, `impacts`, each followed by a faust "gap")? Progress is the pair (fetch position, faust's
committed offset): an agent working through a full stream buffer does not move the position (faust stops
fetching a partition whose buffer is under pressure, `Consumer.on_buffer_full`) but its acks move the
commit every `broker_commit_interval`. A partition whose agent holds a record (`_unacked_messages`) is
busy, whatever the clock says. And the stall must be seen by `STALL_ROUNDS` rounds in a row: a loop held
for 40 s (timer drift in the soak's log) is one late round, not a stalled partition.

Why a busy partition must never be sought (docs/partitioning.md, "Watchdog seeks and faust's gaps"): the
seek sets faust's read offset back to the committed offset C while records fetched before it (queued
behind the agent, or still in the fetched batch) keep coming; the next of those, at offset P > C + 1,
makes faust add the gap C+1..P (`Consumer._drain_messages` → `_add_gap`), and `_new_offset` then counts
every offset of it as processed at the first ack past C + 1: the commit runs ahead of records that are
still queued, and a crash or rebalance then loses them. For the same reason the seek comes *before* the
partition is put back among the active ones: re-activated first, its fetch from the old position could
be delivered while the seek's broker round trip is in flight.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

from aiokafka.errors import IllegalStateError

from agents import observe
from agents.pipeline import Pipeline
from agents.rewind import RewindingConsumer

log = logging.getLogger("stella.watchdog")
INTERVAL = 15.0
STALL_AFTER = 45.0
STALL_ROUNDS = 3  # consecutive rounds without progress (with INTERVAL, at least STALL_AFTER)


@dataclass(frozen=True)
class Seen:
    """What a round saw of one partition: progress is a change of `mark`."""

    mark: tuple[int, int | None]  # (fetch position, faust's committed offset)
    since: float  # monotonic time the mark was first seen
    rounds: int  # rounds that have seen the mark since (the first one included)


def observe_round(seen: Seen | None, mark: tuple[int, int | None], lag: int, busy: bool, now: float) -> Seen:
    """The partition's state after one round: progress, no lag or a busy agent start it afresh."""
    if seen is None or seen.mark != mark or lag == 0 or busy:
        return Seen(mark, now, 1)
    return Seen(mark, seen.since, seen.rounds + 1)


def is_stalled(seen: Seen, now: float) -> bool:
    return seen.rounds > STALL_ROUNDS and now - seen.since >= STALL_AFTER


def holds_record(consumer: Any, tp: Any) -> bool:
    """An agent holds a record of `tp` (handed to it and not acked yet): the partition is busy."""
    return any(message.tp == tp for message in list(getattr(consumer, "_unacked_messages", ())))


def committed_offset(consumer: Any, tp: Any) -> int | None:
    """faust's own view of the committed offset (moved by every commit of acked records)."""
    offsets = getattr(consumer, "_committed_offset", None)
    return offsets.get(tp) if offsets is not None else None


async def unstall(consumer: Any, tp: Any, position: int) -> None:
    """Seek a stalled partition, then make it fetchable again (in this order: see the module's doc)."""
    if isinstance(consumer, RewindingConsumer):
        await consumer.seek_to_committed_or_beginning(tp)
    else:  # an app built without agents.pipeline
        await consumer.seek(tp, position)
    consumer.resume_partitions([tp])


def register(pipe: Pipeline) -> None:
    app = pipe.app
    progress: dict[Any, Seen] = {}  # tp → what the last round saw

    def steady() -> bool:
        tables: Any = app.tables
        return bool(tables.recovery.completed.is_set()) and not app.rebalancing

    @app.timer(interval=INTERVAL)
    async def fetch_watchdog() -> None:
        if not steady():
            progress.clear()
            return
        try:
            await check(app.consumer)
        except IllegalStateError as exc:
            # A rebalance revoked a partition between `assignment()` and `position()` (or the seek): the
            # next round sees the new assignment. Raising here crashed the whole worker (a timer is a task
            # of the app).
            log.info("watchdog: assignment changed during the check (%s)", exc)
            progress.clear()

    async def check(consumer: Any) -> None:
        changelogs = set(app.tables.changelog_topics)
        tps = sorted(
            (
                tp
                for tp in consumer.assignment()
                if tp.topic not in changelogs and "__assignor" not in tp.topic
            ),
            key=lambda tp: (tp.topic, tp.partition),
        )
        if not tps:
            return
        highwaters = await consumer.highwaters(*tps)
        now = time.monotonic()
        for tp in tps:
            position = await consumer.position(tp)
            end = highwaters.get(tp)
            if position is None or end is None:
                continue
            lag = max(0, end - position)
            observe.consumer_lag(
                pipe.settings.app_id, pipe.logical.get(tp.topic, tp.topic), tp.partition, lag
            )
            seen = observe_round(
                progress.get(tp),
                (position, committed_offset(consumer, tp)),
                lag,
                holds_record(consumer, tp),
                now,
            )
            progress[tp] = seen
            if not is_stalled(seen, now):
                continue
            log.warning(
                "partition %s/%d has lag %d and has not moved for %.0f s (%d rounds, no record in an "
                "agent): seeking it to its committed offset and re-activating it",
                tp.topic,
                tp.partition,
                lag,
                now - seen.since,
                seen.rounds,
                extra={"topic": tp.topic, "partition": tp.partition, "offset": position},
            )
            await unstall(consumer, tp, position)
            progress.pop(tp, None)
