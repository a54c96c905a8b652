"""The real broker: produce, consume, commit in a consumer group, resume from the committed offset."""

from __future__ import annotations

from aiokafka import AIOKafkaConsumer, TopicPartition

from tests.integration.kit import create_topics, produce


async def _consume(bootstrap: str, topic: str, group: str, n: int) -> list[bytes]:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        got: list[bytes] = []
        while len(got) < n:
            batch = await consumer.getmany(timeout_ms=10_000, max_records=n - len(got))
            assert batch, "no records within 10 s"
            for records in batch.values():
                got.extend(r.value for r in records)
        await consumer.commit()
        return got
    finally:
        await consumer.stop()


async def test_group_commit_and_resume(kafka_bootstrap: str, prefix: str) -> None:
    topic = f"{prefix}roundtrip"
    await create_topics(kafka_bootstrap, prefix, partitions=1, extra=("roundtrip",))
    await produce(kafka_bootstrap, topic, [(b"k", f"m{i}".encode()) for i in range(10)])

    group = f"{prefix}group"
    first = await _consume(kafka_bootstrap, topic, group, 6)
    assert first == [f"m{i}".encode() for i in range(6)]

    # A new consumer in the same group starts where the committed offset says, not at the beginning.
    second = await _consume(kafka_bootstrap, topic, group, 4)
    assert second == [f"m{i}".encode() for i in range(6, 10)]

    consumer = AIOKafkaConsumer(bootstrap_servers=kafka_bootstrap, group_id=group)
    await consumer.start()
    try:
        committed = await consumer.committed(TopicPartition(topic, 0))
    finally:
        await consumer.stop()
    assert committed == 10


async def test_project_topics_are_precreated_with_configs(kafka_bootstrap: str) -> None:
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    from agents.topology import topics

    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        existing = set(await admin.list_topics())
        expected = topics("")
        missing = [s.name for s in expected if s.name not in existing]
        assert not missing, f"`make up` should have created {missing}"
        responses = await admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, "inventory")])
        configs = {c[0]: c[1] for r in responses for res in r.resources for c in res[4]}
        assert configs["cleanup.policy"] == "compact"
        assert configs["retention.ms"] == "-1"
    finally:
        await admin.close()
