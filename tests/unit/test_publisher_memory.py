"""The Publisher contract (tests/contracts/publisher.py) against the in-memory twin."""

from __future__ import annotations

from collections.abc import AsyncIterator

from controlplane.backends import MemoryPublisher, Publisher
from tests.contracts.publisher import PARTITIONS, PublisherContract


class TestMemoryPublisher(PublisherContract):
    async def started(self) -> AsyncIterator[Publisher]:
        pub = MemoryPublisher(partitions=PARTITIONS)
        await pub.start()
        try:
            yield pub
        finally:
            await pub.stop()

    def topic(self, name: str) -> str:
        return name
