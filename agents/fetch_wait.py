"""How long the broker may hold a fetch open: faust fixes it at 1,500 ms, we make it a setting.

Why it matters (issue 16, bench section 3c): aiokafka's fetcher keeps at most one fetch in flight per broker
node (aiokafka/consumer/fetcher.py `_get_actions_per_node`: a partition whose node has a fetch in flight is
skipped). On a single broker every partition of every topic an app reads shares that one request. A
partition whose buffered records were just handled is not in the request in flight, so its next records
wait until that request returns: at once if one of *its* partitions gets data, else after
`fetch_max_wait_ms`. faust passes 1,500 (faust/transport/drivers/aiokafka.py, `_create_worker_consumer`),
so a quiet topic beside a busy one can add up to 1.5 s per hop, and a delta crosses four hops before it is
a job. A shorter wait costs an idle consumer more empty fetches per second: cheap
once they carry only the partitions faust reads (`changelog_pauses`).
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Set
from typing import Any, TypeVar

from faust.transport.drivers import aiokafka as aiokafka_driver

T = TypeVar("T", bound=tuple[str, int])


class PromptFetchThread(aiokafka_driver.AIOKafkaConsumerThread):
    """faust's consumer thread with `fetch_max_wait_ms` from the settings, which also stops aiokafka fetching
    the changelog partitions faust is not reading (`changelog_pauses`)."""

    fetch_max_wait_ms: int = 1500  # faust's own value, until `install` sets ours

    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # The constructor argument faust hardcodes; the fetcher is built from it in `start()`, after this.
        if not hasattr(consumer, "_fetch_max_wait_ms"):
            raise RuntimeError(
                "aiokafka changed: AIOKafkaConsumer has no _fetch_max_wait_ms (agents/fetch_wait.py)"
            )
        consumer._fetch_max_wait_ms = self.fetch_max_wait_ms
        return consumer

    async def _fetch_records(
        self,
        consumer: Any,
        active_partitions: Any,
        timeout: float | None = None,
        max_records: int | None = None,
    ) -> Any:
        # Runs on this thread's loop, where aiokafka's consumer lives: its pause state is safe to touch here.
        if self.consumer.flow_active and active_partitions:
            pause, resume = changelog_pauses(
                consumer.assignment(),
                consumer.paused(),
                active_partitions,
                self.app.tables.changelog_topics,
            )
            if pause:
                consumer.pause(*pause)
            if resume:
                consumer.resume(*resume)
        return await super()._fetch_records(
            consumer, active_partitions, timeout=timeout, max_records=max_records
        )


def changelog_pauses(
    assigned: Iterable[T], paused: Set[T], active: Set[T], changelog_topics: Container[str]
) -> tuple[list[T], list[T]]:
    """Which changelog partitions aiokafka should stop and start fetching: exactly those faust is not / is
    reading (recovering or standby).

    faust "pauses" a partition only by leaving it out of the set its fetched records are returned for
    (faust/transport/consumer.py `pause_partitions`); aiokafka goes on fetching every assigned partition it
    has not paused itself. After recovery that is every active table's changelog: each empty one rode in
    every fetch request (an idle one-worker app asked for 235 partitions about 12 times a second, 102 of them
    changelogs: half a core), and the first records a worker writes to one were fetched back and kept in
    aiokafka's buffer, never returned, until the next seek. Recovery seeks a changelog partition before
    it reads it (faust/tables/recovery.py `_seek_offsets`), so nothing fetched while paused is missed."""
    pause = sorted(
        tp for tp in assigned if tp[0] in changelog_topics and tp not in active and tp not in paused
    )
    resume = sorted(tp for tp in paused if tp[0] in changelog_topics and tp in active)
    return pause, resume


def thread_class(fetch_max_wait_ms: int) -> type[PromptFetchThread]:
    """The thread class for one app (a subclass, so two apps in one process keep their own value)."""
    return type("PromptFetchThread", (PromptFetchThread,), {"fetch_max_wait_ms": fetch_max_wait_ms})
