"""The ProjectionStore contract (tests/contracts/projection_store.py) against the in-memory twin."""

from __future__ import annotations

from projections.store import MemoryStore, ProjectionStore
from tests.contracts.projection_store import ProjectionStoreContract


class TestMemoryStore(ProjectionStoreContract):
    def make_store(self, prefix: str) -> ProjectionStore:
        return MemoryStore()
