"""The Publisher contract (tests/contracts/publisher.py) against KafkaPublisher on the real broker."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from agents.topology import TopicSpec
from agents.topology_admin import ensure_topics
from controlplane.backends import KafkaPublisher, Publisher
from tests.contracts.publisher import PARTITIONS, PublisherContract

pytestmark = pytest.mark.integration


class TestKafkaPublisher(PublisherContract):
    @pytest.fixture(autouse=True)
    def _broker(self, kafka_bootstrap: str, prefix: str) -> None:
        self.bootstrap, self.prefix = kafka_bootstrap, prefix

    def topic(self, name: str) -> str:
        return f"{self.prefix}{name}"

    async def started(self) -> AsyncIterator[Publisher]:
        names = [self.topic(n) for n in "abcd"]
        await ensure_topics(self.bootstrap, [TopicSpec(n, "", PARTITIONS) for n in names])
        pub = KafkaPublisher(self.bootstrap)
        await pub.start()
        try:
            yield pub
        finally:
            await pub.stop()
