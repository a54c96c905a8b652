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
"""

from __future__ import annotations

import logging
import time
from typing import Any

from aiokafka.errors import IllegalStateError

from agents import observe
from agents.pipeline import Pipeline
from agents.rewind import RewindingConsumer

log = logging.getLogger("stella.watchdog")
INTERVAL = 15.0
STALL_AFTER = 45.0


def register(pipe: Pipeline) -> None:
    app = pipe.app
    progress: dict[Any, tuple[int, float]] = {}  # tp → (position, since when)

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
            seen = progress.get(tp)
            if seen is None or seen[0] != position or lag == 0:
                progress[tp] = (position, now)
                continue
            if now - seen[1] < STALL_AFTER:
                continue
            log.warning(
                "partition %s/%d has lag %d and has not moved for %.0f s: re-activating it and seeking it "
                "to its committed offset",
                tp.topic,
                tp.partition,
                lag,
                now - seen[1],
                extra={"topic": tp.topic, "partition": tp.partition, "offset": position},
            )
            consumer.resume_partitions([tp])
            if isinstance(consumer, RewindingConsumer):
                await consumer.seek_to_committed_or_beginning(tp)
            else:  # an app built without agents.pipeline
                await consumer.seek(tp, position)
            progress[tp] = (position, now)
