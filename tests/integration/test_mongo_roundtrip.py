"""A document's round trip through pymongo on the real MongoDB-wire server, and the server behaviour the
projection store relies on (or works around). Fails, never skips, when the server is unreachable."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from pymongo import MongoClient, UpdateOne
from pymongo.database import Database
from pymongo.errors import BulkWriteError, DuplicateKeyError

from projections.fold import DocUpdate, apply_update
from projections.mongo_store import MongoStore, guard_filter, guarded_op

pytestmark = pytest.mark.integration

MONGO_URL = os.environ.get("MONGO_URL", "mongodb://127.0.0.1:27017/")


@pytest.fixture
def connect() -> Iterator[Callable[[], Database[dict[str, Any]]]]:
    """A fresh database, opened inside the test so that an unreachable server fails the test itself."""
    opened: list[tuple[MongoClient[dict[str, Any]], str]] = []

    def open_db() -> Database[dict[str, Any]]:
        client: MongoClient[dict[str, Any]] = MongoClient(MONGO_URL, serverSelectionTimeoutMS=5000)
        try:
            client.admin.command("ping")
        except Exception as exc:
            client.close()
            pytest.fail(
                f"MongoDB at {MONGO_URL} is not reachable ({exc}); start it with ops/ferretdb.sh start"
            )
        name = f"test_{uuid.uuid4().hex[:12]}"
        opened.append((client, name))
        return client[name]

    yield open_db
    for client, _name in opened:
        # Not dropped: see tests/integration/conftest.py mongo_db (FerretDB dropDatabase can wedge).
        client.close()


def test_insert_find_update_delete(connect: Callable[[], Database[dict[str, Any]]]) -> None:
    db = connect()
    docs = db["docs"]
    doc = {
        "_id": "tenant/sha256:ab",
        "status": "completed",
        "counts": {"high": 2},
        "ids": ["a", "b"],
        "n": None,
    }
    docs.insert_one(doc)
    assert docs.find_one({"_id": doc["_id"]}) == doc
    with pytest.raises(DuplicateKeyError):
        docs.insert_one(doc)
    docs.update_one({"_id": doc["_id"]}, {"$set": {"status": "failed", "counts.low": 1}})
    assert docs.find_one({"_id": doc["_id"]}) == doc | {"status": "failed", "counts": {"high": 2, "low": 1}}
    assert docs.delete_one({"_id": doc["_id"]}).deleted_count == 1
    assert docs.find_one({"_id": doc["_id"]}) is None


def test_guarded_update_single_call(connect: Callable[[], Database[dict[str, Any]]]) -> None:
    db = connect()
    docs = db["docs"]
    newer = DocUpdate("jobs", "j1", "job-results:3", 10, set={"status": "completed"})
    older = DocUpdate("jobs", "j1", "job-results:3", 7, set={"status": "failed"})
    docs.update_one(
        guard_filter(newer), {"$set": {"status": "completed", "_pos.job-results:3": 10}}, upsert=True
    )
    # The classic guarded upsert: a refused update surfaces as a duplicate key on the upsert's insert.
    with pytest.raises(DuplicateKeyError):
        docs.update_one(
            guard_filter(older), {"$set": {"status": "failed", "_pos.job-results:3": 7}}, upsert=True
        )
    assert docs.find_one({"_id": "j1"}) == {"_id": "j1", "status": "completed", "_pos": {"job-results:3": 10}}


def test_guarded_upsert_in_a_bulk_is_not_usable(connect: Callable[[], Database[dict[str, Any]]]) -> None:
    db = connect()
    """Why MongoStore does not batch guarded upserts (FerretDB 1.24 stops at the first error even when
    unordered and omits nModified, so pymongo raises KeyError). Either way nothing may change."""
    docs = db["docs"]
    docs.insert_one({"_id": "a", "v": 1, "_pos": {"t:0": 5}})
    stale = DocUpdate("x", "a", "t:0", 3, set={"v": 2})
    with contextlib.suppress(BulkWriteError, KeyError):
        docs.bulk_write([UpdateOne(guard_filter(stale), {"$set": {"v": 2, "_pos.t:0": 3}}, upsert=True)])
    assert docs.find_one({"_id": "a"}) == {"_id": "a", "v": 1, "_pos": {"t:0": 5}}


def test_guarded_write_matches_pure_semantics(connect: Callable[[], Database[dict[str, Any]]]) -> None:
    db = connect()
    docs = db["docs"]
    updates = [
        DocUpdate("c", "d", "t%2Ex:0", 4, set={"a.b": 1, "s": "x", "z": None, "e": []}, max={"m": "b"}),
        DocUpdate("c", "d", "t%2Ex:0", 2, set={"s": "stale"}),  # older: refused without an error
        DocUpdate("c", "d", "u:1", 1, set={"a.c": 2}, set_on_insert={"q": "other"}, min={"m": "a"}),
        DocUpdate("c", "d", "t%2Ex:0", 9, set={"s": "y", "e": [1]}, max={"m": "a"}),
    ]
    docs.insert_one(apply_update(None, updates[0]))
    expected = apply_update(None, updates[0])
    for update in updates[1:]:
        docs.bulk_write([guarded_op(update)], ordered=True)
        expected = apply_update(expected, update)
        assert docs.find_one({"_id": "d"}) == expected
    assert expected == {
        "_id": "d",
        "a": {"b": 1, "c": 2},
        "s": "y",
        "z": None,
        "e": [1],
        "m": "a",
        "_pos": {"t%2Ex:0": 9, "u:1": 1},
    }


def test_store_batch_creates_and_updates_in_one_go(connect: Callable[[], Database[dict[str, Any]]]) -> None:
    db = connect()
    store = MongoStore(db.client, db.name, "p_")
    batch = [
        DocUpdate("jobs", "j", "a:0", 1, set={"x": None, "l": []}, set_on_insert={"status": "queued"}),
        DocUpdate("jobs", "j", "a:0", 3, set={"x": 1}),
        DocUpdate("jobs", "j", "a:0", 2, set={"x": "stale"}),
        DocUpdate("jobs", "k", "b:0", 1, set={"x": 2}),
    ]
    store.apply_documents(batch)
    store.apply_documents(batch)
    assert store.dump("jobs") == [
        {"_id": "j", "x": 1, "l": [], "status": "queued", "_pos": {"a:0": 3}},
        {"_id": "k", "x": 2, "_pos": {"b:0": 1}},
    ]


def test_set_on_insert_drops_null_and_empty_list(connect: Callable[[], Database[dict[str, Any]]]) -> None:
    db = connect()
    """Why MongoStore inserts new documents with insert_many instead of ``$setOnInsert``: FerretDB 1.24
    drops ``null`` / ``[]`` values there (a real MongoDB keeps them). Pins the behaviour we work around."""
    db["d"].update_one({"_id": 1}, {"$setOnInsert": {"a": None, "b": [], "c": 1}}, upsert=True)
    doc = db["d"].find_one({"_id": 1})
    assert doc is not None
    assert doc["c"] == 1
    assert doc in ({"_id": 1, "c": 1}, {"_id": 1, "a": None, "b": [], "c": 1})


def test_rename_collection_without_drop_target(connect: Callable[[], Database[dict[str, Any]]]) -> None:
    db = connect()
    """Plain renames work; ``dropTarget`` does not on FerretDB 1.24, hence the active-prefix pointer."""
    db["old"].insert_one({"_id": 1})
    db["old"].rename("new")
    assert db["new"].find_one({"_id": 1}) == {"_id": 1}
    assert "old" not in db.list_collection_names()
