"""Helpers for integration tests: topics, producing, reading back, worker processes."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from agents.topology import TopicSpec, faust_topics, topics
from agents.topology_admin import ensure_topics

REPO = Path(__file__).resolve().parents[2]


async def create_topics(
    bootstrap: str, prefix: str, partitions: int = 2, extra: tuple[str, ...] = (), app_id: str = ""
) -> None:
    """The project's topics, and with `app_id` that faust app's changelog and leader topics."""
    own = topics(prefix, partitions) + (faust_topics(app_id, partitions) if app_id else [])
    specs = own + [TopicSpec(f"{prefix}{name}", "", partitions) for name in extra]
    await ensure_topics(bootstrap, specs)


async def produce(bootstrap: str, topic: str, items: list[tuple[bytes | None, bytes | None]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for key, value in items:
            await producer.send_and_wait(topic, value, key=key)
    finally:
        await producer.stop()


async def read_all(bootstrap: str, topic: str, *, expect: int = 0, timeout: float = 60.0) -> list[Any]:
    """Every record of a topic from the beginning up to its end offsets, and at least `expect` records
    (waiting for more until `timeout`).

    "Caught up" is the consumer's position reaching the end offsets, not a fetch that came back empty: on a
    loaded machine the first fetch can take longer than one poll, and an empty poll then read as "nothing
    there" (scale-out run: "phase vex: only 0 job record(s)" for 240 s while the topic held 7 jobs)."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest"
    )
    await consumer.start()
    try:
        deadline = time.monotonic() + timeout
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        while not parts and time.monotonic() < deadline:  # metadata can lag on a loaded broker
            await consumer._client.force_metadata_update()
            parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
            if not parts:
                await asyncio.sleep(0.5)
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        ends = await consumer.end_offsets(parts)
        records: list[Any] = []
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=500)
            for tp_records in batch.values():
                records.extend(tp_records)
            if all([await consumer.position(tp) >= ends[tp] for tp in parts]):
                if len(records) >= expect:
                    break
                ends = await consumer.end_offsets(parts)  # fewer than expected so far: wait for more
        return sorted(records, key=lambda r: (r.partition, r.offset))
    finally:
        await consumer.stop()


async def end_offsets(bootstrap: str, names: list[str]) -> dict[tuple[str, int], int]:
    """(topic, partition) → end offset (the next offset to be written)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer._client.force_metadata_update()
        parts = [TopicPartition(t, p) for t in names for p in sorted(consumer.partitions_for_topic(t) or [])]
        ends = await consumer.end_offsets(parts)
        return {(tp.topic, tp.partition): offset for tp, offset in ends.items()}
    finally:
        await consumer.stop()


class Worker:
    """A real worker process (`python -m ...`) with its own environment, stopped or killed on demand."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.args = args
        self.env = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Worker:
        # The child writes to its own copy of the descriptor; the parent's is closed at once (an open
        # handle per worker was a ResourceWarning, an error under filterwarnings = error).
        with self.log.open("ab") as handle:
            self.proc = subprocess.Popen(
                [sys.executable, *self.args],
                cwd=REPO,
                env=self.env,
                stdout=handle,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 30.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def report(self, tail: int = 3000) -> str:
        """For assertion messages: the first few ERROR / CRITICAL lines (why a worker died; its tail only
        shows the shutdown), then the log's tail."""
        text = self.output()
        errors = [
            line[:1500]
            for line in text.splitlines()
            if '"level":"ERROR"' in line or '"level":"CRITICAL"' in line
        ]
        return "first errors:\n" + "\n".join(errors[:4]) + "\n...\n" + text[-tail:]
