"""agents/quiescence.py against the real broker: lag from committed vs end offsets, and impacts' ends."""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer, TopicPartition

from agents.quiescence import UpstreamProbe
from agents.settings import Settings
from tests.integration.kit import create_topics, produce


async def test_a_record_not_yet_committed_is_lag_and_its_commit_drains_it(
    kafka_bootstrap: str, prefix: str
) -> None:
    await create_topics(kafka_bootstrap, prefix, partitions=2)
    settings = Settings(kafka_bootstrap=kafka_bootstrap, topic_prefix=prefix, partitions=2)
    group = f"{prefix}app"
    probe = UpstreamProbe(settings, group)
    try:
        empty = await probe.refresh(min_interval=0)
        assert empty is not None
        assert empty.lagging == ()  # nothing written, nothing committed: drained
        assert empty.impacts_end == {0: 0, 1: 0}

        await produce(kafka_bootstrap, f"{prefix}vex", [(b"CVE-1", b"x")])
        await produce(kafka_bootstrap, f"{prefix}impacts", [(b"tenant", b"y")])
        pending = await probe.refresh(min_interval=0)
        assert pending is not None
        assert len(pending.lagging) == 1
        assert pending.lagging[0][0] == f"{prefix}vex"
        assert sum(pending.impacts_end.values()) == 1

        topic, partition = pending.lagging[0]
        committer = AIOKafkaConsumer(
            bootstrap_servers=kafka_bootstrap, group_id=group, enable_auto_commit=False
        )
        await committer.start()
        try:
            tp = TopicPartition(topic, partition)
            committer.assign([tp])
            await committer.commit({tp: 1})
        finally:
            await committer.stop()
        drained = await probe.refresh(min_interval=0)
        assert drained is not None
        assert drained.lagging == ()
    finally:
        await probe.close()
