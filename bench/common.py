"""Shared helpers: statistics, machine facts, Kafka plumbing and worker subprocesses."""

from __future__ import annotations

import asyncio
import os
import platform
import signal
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from agents.topology import TopicSpec, topics
from agents.topology_admin import ensure_topics

REPO = Path(__file__).resolve().parents[1]
BOOTSTRAP = os.environ.get("KAFKA_BOOTSTRAP", "127.0.0.1:9092")
MONGO_URL = os.environ.get("MONGO_URL", "mongodb://127.0.0.1:27017/")
RUN_DIR = REPO / "run" / "bench"


def summary(values: Sequence[float], digits: int = 1) -> dict[str, Any]:
    """median / min / max of several runs (and the runs themselves)."""
    vals = [float(v) for v in values if v is not None]
    if not vals:
        return {"median": None, "min": None, "max": None, "runs": []}
    return {
        "median": round(statistics.median(vals), digits),
        "min": round(min(vals), digits),
        "max": round(max(vals), digits),
        "runs": [round(v, digits) for v in vals],
    }


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    k = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[k]


def fresh_prefix(kind: str) -> str:
    return f"bench-{kind}-{uuid.uuid4().hex[:8]}."


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def kafka_version() -> str:
    libs = REPO / "ops" / "kafka" / "lib"
    for jar in sorted(libs.glob("kafka_2.13-*.jar")) if libs.exists() else []:
        return jar.stem.split("-", 1)[1]
    return "4.1.1 (per ops/kafka/pom.xml)"


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gb = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem_gb = round(int(line.split()[1]) / 2**20, 1)
    except OSError:
        pass
    load = os.getloadavg()
    return {
        "cores": os.cpu_count(),
        "ram_gb": mem_gb,
        "cpu_model": model,
        "kernel": platform.release(),
        "loadavg_at_start": [round(x, 2) for x in load],
        "python": sys.version.split()[0],
        "faust-streaming": _version("faust-streaming"),
        "aiokafka": _version("aiokafka"),
        "quixstreams": _version("quixstreams"),
        "confluent-kafka": _version("confluent-kafka"),
        "pymongo": _version("pymongo"),
        "kafka": kafka_version(),
        "ferretdb": "1.24.2",
        # ops/env.sh's default; bench/e2e.py's replay server is started by the same script
        "ferretdb_backend": os.environ.get("FERRETDB_BACKEND", "postgresql") + " + ops/ferretdb patch",
    }


# ---------------------------------------------------------------- Kafka


async def create_topics(prefix: str, partitions: int, extra: Iterable[str] = ()) -> None:
    specs = topics(prefix, partitions) + [TopicSpec(f"{prefix}{name}", "", partitions) for name in extra]
    await ensure_topics(BOOTSTRAP, specs)


async def delete_prefix(prefix: str) -> None:
    """Delete every topic whose name starts with ``prefix`` (ours, changelogs, the peer's)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=BOOTSTRAP)
    await admin.start()
    try:
        names = [t for t in await admin.list_topics() if t.startswith(prefix)]
        if names:
            await admin.delete_topics(names)
    except Exception:  # cleanup is best effort
        pass
    finally:
        await admin.close()


def producer(**kw: Any) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        bootstrap_servers=BOOTSTRAP, acks="all", linger_ms=2, max_request_size=4_194_304, **kw
    )


async def produce_all(topic: str, items: Sequence[tuple[bytes | None, bytes | None]]) -> float:
    """Send everything pipelined (acks=all), wait for every ack; returns the seconds it took."""
    prod = producer()
    await prod.start()
    try:
        t = time.perf_counter()
        futures = [await prod.send(topic, value, key=key) for key, value in items]
        await asyncio.gather(*futures)
        return time.perf_counter() - t
    finally:
        await prod.stop()


async def end_offsets(topic_names: Sequence[str]) -> dict[str, int]:
    """Total records (sum of end offsets) per topic."""
    consumer = AIOKafkaConsumer(bootstrap_servers=BOOTSTRAP, enable_auto_commit=False)
    await consumer.start()
    try:
        parts = []
        for name in topic_names:
            ps = consumer.partitions_for_topic(name)
            if not ps:
                await consumer._client.force_metadata_update()
                ps = consumer.partitions_for_topic(name) or set()
            parts += [TopicPartition(name, p) for p in ps]
        ends = await consumer.end_offsets(parts)
        out = dict.fromkeys(topic_names, 0)
        for tp, off in ends.items():
            out[tp.topic] += off
        return out
    finally:
        await consumer.stop()


async def partitions(consumer: AIOKafkaConsumer, topic: str) -> list[TopicPartition]:
    ps = consumer.partitions_for_topic(topic)
    if not ps:
        await consumer._client.force_metadata_update()
        ps = consumer.partitions_for_topic(topic) or set()
    return [TopicPartition(topic, p) for p in sorted(ps)]


async def read_topic(topic: str, *, expect: int = 0, timeout: float = 60.0) -> list[Any]:
    """Every record from the beginning, waiting until at least ``expect`` arrived."""
    consumer = AIOKafkaConsumer(
        bootstrap_servers=BOOTSTRAP,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=8_388_608,
    )
    await consumer.start()
    try:
        ps = consumer.partitions_for_topic(topic)
        if not ps:
            await consumer._client.force_metadata_update()
            ps = consumer.partitions_for_topic(topic) or set()
        parts = [TopicPartition(topic, p) for p in sorted(ps)]
        consumer.assign(parts)
        await consumer.seek_to_beginning(*parts)
        ends = await consumer.end_offsets(parts)
        records: list[Any] = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=300, max_records=10_000)
            for recs in batch.values():
                records.extend(recs)
            if len(records) >= expect and not batch:
                positions = [await consumer.position(tp) for tp in parts]
                if all(pos >= ends[tp] for pos, tp in zip(positions, parts, strict=True)):
                    break
        return records
    finally:
        await consumer.stop()


async def wait_for(topic_counts: dict[str, int], *, timeout: float, poll: float = 0.05) -> float:
    """Poll end offsets until every topic holds at least its count; returns the monotonic time reached.

    Raises TimeoutError with the last counts."""
    deadline = time.monotonic() + timeout
    last: dict[str, int] = {}
    while time.monotonic() < deadline:
        last = await end_offsets(list(topic_counts))
        if all(last[t] >= n for t, n in topic_counts.items()):
            return time.monotonic()
        await asyncio.sleep(poll)
    raise TimeoutError(f"waited {timeout:.0f} s for {topic_counts}, have {last}")


# ---------------------------------------------------------------- processes


class Proc:
    """A subprocess in its own session, with its log in run/bench."""

    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.args, self.log = args, log
        self.env = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Proc:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        handle = self.log.open("ab")
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

    def check(self) -> None:
        if not self.alive():
            tail = self.log.read_text(errors="replace")[-3000:] if self.log.exists() else ""
            raise RuntimeError(f"{self.args} exited early:\n{tail}")

    def rss_mb(self) -> float | None:
        """Resident set size of the process (VmRSS), MB."""
        if not self.alive() or self.proc is None:
            return None
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS"):
                    return int(line.split()[1]) / 1024
        except OSError:
            return None
        return None

    def hwm_mb(self) -> float | None:
        """Peak resident set size (VmHWM), MB."""
        if not self.alive() or self.proc is None:
            return None
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM"):
                    return int(line.split()[1]) / 1024
        except OSError:
            return None
        return None

    def stop(self, timeout: float = 20.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
