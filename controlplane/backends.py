"""What the API talks to: a Kafka publisher and the MongoDB read models, behind small protocols so that
unit tests can swap in in-memory twins."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from aiokafka import AIOKafkaProducer
from pymongo import MongoClient

from projections.fold import Document
from projections.mongo_store import MongoStore
from projections.store import MemoryStore, ProjectionStore


@dataclass(frozen=True, slots=True)
class Produced:
    topic: str
    partition: int
    offset: int

    def as_dict(self) -> dict[str, Any]:
        return {"topic": self.topic, "partition": self.partition, "offset": self.offset}

    def text(self) -> str:
        return f"{self.topic}:{self.partition}:{self.offset}"


Record = tuple[str, bytes | None, bytes | None]  # topic, key, value


class Publisher(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    async def send_many(self, records: Sequence[Record]) -> list[Produced]:
        """Produce in order and wait for every acknowledgement; positions in the same order."""
        ...

    async def ready(self) -> bool: ...


class KafkaPublisher:
    """aiokafka producer, ``acks=all``, idempotent, created on ``start`` inside the server's loop."""

    def __init__(self, bootstrap: str, max_request_bytes: int = 2_097_152) -> None:
        self.bootstrap = bootstrap
        self.max_request_bytes = max_request_bytes
        self._producer: AIOKafkaProducer | None = None

    async def start(self) -> None:
        producer = AIOKafkaProducer(
            bootstrap_servers=self.bootstrap,
            acks="all",
            enable_idempotence=True,
            max_request_size=self.max_request_bytes,
            request_timeout_ms=15000,
        )
        try:
            await producer.start()
        except Exception:
            with contextlib.suppress(Exception):
                await producer.stop()
            raise
        self._producer = producer

    async def stop(self) -> None:
        if self._producer is not None:
            producer, self._producer = self._producer, None
            await producer.stop()

    def _require(self) -> AIOKafkaProducer:
        if self._producer is None:
            raise RuntimeError("the Kafka producer is not started")
        return self._producer

    async def send_many(self, records: Sequence[Record]) -> list[Produced]:
        producer = self._require()
        futures = [await producer.send(topic, value, key=key) for topic, key, value in records]
        metas = await asyncio.gather(*futures)
        return [Produced(m.topic, m.partition, m.offset) for m in metas]

    async def ready(self) -> bool:
        producer = self._producer
        if producer is None:
            return False
        try:
            ok = await asyncio.wait_for(producer.client.force_metadata_update(), 3.0)
        except Exception:
            return False
        return bool(ok) and bool(producer.client.cluster.brokers())


class ReadModels(Protocol):
    def store(self) -> ProjectionStore:
        """The store to read now (after a rebuild switch, the new collections)."""
        ...

    def ping(self) -> None:
        """Raise when the database is unreachable."""
        ...

    def close(self) -> None: ...


class MongoReadModels:
    def __init__(self, url: str, db: str, *, timeout_ms: int = 3000) -> None:
        # socketTimeoutMS and timeoutMS (pymongo's client-side operation timeout) bound a call on a
        # connection the database stopped answering; without them a stalled database hangs reads forever.
        self.client: MongoClient[Document] = MongoClient(
            url,
            serverSelectionTimeoutMS=timeout_ms,
            connectTimeoutMS=timeout_ms,
            socketTimeoutMS=timeout_ms,
            timeoutMS=timeout_ms,
            tz_aware=False,
        )
        self.db = db

    def store(self) -> ProjectionStore:
        return MongoStore.open_active(self.client, self.db)

    def ping(self) -> None:
        self.client.admin.command("ping")

    def close(self) -> None:
        self.client.close()


class MemoryReadModels:
    """The in-memory twin (unit tests, demos without MongoDB)."""

    def __init__(self, store: MemoryStore | None = None) -> None:
        self.memory = store if store is not None else MemoryStore()

    def store(self) -> ProjectionStore:
        return self.memory

    def ping(self) -> None:
        return None

    def close(self) -> None:
        return None


class MemoryPublisher:
    """Keeps produced records in a list, partition = hash of the key mod ``partitions``."""

    def __init__(self, partitions: int = 1, on_send: Callable[[Record], None] | None = None) -> None:
        self.partitions = partitions
        self.records: list[tuple[str, int, int, bytes | None, bytes | None]] = []
        self._offsets: dict[tuple[str, int], int] = {}
        self.on_send = on_send

    async def start(self) -> None:
        return None

    async def stop(self) -> None:
        return None

    async def send_many(self, records: Sequence[Record]) -> list[Produced]:
        out: list[Produced] = []
        for record in records:
            topic, key, value = record
            partition = (sum(key) if key else 0) % self.partitions
            offset = self._offsets.get((topic, partition), -1) + 1
            self._offsets[(topic, partition)] = offset
            self.records.append((topic, partition, offset, key, value))
            if self.on_send is not None:
                self.on_send(record)
            out.append(Produced(topic, partition, offset))
        return out

    async def ready(self) -> bool:
        return True
