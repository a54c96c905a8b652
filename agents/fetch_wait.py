"""How long the broker may hold a fetch open: faust fixes it at 1,500 ms, we make it a setting.

Why it matters (issue 16, bench section 3c): aiokafka's fetcher keeps at most one fetch in flight per broker
node (aiokafka/consumer/fetcher.py `_get_actions_per_node`: a partition whose node has a fetch in flight is
skipped). On a single broker every partition of every topic an app reads shares that one request. A
partition whose buffered records were just handled is not in the request in flight, so its next records
wait until that request returns: at once if one of *its* partitions gets data, else after
`fetch_max_wait_ms`. faust passes 1,500 (faust/transport/drivers/aiokafka.py, `_create_worker_consumer`),
so a quiet topic beside a busy one can add up to 1.5 s per hop, and a delta crosses four hops before it is
a job. A shorter wait costs an idle consumer a few more empty fetches per second.
"""

from __future__ import annotations

from typing import Any

from faust.transport.drivers import aiokafka as aiokafka_driver


class PromptFetchThread(aiokafka_driver.AIOKafkaConsumerThread):
    """faust's consumer thread with `fetch_max_wait_ms` from the settings."""

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


def thread_class(fetch_max_wait_ms: int) -> type[PromptFetchThread]:
    """The thread class for one app (a subclass, so two apps in one process keep their own value)."""
    return type("PromptFetchThread", (PromptFetchThread,), {"fetch_max_wait_ms": fetch_max_wait_ms})
