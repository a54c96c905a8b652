"""Consumer lag per partition, and a guard against partitions that stop being fetched.

After a rebalance, faust-streaming sometimes leaves an assigned partition without fetches or outside its
set of active partitions (faust-streaming issue #629, open): the partition has lag, the worker reports
ready, and nothing moves until the next rebalance. Every `INTERVAL` seconds this reports each assigned
partition's lag and, when one has had lag and no progress for `STALL_AFTER` seconds while the worker is
neither rebalancing nor recovering, puts it back among the active partitions and re-seeks it to its
position, which makes the fetcher ask for it again. Re-reading from the position is safe: every effect
is guarded by source position (streams/guard.py).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from agents import observe
from agents.pipeline import Pipeline

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
        consumer: Any = app.consumer
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
                "partition %s/%d has lag %d and has not moved for %.0f s: re-activating and re-seeking it",
                tp.topic,
                tp.partition,
                lag,
                now - seen[1],
                extra={"topic": tp.topic, "partition": tp.partition, "offset": position},
            )
            consumer.resume_partitions([tp])
            await consumer.seek(tp, position)
            progress[tp] = (position, now)
