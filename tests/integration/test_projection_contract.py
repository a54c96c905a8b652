"""The ProjectionStore contract (tests/contracts/projection_store.py) against a real MongoDB-wire server.

MongoDB must be reachable (``MONGO_URL``, default mongodb://127.0.0.1:27017/): when it is not, the cases
fail rather than skip, so a green run always means the real server was exercised.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from pymongo import MongoClient

from projections.fold import JOBS
from projections.mongo_store import MongoStore, active_prefix
from projections.store import ProjectionStore
from tests.contracts.projection_store import Item, ProjectionStoreContract, reference, snapshot

pytestmark = pytest.mark.integration


class TestMongoStore(ProjectionStoreContract):
    @pytest.fixture(autouse=True)
    def _mongo(self, mongo_url: str) -> Iterator[None]:
        self.client: MongoClient[dict[str, Any]] = MongoClient(mongo_url, serverSelectionTimeoutMS=5000)
        self.db_name = f"test_{uuid.uuid4().hex[:12]}"
        yield
        # Not dropped: see tests/integration/conftest.py mongo_db (FerretDB dropDatabase can wedge).
        self.client.close()

    def make_store(self, prefix: str) -> ProjectionStore:
        store = MongoStore(self.client, self.db_name, prefix)
        store.ensure_indexes()
        return store

    def check_switch(self, live: ProjectionStore, rebuilt: ProjectionStore, log: list[Item]) -> None:
        assert isinstance(rebuilt, MongoStore)
        assert isinstance(live, MongoStore)
        assert rebuilt.switch_to() == ""
        assert active_prefix(rebuilt.client, rebuilt.db.name) == "rb1_"
        reader = MongoStore.open_active(rebuilt.client, rebuilt.db.name)
        assert reader.prefix == "rb1_"
        assert snapshot(reader) == reference(log)
        with pytest.raises(ValueError, match="active"):
            rebuilt.drop()
        live.drop()
        assert live.dump(JOBS) == []
        assert reader.get(JOBS, "job-001") is not None
