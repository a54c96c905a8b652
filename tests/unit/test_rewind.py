"""agents/rewind.py leans on faust-streaming and aiokafka internals: these tripwires fail on an upgrade that
moves them, or that fixes the behaviour upstream (then the module can go)."""

from __future__ import annotations

import inspect
from importlib.metadata import version

import aiokafka
from faust.transport import consumer as faust_consumer
from faust.transport.drivers import aiokafka as driver
from mode.utils.queues import FlowControlEvent

from agents.rewind import RewindingConsumer, RewindingTransport


def test_written_against_these_versions() -> None:
    assert version("faust-streaming").startswith("0.15."), "re-read agents/rewind.py against the new faust"
    assert aiokafka.__version__.startswith("0.14."), "re-read agents/rewind.py against the new aiokafka"


def test_overridden_members_still_exist_upstream() -> None:
    for name in ("perform_seek", "seek_to_committed", "ack", "_add_gap", "_wait_next_records", "seek"):
        assert hasattr(driver.Consumer, name), name
    assert "_read_offset" in inspect.getsource(faust_consumer.Consumer.__init__)
    assert RewindingTransport.Consumer is RewindingConsumer


def test_aiokafka_still_skips_uncommitted_partitions() -> None:
    # When this fails, aiokafka seeks partitions without a committed offset itself: the rewind in
    # RewindingConsumer.seek_to_committed may be redundant.
    source = inspect.getsource(aiokafka.AIOKafkaConsumer.seek_to_committed)
    assert "if offset and offset > 0" in source


def test_flow_control_resume_still_clears_the_stream_queues() -> None:
    # RewindingConsumer.perform_seek stops the fetch flow because of this clear.
    assert "self.clear()" in inspect.getsource(FlowControlEvent.resume)


def test_streams_still_ack_the_records_they_skip() -> None:
    from faust import streams

    source = inspect.getsource(streams.Stream._py_aiter)
    assert "message.generation_id != self.app.consumer_generation_id" in source
    assert "do_ack or value is skipped_value" in source
