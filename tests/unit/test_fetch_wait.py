"""agents/fetch_wait.py replaces one value faust hardcodes. These tripwires fail on an upgrade that changes
the facts its docstring relies on; the last test checks that the app's consumer gets the setting."""

from __future__ import annotations

import inspect
from pathlib import Path

from aiokafka.consumer import fetcher
from faust.transport.drivers import aiokafka as driver
from hypothesis import given
from hypothesis import strategies as st

from agents.fetch_wait import PromptFetchThread, changelog_pauses, thread_class
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


def test_faust_pauses_only_by_filtering_what_it_returns() -> None:
    # The premise of `changelog_pauses`: faust's pause never reaches aiokafka, which goes on fetching.
    from faust.transport.consumer import Consumer

    source = inspect.getsource(Consumer.pause_partitions)
    assert "difference_update" in source
    assert ".pause(" not in source
    assert "active_partitions" in inspect.getsource(driver.AIOKafkaConsumerThread._fetch_records)


_TP = st.tuples(
    st.sampled_from(["app-windows-changelog", "app-index-changelog", "impacts", "jobs"]), st.integers(0, 3)
)


@given(assigned=st.sets(_TP), paused_pick=st.sets(_TP), active_pick=st.sets(_TP))
def test_changelog_pauses_follow_what_faust_reads(
    assigned: set[tuple[str, int]], paused_pick: set[tuple[str, int]], active_pick: set[tuple[str, int]]
) -> None:
    changelogs = {"app-windows-changelog", "app-index-changelog"}
    paused, active = paused_pick & assigned, active_pick & assigned
    pause, resume = changelog_pauses(assigned, paused, active, changelogs)
    after = (paused | set(pause)) - set(resume)
    for tp in assigned:
        if tp[0] in changelogs:
            assert (tp in after) == (tp not in active)  # fetched exactly when faust reads it
        else:
            assert (tp in after) == (tp in paused)  # stream partitions are faust's business
    assert not set(pause) & paused
    assert set(resume) <= paused
    assert pause == sorted(pause)
    assert resume == sorted(resume)
