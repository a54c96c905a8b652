"""The Publisher port's contract (controlplane.backends.Publisher), as an abstract suite: the API's
read-your-writes and its answers rely on every publisher returning, per record and in order, the position
the broker gave it. tests/unit/test_publisher_memory.py runs it against MemoryPublisher,
tests/integration/test_publisher_contract.py against KafkaPublisher on the real broker."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from controlplane.backends import Publisher

PARTITIONS = 2


class PublisherContract:
    """Subclass as ``Test...``: ``started`` yields a started publisher; ``topic`` names a topic with
    ``PARTITIONS`` partitions that no other test writes to."""

    def started(self) -> AsyncIterator[Publisher]:
        raise NotImplementedError

    def topic(self, name: str) -> str:
        raise NotImplementedError

    @asynccontextmanager
    async def publisher(self) -> AsyncIterator[Publisher]:
        async with asynccontextmanager(self.started)() as pub:
            yield pub

    async def test_one_position_per_record_in_order(self) -> None:
        topic, other = self.topic("a"), self.topic("b")
        records = [(topic, b"k1", b"v1"), (other, b"k2", b"v2"), (topic, None, b"v3")]
        async with self.publisher() as pub:
            assert await pub.ready()
            produced = await pub.send_many(records)
            assert [p.topic for p in produced] == [topic, other, topic]
            assert all(0 <= p.partition < PARTITIONS and p.offset >= 0 for p in produced)
            assert await pub.send_many([]) == []

    async def test_offsets_grow_per_partition_and_a_key_keeps_its_partition(self) -> None:
        topic = self.topic("c")
        keys = [f"key-{i % 5}".encode() for i in range(20)]
        async with self.publisher() as pub:
            first = await pub.send_many([(topic, k, b"x") for k in keys[:10]])
            second = await pub.send_many([(topic, k, b"y") for k in keys[10:]])
        produced = first + second
        partition_of: dict[bytes, int] = {}
        last: dict[int, int] = {}
        for key, p in zip(keys, produced, strict=True):
            assert partition_of.setdefault(key, p.partition) == p.partition, key
            assert p.offset > last.get(p.partition, -1), (p, last)
            last[p.partition] = p.offset
        assert len({p.text() for p in produced}) == len(produced)

    async def test_stop_twice_is_harmless(self) -> None:
        async with self.publisher() as pub:
            await pub.send_many([(self.topic("d"), b"k", b"v")])
            await pub.stop()
