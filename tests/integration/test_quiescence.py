"""agents/quiescence.py against the real broker: lag from committed vs end offsets, and impacts' ends."""

from __future__ import annotations

from datetime import UTC, datetime

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from agents.quiescence import UpstreamProbe
from agents.settings import Settings
from schemas.codec import encode
from schemas.messages import ReportSeen, Tick
from streams.windows import FlushDecision, idle_flush
from tests.integration.kit import create_topics, produce
from tests.integration.pipeline_kit import inventories


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


async def test_ticks_after_the_last_impact_are_told_apart_from_impacts(
    kafka_bootstrap: str, prefix: str
) -> None:
    """`ticks_from`: where the trailing ticks of each `impacts` partition start (the idle-flush gate lets a
    tick followed only by ticks flush)."""
    await create_topics(kafka_bootstrap, prefix, partitions=2)
    settings = Settings(kafka_bootstrap=kafka_bootstrap, topic_prefix=prefix, partitions=2)
    probe = UpstreamProbe(settings, f"{prefix}app")
    impacts = f"{prefix}impacts"

    def tick(partition: int) -> tuple[bytes, bytes]:
        return b"tick", encode(Tick(partition=partition, at=datetime(2026, 1, 1, tzinfo=UTC)))

    try:
        # partition 0: tick, impact, tick, tick -> only ticks from offset 2
        # (an impact keyed "tick" is still an impact: the schema decides)
        await _produce_to(
            kafka_bootstrap, impacts, 0, [tick(0), (b"tick", b'{"schema": "scheduler.impact@1"}')]
        )
        await _produce_to(kafka_bootstrap, impacts, 0, [tick(0), tick(0)])
        # partition 1: ticks only -> from its first offset
        await _produce_to(kafka_bootstrap, impacts, 1, [tick(1), tick(1)])
        snapshot = await probe.refresh(min_interval=0)
        assert snapshot is not None
        assert snapshot.impacts_end == {0: 4, 1: 2}
        assert snapshot.ticks_from == {0: 2, 1: 0}
        assert idle_flush(5, 3, 300, snapshot, 0, 2) is FlushDecision.FLUSH
        assert idle_flush(5, 3, 300, snapshot, 0, 0) is FlushDecision.WAIT  # the impact at 1 follows it
        # Between snapshots the probe's consumer holds no partition: no fetch of its waits at the end of
        # `impacts` for the next snapshot's reads to queue behind. The next snapshot reads as before.
        assert probe._consumer is not None
        assert probe._consumer.assignment() == set()
        await _produce_to(
            kafka_bootstrap, impacts, 1, [(b"tick", b'{"schema": "scheduler.impact@1"}'), tick(1)]
        )
        again = await probe.refresh(min_interval=0)
        assert again is not None
        assert again.impacts_end == {0: 4, 1: 4}
        assert again.ticks_from == {0: 2, 1: 3}
    finally:
        await probe.close()


async def _produce_to(bootstrap: str, topic: str, partition: int, items: list[tuple[bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for key, value in items:
            await producer.send_and_wait(topic, value, key=key, partition=partition)
    finally:
        await producer.stop()


async def test_uncommitted_report_seen_records_are_no_lag_but_an_inventory_among_them_is(
    kafka_bootstrap: str, prefix: str
) -> None:
    """Completed jobs' ReportSeen on `catalog-updates` cannot lead to an impact: lag made only of them does not
    hold an idle flush, while any other record before the end still does."""
    await create_topics(kafka_bootstrap, prefix, partitions=1)
    settings = Settings(kafka_bootstrap=kafka_bootstrap, topic_prefix=prefix, partitions=1)
    probe = UpstreamProbe(settings, f"{prefix}app")
    at = datetime(2026, 1, 5, 12, tzinfo=UTC)
    seen = encode(ReportSeen(tenant="acme", image_digest="sha256:" + "a" * 64, at=at))
    try:
        await produce(kafka_bootstrap, f"{prefix}catalog-updates", [(b"acme", seen)] * 3)
        only_reports = await probe.refresh(min_interval=0)
        assert only_reports is not None
        assert only_reports.lagging == ()

        inventory = encode(inventories()[0])
        await produce(kafka_bootstrap, f"{prefix}catalog-updates", [(b"acme", inventory), (b"acme", seen)])
        with_inventory = await probe.refresh(min_interval=0)
        assert with_inventory is not None
        assert with_inventory.lagging == ((f"{prefix}catalog-updates", 0),)
    finally:
        await probe.close()
