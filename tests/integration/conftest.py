"""Fixtures for tests that use the real Kafka broker and MongoDB-wire server.

Both must be running (`make up`, or `.ci/run`). A test that cannot reach them FAILS with a message that
says how to start them; nothing here skips.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from pymongo import MongoClient

from agents.settings import Settings
from agents.topology import topics  # noqa: F401
from tests.integration.kit import Worker, create_topics
from tests.integration.pipeline_kit import Deployment, Pipeline

REPO = Path(__file__).resolve().parents[2]
KAFKA = os.environ.get("KAFKA_BOOTSTRAP", "127.0.0.1:9092")
MONGO = os.environ.get("MONGO_URL", "mongodb://127.0.0.1:27017/")

pytestmark = pytest.mark.integration


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/integration" in str(item.fspath):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def kafka_bootstrap() -> str:
    async def probe() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=KAFKA, request_timeout_ms=5000)
        await admin.start()
        try:
            await admin.list_topics()
        finally:
            await admin.close()

    try:
        asyncio.run(asyncio.wait_for(probe(), 15))
    except Exception as exc:
        pytest.fail(f"Kafka is not reachable at {KAFKA} ({exc!r}); start it with `make up`", pytrace=False)
    return KAFKA


@pytest.fixture(scope="session")
def mongo_url() -> str:
    client: MongoClient[dict[str, Any]] = MongoClient(MONGO, serverSelectionTimeoutMS=5000)
    try:
        client.admin.command("ping")
    except Exception as exc:
        pytest.fail(f"MongoDB is not reachable at {MONGO} ({exc!r}); start it with `make up`", pytrace=False)
    finally:
        client.close()
    return MONGO


@pytest.fixture
def mongo_db(mongo_url: str) -> Iterator[tuple[MongoClient[dict[str, Any]], str]]:
    """A fresh database name. It is deliberately not dropped afterwards: FerretDB's dropDatabase takes
    its registry-wide write lock and, racing a worker that is still shutting down, can wedge the whole
    server; CI starts from an empty run/ folder anyway."""
    client: MongoClient[dict[str, Any]] = MongoClient(mongo_url)
    name = f"test_{uuid.uuid4().hex[:12]}"
    yield client, name
    client.close()


_PREFIXES: list[str] = []


@pytest.fixture
def prefix() -> str:
    """A unique topic prefix, so tests never see each other's messages."""
    name = f"t{uuid.uuid4().hex[:10]}."
    _PREFIXES.append(name)
    return name


@pytest.fixture(scope="module", autouse=True)
def _delete_test_topics() -> Iterator[None]:
    """Each module's topics (faust's changelogs too: they start with the app id, which starts with the
    prefix) are deleted when the module ends, and the next module starts once the broker has dropped them.
    The broker keeps an open file per partition and may not raise its limit here (20,000: ops/kafka.sh):
    kept to the session's end, a whole suite's topics approach it, and a long soak on a broker holding
    earlier runs' topics crossed it (the broker shut down). Not per test and not in the background: with
    deletions running next to the next test's topic creation, that test's producer saw
    NotLeaderForPartition for minutes."""
    first = len(_PREFIXES)
    yield
    if len(_PREFIXES) > first:
        asyncio.run(_delete_topics(tuple(_PREFIXES[first:])))


async def _delete_topics(prefixes: tuple[str, ...], wait_s: float = 120.0) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=KAFKA, request_timeout_ms=30_000)
    await admin.start()
    try:
        names = [t for t in await admin.list_topics() if t.startswith(prefixes)]
        for start in range(0, len(names), 200):
            await admin.delete_topics(names[start : start + 200])
        deadline = time.monotonic() + wait_s
        while names and time.monotonic() < deadline:
            await asyncio.sleep(0.5)
            names = [t for t in await admin.list_topics() if t.startswith(prefixes)]
        if names:
            print(f"{len(names)} of the tests' topics still listed {wait_s:.0f} s after their deletion")
    except Exception as exc:  # cleanup only: no test's outcome depends on it
        print(f"could not delete the tests' topics: {exc!r}")
    finally:
        await admin.close()


@pytest.fixture
def deployment(
    kafka_bootstrap: str,
    mongo_url: str,
    mongo_db: tuple[MongoClient[dict[str, Any]], str],
    prefix: str,
    tmp_path: Path,
) -> Deployment:
    _client, db = mongo_db

    def make(name: str = "", **options: Any) -> Pipeline:
        if not name:
            return Pipeline(kafka_bootstrap, mongo_url, prefix, db, tmp_path, **options)
        return Pipeline(
            kafka_bootstrap, mongo_url, f"{prefix}{name}.", f"{db}_{name}", tmp_path / name, **options
        )

    return make


@pytest.fixture
def projector_settings(
    kafka_bootstrap: str, mongo_url: str, mongo_db: tuple[MongoClient[dict[str, Any]], str], prefix: str
) -> Settings:
    """Settings for a ProjectorService run in the test's process: 2 partitions, topics created."""
    settings = Settings(
        kafka_bootstrap=kafka_bootstrap,
        mongo_url=mongo_url,
        mongo_db=mongo_db[1],
        topic_prefix=prefix,
        app_id=f"{prefix}app",
        partitions=2,
    )
    asyncio.run(create_topics(kafka_bootstrap, prefix))
    return settings


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[list[Worker]]:
    started: list[Worker] = []
    yield started
    for worker in started:
        worker.kill()


@pytest.fixture(scope="module")
def module_deployment(
    kafka_bootstrap: str, mongo_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Deployment:
    """Like `deployment`, for a deployment that outlives one test (a reference run the tests of a module
    compare against): `module_deployment(name, **options)`, with its own prefix, database and folder."""

    def make(name: str = "ref", **options: Any) -> Pipeline:
        prefix = f"t{uuid.uuid4().hex[:10]}.{name}."
        _PREFIXES.append(prefix)
        db = f"test_{uuid.uuid4().hex[:12]}_{name}"
        return Pipeline(kafka_bootstrap, mongo_url, prefix, db, tmp_path_factory.mktemp(name), **options)

    return make
