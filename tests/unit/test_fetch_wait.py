"""agents/fetch_wait.py replaces one value faust hardcodes. These tripwires fail on an upgrade that changes
the facts its docstring relies on; the last test checks that the app's consumer gets the setting."""

from __future__ import annotations

import inspect
from pathlib import Path

from aiokafka.consumer import fetcher
from faust.transport.drivers import aiokafka as driver

from agents.fetch_wait import PromptFetchThread, thread_class
from agents.pipeline import Pipeline
from agents.settings import Settings


def test_faust_still_hardcodes_the_fetch_wait() -> None:
    # When this fails, faust may expose the setting: use it and delete agents/fetch_wait.py.
    assert "fetch_max_wait_ms=1500" in inspect.getsource(
        driver.AIOKafkaConsumerThread._create_worker_consumer
    )


def test_aiokafka_still_keeps_one_fetch_in_flight_per_node() -> None:
    source = inspect.getsource(fetcher.Fetcher._get_actions_per_node)
    assert "elif node_id in self._in_flight:" in source


def test_each_app_keeps_its_own_value() -> None:
    fast, slow = thread_class(50), thread_class(1500)
    assert issubclass(fast, PromptFetchThread)
    assert fast.fetch_max_wait_ms == 50
    assert slow.fetch_max_wait_ms == 1500
    assert PromptFetchThread.fetch_max_wait_ms == 1500


async def test_the_worker_consumer_gets_the_setting(tmp_path: Path) -> None:
    settings = Settings(data_dir=str(tmp_path), topic_prefix="unit.", web_port=0, fetch_max_wait_ms=42)
    pipe = Pipeline.create(settings)
    thread = pipe.app.consumer._thread
    consumer = thread._create_worker_consumer(pipe.app.transport)
    try:
        assert consumer._fetch_max_wait_ms == 42
    finally:
        await consumer.stop()
        thread.thread_loop.close()  # the thread never ran: nothing else closes the loop it made
