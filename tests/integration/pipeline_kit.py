"""Drive a real worker process through scripted phases of input, for the pipeline tests.

Inputs are built from the real sample files but placed on a clean event-time timeline, and each phase is
published only after the previous one has settled, so what the stream emits is fully determined by the
input log (docs/architecture.md §3) and can be compared with `preview` and with a second run.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pymongo import MongoClient

from agents.settings import Settings
from ingest.detect import parse_file
from schemas.codec import encode
from schemas.messages import AdvisoryDelta, Inventory, VexStatement
from signing.keys import generate_keypair
from tests.conftest import sample_data
from tests.integration.kit import Worker, create_topics, produce, read_all

T0 = datetime(2026, 1, 5, 12, 0, 0, tzinfo=UTC)
CERN_A = "sha256:" + "a1" * 32
CERN_B = "sha256:" + "b2" * 32


def inventories() -> list[Inventory]:
    data = sample_data()
    out: list[Inventory] = []
    for tenant, digest in (("acme", CERN_A), ("beta", CERN_B)):
        result = parse_file(
            "sbom",
            (data / "sbom/cyclonedx/cern-lhc-vdm-editor.json").read_bytes(),
            "cern-lhc-vdm-editor.json",
            tenant=tenant,
            image_digest=digest,
            repository="registry.example/vdm-editor",
            observed_at=T0,
            kev_ids=frozenset(),
        )
        assert result.ok, result.errors
        out += [m for m in result.messages if isinstance(m, Inventory)]
    alpine = parse_file(
        "sbom",
        (data / "sbom/cyclonedx/alpine-cyclonedx.json").read_bytes(),
        "alpine-cyclonedx.json",
        tenant="acme",
        image_digest=None,
        repository=None,
        observed_at=T0,
        kev_ids=frozenset(),
    )
    out += [m for m in alpine.messages if isinstance(m, Inventory)]
    return out


def advisories(at: datetime) -> list[AdvisoryDelta]:
    out: list[AdvisoryDelta] = []
    for path in sorted((sample_data() / "osv/ghsa").glob("GHSA-*.json")):
        result = parse_file(
            "osv",
            path.read_bytes(),
            path.name,
            tenant=None,
            image_digest=None,
            repository=None,
            observed_at=None,
            kev_ids=frozenset(),
        )
        out += [
            m.model_copy(update={"modified": at}) for m in result.messages if isinstance(m, AdvisoryDelta)
        ]
    return out


def vex_minimist(at: datetime) -> list[VexStatement]:
    doc = (
        b'{"@context":"https://openvex.dev/ns/v0.2.0","@id":"https://example.test/vex/1","author":"test",'
        b'"timestamp":"2026-01-05T12:02:00Z","version":1,"statements":[{"vulnerability":{"name":'
        b'"GHSA-vh95-rmgr-6w4m"},"products":[{"@id":"pkg:npm/minimist@0.0.8"}],"status":"not_affected",'
        b'"justification":"vulnerable_code_not_in_execute_path"}]}'
    )
    result = parse_file(
        "vex",
        doc,
        "test.vex.json",
        tenant=None,
        image_digest=None,
        repository=None,
        observed_at=None,
        kev_ids=frozenset(),
    )
    assert result.ok, result.errors
    return [m.model_copy(update={"timestamp": at}) for m in result.messages if isinstance(m, VexStatement)]


def key_of(message: BaseModel) -> bytes:
    if isinstance(message, Inventory):
        return f"{message.tenant}/{message.image_digest}".encode()
    if isinstance(message, AdvisoryDelta):
        return message.id.encode()
    if isinstance(message, VexStatement):
        return message.vulnerability.encode()
    raise TypeError(type(message))


TOPIC_OF = {Inventory: "inventory", AdvisoryDelta: "advisories", VexStatement: "vex"}


@dataclass
class Pipeline:
    """One isolated deployment: its own topics, consumer groups, database and signing key."""

    bootstrap: str
    mongo_url: str
    prefix: str
    db: str
    home: Path
    partitions: int = 2
    trace: bool = False  # workers log every handled record (replay_kit.skipped_offsets reads it)
    workers: list[Worker] = field(default_factory=list)
    client: MongoClient[dict[str, Any]] | None = field(default=None, repr=False)

    def api_settings(self, **extra: Any) -> Settings:
        """The control plane's settings for this deployment: the workers' broker, database, prefix, app id
        and partitions (``extra``: e.g. ``public_keys``)."""
        env = self.env()
        return Settings(
            kafka_bootstrap=env["KAFKA_BOOTSTRAP"],
            mongo_url=env["MONGO_URL"],
            mongo_db=env["STELLA_MONGO_DB"],
            topic_prefix=env["STELLA_TOPIC_PREFIX"],
            app_id=env["STELLA_APP_ID"],
            partitions=int(env["STELLA_PARTITIONS"]),
            **extra,
        )

    def env(self) -> dict[str, str]:
        return {
            "KAFKA_BOOTSTRAP": self.bootstrap,
            "MONGO_URL": self.mongo_url,
            "STELLA_TOPIC_PREFIX": self.prefix,
            "STELLA_APP_ID": f"{self.prefix}app",
            "STELLA_PARTITIONS": str(self.partitions),
            "STELLA_MONGO_DB": self.db,
            "STELLA_DATA_DIR": str(self.home / "data"),
            "STELLA_WINDOW_SECONDS": "30",
            "STELLA_GRACE_SECONDS": "5",
            "STELLA_IDLE_FLUSH_SECONDS": "3",
            "STELLA_WEB_PORT": "0",
            "STELLA_SIGNING_KEY_FILE": str(self.home / "keys" / "test.key"),
            "STELLA_LOG_LEVEL": "INFO",
            # 2: also every fetch and delivery (agents/rewind.py diagnostics), e.g. STELLA_TEST_TRACE=2
            "STELLA_TRACE_RECORDS": os.environ.get("STELLA_TEST_TRACE", "1") if self.trace else "0",
            # No wall-clock sealing of audit batches unless a test asks: its late records would land
            # after a test has taken its snapshot of the topics (tests/integration/test_audit_ledger.py).
            "STELLA_AUDIT_SEAL_SECONDS": "86400",
        }

    async def start(self, workers: int = 1, extra_env: dict[str, str] | None = None) -> None:
        (self.home / "keys").mkdir(parents=True, exist_ok=True)
        if not (self.home / "keys" / "test.key").exists():
            generate_keypair(self.home / "keys" / "test.key", self.home / "keys" / "test.pub.json")
        await create_topics(
            self.bootstrap, self.prefix, partitions=self.partitions, app_id=f"{self.prefix}app"
        )
        for _ in range(workers):
            self.add_worker(extra_env)

    def add_worker(self, extra_env: dict[str, str] | None = None) -> Worker:
        n = len(self.workers)
        # Its own data directory (STELLA_WORKER_NAME): a restart of this Worker finds its local tables.
        env = {**self.env(), "STELLA_WORKER_NAME": f"worker{n}", **(extra_env or {})}
        worker = Worker(["-m", "agents.worker"], env, self.home / f"worker{n}.log")
        self.workers.append(worker.start())
        return worker

    def alive(self) -> None:
        for worker in self.workers:
            if worker.proc is not None and worker.proc.returncode is None:
                assert worker.alive(), worker.report()

    async def publish(self, messages: Sequence[BaseModel]) -> None:
        by_topic: dict[str, list[tuple[bytes | None, bytes | None]]] = {}
        for message in messages:
            by_topic.setdefault(TOPIC_OF[type(message)], []).append((key_of(message), encode(message)))
        for topic, items in by_topic.items():
            await produce(self.bootstrap, f"{self.prefix}{topic}", items)

    async def records(self, logical: str, expect: int = 0, timeout: float = 5.0) -> list[Any]:
        return await read_all(self.bootstrap, f"{self.prefix}{logical}", expect=expect, timeout=timeout)

    def mongo(self) -> Any:
        # One client per deployment, closed by stop(): a client per call was left for the garbage
        # collector (pymongo's "Unclosed MongoClient" ResourceWarning, an error in the test run).
        if self.client is None:
            self.client = MongoClient(self.mongo_url)
        return self.client[self.db]

    async def settle(self, timeout: float = 120.0, quiet: float = 6.0, min_jobs: int = 0) -> None:
        """Wait until at least `min_jobs` distinct jobs exist, every job emitted so far has a terminal
        result, and no new job or run event has appeared for `quiet` seconds.

        Pass `min_jobs` whenever the phase must produce jobs: a window is only flushed after the tenant
        has been idle, so right after publishing there may be nothing yet, and "no job, nothing pending"
        would otherwise pass for settled."""
        deadline = time.monotonic() + timeout
        last: tuple[int, int, int] | None = None
        stable_since = time.monotonic()
        while time.monotonic() < deadline:
            self.alive()
            jobs = await self.records("jobs", timeout=30.0)
            results = await self.records("job-results", timeout=30.0)
            results += await self.records("simulation-results", timeout=30.0)  # simulation jobs end there
            runs = await self.records("run-events", timeout=30.0)
            job_ids = {_field(r.value, "job_id") for r in jobs}
            done = {_field(r.value, "job_id") for r in results}
            now = (len(jobs), len(results), len(runs))
            if now != last:
                last, stable_since = now, time.monotonic()
            enough = len(job_ids) >= min_jobs
            if enough and job_ids <= done and time.monotonic() - stable_since >= quiet:
                return
            await asyncio.sleep(1.0)
        logs = "\n".join(w.output()[-3000:] for w in self.workers)
        raise AssertionError(
            f"pipeline did not settle within {timeout:.0f} s (jobs/results/runs {last})\n{logs}"
        )

    def stop(self) -> None:
        for worker in self.workers:
            worker.stop()
        if self.client is not None:
            self.client.close()
            self.client = None


def _field(value: bytes, name: str) -> str:
    import orjson

    return str(orjson.loads(value)[name])


def later(seconds: int) -> datetime:
    return T0 + timedelta(seconds=seconds)


Deployment = Callable[..., Pipeline]
"""The `deployment` fixture: `deployment()` is the test's own pipeline (its prefix, database and folder);
`deployment("b", **options)` one more beside it (prefix + "b.", database + "_b", folder b/)."""
