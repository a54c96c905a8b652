"""Concurrent updates of one document keep every update (issue 15, fix 5 of ops/ferretdb/'s patch).

FerretDB 1.24.2 runs an update as read-modify-write in its own process (query, apply the operators,
write the whole document back), unguarded: two clients updating one document at once lost one update.
MongoDB never does. These tests start their clients together (a barrier) and count what was kept: the
race window is each update's whole round trip, so an unpatched server loses many (the first test kept
68 and 89 of 400 in two runs), and nothing here waits on a timing."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from pymongo import MongoClient

from projections.fold import JOBS, POS, DocUpdate
from projections.mongo_store import MongoStore

pytestmark = pytest.mark.integration

THREADS = 8
PER_THREAD = 50
CLIENTS = 4
DOCS = 5
ROUNDS = 40
UPSERTED = 20


@pytest.fixture
def db_name(mongo_url: str) -> str:
    return f"test_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def clients(mongo_url: str) -> Iterator[list[MongoClient[dict[str, Any]]]]:
    # One client (so one connection pool) per worker: the server sees truly concurrent commands.
    made: list[MongoClient[dict[str, Any]]] = [
        MongoClient(mongo_url, socketTimeoutMS=180_000) for _ in range(THREADS)
    ]
    yield made
    for client in made:
        client.close()


def _together(workers: list[Callable[[], None]]) -> None:
    """Run workers in threads released at once; re-raise the first failure."""
    start = threading.Barrier(len(workers))

    def run(work: Callable[[], None]) -> None:
        start.wait()
        work()

    with ThreadPoolExecutor(len(workers)) as pool:
        for future in [pool.submit(run, work) for work in workers]:
            future.result()


def test_concurrent_inc_and_set_of_one_document_are_all_kept(
    clients: list[MongoClient[dict[str, Any]]], db_name: str
) -> None:
    clients[0][db_name].create_collection("docs")
    clients[0][db_name]["docs"].insert_one({"_id": "one", "n": 0})

    def worker(t: int) -> Callable[[], None]:
        docs = clients[t][db_name]["docs"]

        def work() -> None:
            for i in range(PER_THREAD):
                result = docs.update_one({"_id": "one"}, {"$inc": {"n": 1}, "$set": {f"t{t}_{i}": i}})
                assert result.matched_count == 1

        return work

    _together([worker(t) for t in range(THREADS)])

    doc = clients[0][db_name]["docs"].find_one({"_id": "one"})
    assert doc is not None
    fields = {key for key in doc if key.startswith("t")}
    lost = sorted({f"t{t}_{i}" for t in range(THREADS) for i in range(PER_THREAD)} - fields)
    assert doc["n"] == THREADS * PER_THREAD, f"$inc kept {doc['n']} of {THREADS * PER_THREAD}"
    assert not lost, f"{len(lost)} of {THREADS * PER_THREAD} $set fields lost, e.g. {lost[:5]}"


def test_concurrent_guarded_updates_of_overlapping_documents_are_all_kept(
    clients: list[MongoClient[dict[str, Any]]], db_name: str
) -> None:
    """Four projectors (each its own partition source, so no guard refuses another's update) write the
    same documents at once through MongoStore.apply_batch: creating them races too (insert_missing)."""
    stores = [MongoStore(clients[c], db_name) for c in range(CLIENTS)]
    stores[0].ensure_indexes()
    doc_ids = [f"job-{d}" for d in range(DOCS)]

    def worker(c: int) -> Callable[[], None]:
        def work() -> None:
            for offset in range(ROUNDS):
                updates = [
                    DocUpdate(JOBS, doc_id, f"jobs:{c}", offset, set={f"c{c}.o{offset}": offset})
                    for doc_id in doc_ids
                ]
                stores[c].apply_batch(updates, [])

        return work

    _together([worker(c) for c in range(CLIENTS)])

    found = {doc["_id"]: doc for doc in stores[0].dump(JOBS)}
    assert sorted(found) == doc_ids
    lost = [
        f"{doc_id}: c{c}.o{offset}"
        for doc_id in doc_ids
        for c in range(CLIENTS)
        for offset in range(ROUNDS)
        if found[doc_id].get(f"c{c}", {}).get(f"o{offset}") != offset
    ]
    assert not lost, f"{len(lost)} of {DOCS * CLIENTS * ROUNDS} updates lost, e.g. {lost[:5]}"
    for doc_id in doc_ids:
        assert found[doc_id][POS] == {f"jobs:{c}": ROUNDS - 1 for c in range(CLIENTS)}


def test_concurrent_upserts_of_missing_documents_all_apply(
    clients: list[MongoClient[dict[str, Any]]], db_name: str
) -> None:
    """Racing upserts of one missing `_id`: one inserts, the others update it (none fails on the unique
    index, as FerretDB did before fix 5, and none is lost)."""
    clients[0][db_name].create_collection("docs")

    def worker(t: int) -> Callable[[], None]:
        docs = clients[t][db_name]["docs"]

        def work() -> None:
            for i in range(UPSERTED):
                docs.update_one({"_id": f"k{i}"}, {"$inc": {"n": 1}}, upsert=True)

        return work

    _together([worker(t) for t in range(THREADS)])

    counts = {doc["_id"]: doc["n"] for doc in clients[0][db_name]["docs"].find()}
    assert counts == {f"k{i}": THREADS for i in range(UPSERTED)}
