"""The server takes the projector's write pattern (issue 15): one proof per fix in ops/ferretdb/'s patch,
and the projector-side bounds, on the real MongoDB-wire server (`make up`: FerretDB on PostgreSQL).

The plan checks read the server's own `explain`: FerretDB returns PostgreSQL's plan, MongoDB its winning
plan; either must show an index scan on `_id`, never a scan of the collection. A plan is deterministic,
a timing is not."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from pymongo import MongoClient, UpdateOne, monitoring
from pymongo.database import Database

from projections.fold import JOBS, Checkpoint, DocUpdate
from projections.mongo_store import MAX_WRITES_PER_COMMAND, MongoStore, checkpoint_doc, find_query, guarded_op
from projections.store import CHECKPOINTS, MemoryStore

pytestmark = pytest.mark.integration

GROWN = 100_000
INDEX_SCANS = ("Index Scan", "Bitmap Index Scan", "IDHACK", "IXSCAN", "EXPRESS_IXSCAN")
FULL_SCANS = ("Seq Scan", "COLLSCAN")


@pytest.fixture
def db(mongo_url: str) -> Iterator[Database[dict[str, Any]]]:
    # A socket timeout turns a wedged server into a failure instead of a hung test run; generous, since
    # the machine is shared.
    client: MongoClient[dict[str, Any]] = MongoClient(mongo_url, socketTimeoutMS=180_000)
    yield client[f"test_{uuid.uuid4().hex[:12]}"]
    client.close()


def _update(doc_id: str, offset: int) -> DocUpdate:
    return DocUpdate("jobs", doc_id, "jobs:0", offset, set={"status": f"s{offset}"}, max={"seq": offset})


def _plan(
    db: Database[dict[str, Any]],
    query: dict[str, Any],
    collection: str = "docs",
    sort: list[tuple[str, int]] | None = None,
) -> str:
    command: dict[str, Any] = {"find": collection, "filter": query}
    if sort:
        command["sort"] = dict(sort)
    explained = db.command("explain", command, verbosity="queryPlanner")
    return json.dumps(explained.get("queryPlanner", explained), default=str)


def _assert_index_scan(plan: str) -> None:
    assert any(token in plan for token in INDEX_SCANS), plan
    assert not any(token in plan for token in FULL_SCANS), plan


def test_one_bulk_write_of_500_guarded_updates_returns(db: Database[dict[str, Any]]) -> None:
    """Fix 1: upstream held a connection per update of one `update` command; > 50 of them deadlocked."""
    ids = [f"j{i:04d}" for i in range(500)]
    db.jobs.insert_many([{"_id": i, "status": "new"} for i in ids])
    result = db.jobs.bulk_write([guarded_op(_update(i, 7)) for i in ids], ordered=True)
    assert (result.matched_count, result.modified_count) == (500, 500)
    # Refused by the guard the second time: same offset.
    again = db.jobs.bulk_write([guarded_op(_update(i, 7)) for i in ids], ordered=False)
    assert again.matched_count == 0
    assert db.jobs.count_documents({"status": "s7"}) == 500


def test_id_lookups_use_the_id_index_as_the_collection_grows(db: Database[dict[str, Any]]) -> None:
    """Fixes 2 and 3: `_id` equality and `_id` `$in` are index lookups at 100k documents (upstream: `@>`
    and no `$in` pushdown, a scan of the table for every guarded update)."""
    docs = db.docs
    for start in range(0, GROWN, 10_000):
        docs.insert_many([{"_id": f"d{i:06d}", "n": i} for i in range(start, start + 10_000)], ordered=False)
    _assert_index_scan(_plan(db, {"_id": "d054321"}))
    _assert_index_scan(_plan(db, {"_id": {"$eq": "d054321"}}))
    _assert_index_scan(_plan(db, {"_id": {"$in": ["d000001", "d099999", "nope"]}}))
    # The projector's guarded filter: the `_id` part is pushed down, the `$or` guard is checked on the row.
    _assert_index_scan(_plan(db, {"_id": "d054321", "$or": [{"_pos.p": {"$lt": 3}}, {"_pos.p": None}]}))
    # Pushdown only narrows: results are those of the unpatched server.
    assert docs.find_one({"_id": "d054321"}) == {"_id": "d054321", "n": 54321}
    found = sorted(d["_id"] for d in docs.find({"_id": {"$in": ["d000001", "d099999", "nope", 1]}}))
    assert found == ["d000001", "d099999"]
    assert docs.find_one({"_id": {"$in": []}}) is None


def test_the_store_writes_a_large_batch_in_bounded_commands(db: Database[dict[str, Any]]) -> None:
    """The projector side: any batch size, commands of at most MAX_WRITES_PER_COMMAND updates, reads
    nothing on its hot path, and still applies the fold (the guard) exactly."""
    store = MongoStore(db.client, db.name)
    store.ensure_indexes()
    updates = [_update(f"j{i:04d}", offset) for offset in (1, 2) for i in range(1000)]
    store.apply_documents(updates)
    assert MAX_WRITES_PER_COMMAND * 5 < 50  # five clients under the unpatched server's PostgreSQL pool
    assert store.get("jobs", "j0999") == {
        "_id": "j0999",
        "status": "s2",
        "seq": 2,
        "_pos": {"jobs:0": 2},
    }
    # A fresh store (a restarted projector) does not know the ids: its inserts are refused, its updates
    # apply or are refused by the guard as before.
    again = MongoStore(db.client, db.name)
    again.apply_documents([_update("j0001", 1), _update("j0002", 3), _update("new", 1)])
    assert store.get("jobs", "j0001") == {"_id": "j0001", "status": "s2", "seq": 2, "_pos": {"jobs:0": 2}}
    assert store.get("jobs", "j0002") == {"_id": "j0002", "status": "s3", "seq": 3, "_pos": {"jobs:0": 3}}
    assert store.get("jobs", "new") == {"_id": "new", "status": "s1", "seq": 1, "_pos": {"jobs:0": 1}}


def test_upserting_checkpoints_in_one_command_beyond_the_pool(db: Database[dict[str, Any]]) -> None:
    """Fix 1 with upserts (InsertAll path): 200 upserts in one command."""
    ops = [UpdateOne({"_id": f"c{i}"}, {"$max": {"offset": i}}, upsert=True) for i in range(200)]
    result = db.checkpoints.bulk_write(ops, ordered=True)
    assert result.upserted_count == 200


def test_a_rebuild_load_equals_the_guarded_writes(db: Database[dict[str, Any]]) -> None:
    """The rebuild's bulk load (fold in memory, unordered inserts) leaves what the live projector's guarded
    writes leave, checkpoints included."""
    updates = [_update(f"j{i % 50:02d}", offset) for offset, i in enumerate(range(400), start=1)]
    checkpoints = [Checkpoint("g", "jobs", 0, 400), Checkpoint("g", "jobs", 1, 7)]
    live = MongoStore(db.client, db.name, "live_")
    live.ensure_indexes()
    live.apply_batch(updates, checkpoints)
    memory = MemoryStore()
    memory.apply_batch(updates, checkpoints)
    loaded = MongoStore(db.client, db.name, "rb_")
    loaded.load_memory(memory)
    assert loaded.dump("jobs") == live.dump("jobs") == memory.dump("jobs")
    assert list(db["rb_checkpoints"].find({}, sort=[("_id", 1)])) == list(
        db["live_checkpoints"].find({}, sort=[("_id", 1)])
    )
    assert sorted(db["rb_jobs"].index_information()) == sorted(db["live_jobs"].index_information())


def _job(i: int) -> dict[str, Any]:
    return {
        "_id": f"j{i:06d}",
        "tenant": f"t{i % 100:02d}",
        "run_id": f"r{i // 40:05d}",
        "status": ("queued", "running", "done", "failed")[i % 4],
        "image_digest": f"sha256:{i % 5_000:064d}",
    }


def test_listings_use_the_start_up_indexes_as_the_collection_grows(db: Database[dict[str, Any]]) -> None:
    """Fix 4: the queries the API and the projector run (built by the store itself, `$and` and all) are
    index scans of the indexes `ensure_indexes` creates, at 100k documents (upstream: field equality as
    `@>`, `$and` not pushed down, a scan of the table for every listing)."""
    store = MongoStore(db.client, db.name)
    store.ensure_indexes()
    jobs, checkpoints = store.collection(JOBS), store.collection(CHECKPOINTS)
    for start in range(0, GROWN, 10_000):
        jobs.insert_many([_job(i) for i in range(start, start + 10_000)], ordered=False)
        checkpoints.insert_many(
            [checkpoint_doc(Checkpoint(f"g{i % 500}", "t", i, i)) for i in range(start, start + 10_000)]
        )
    wheres = [
        {"tenant": "t07"},
        {"tenant": "t07", "run_id": "r00107"},
        {"tenant": "t07", "status": "done"},
        {"tenant": "t07", "image_digest": _job(4207)["image_digest"]},
    ]
    for where in wheres:
        for after in (None, ("j050000", "j050000")):
            query, order = find_query(where, "_id", after)
            _assert_index_scan(_plan(db, query, jobs.name, order))
    _assert_index_scan(_plan(db, {"group": "g42"}, checkpoints.name))
    # Pushdown only narrows: the pages are those of a scan.
    page = store.find(JOBS, {"tenant": "t07", "run_id": "r00107"}, limit=100)
    assert [d["_id"] for d in page.items] == [f"j{i:06d}" for i in range(4280, 4320) if i % 100 == 7]
    assert len(store.get_checkpoints("g42")) == GROWN // 500


def test_pushed_down_equality_keeps_mongodb_semantics(db: Database[dict[str, Any]]) -> None:
    """`{f: v}` matches an array f holding v, compares numbers by value and types apart; the patch's
    `=` pushdown must not lose any of those documents."""
    db.docs.create_index([("tenant", 1), ("tag", 1)])
    db.docs.insert_many(
        [
            {"_id": 1, "tenant": "a", "tag": "x"},
            {"_id": 2, "tenant": "a", "tag": ["y", "x"]},
            {"_id": 3, "tenant": ["b", "a"], "tag": "x"},
            {"_id": 4, "tenant": "a", "tag": "y"},
            {"_id": 5, "tenant": "a", "tag": []},
            {"_id": 6, "tenant": "a", "tag": {"x": 1}},
            {"_id": 7, "tenant": "a", "tag": 2},
            {"_id": 8, "tenant": "a", "tag": 2.0},
            {"_id": 10, "tenant": "a", "tag": "it's"},
        ]
    )

    def ids(query: dict[str, Any]) -> list[int]:
        return sorted(int(d["_id"]) for d in db.docs.find(query))

    assert ids({"tenant": "a", "tag": "x"}) == [1, 2, 3]
    assert ids({"$and": [{"tenant": "a"}, {"tag": {"$eq": "x"}}]}) == [1, 2, 3]
    assert ids({"tenant": "a", "tag": 2}) == [7, 8]
    assert ids({"tag": "it's"}) == [10]
    assert ids({"tag": True}) == []


class _Commands(monitoring.CommandListener):
    def __init__(self) -> None:
        self.names: list[str] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.names.append(event.command_name)

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


def test_the_update_that_created_a_document_is_not_sent(mongo_url: str) -> None:
    """A document the store's insert created already holds its first update: only later updates, and
    first updates whose insert was refused (the document existed), are sent as guarded updates."""
    commands = _Commands()
    client: MongoClient[dict[str, Any]] = MongoClient(mongo_url, event_listeners=[commands])
    try:
        store = MongoStore(client, f"test_{uuid.uuid4().hex[:12]}")
        store.ensure_indexes()
        commands.names.clear()
        store.apply_documents([_update(f"j{i:03d}", 1) for i in range(100)])
        assert commands.names == ["insert"]
        commands.names.clear()
        fresh = MongoStore(client, store.db.name)  # a restarted projector: its inserts are refused
        fresh.apply_documents([_update("j000", 2), _update("j001", 1), _update("new", 1), _update("new", 2)])
        assert commands.names == ["insert", "update"]
        assert [store.get("jobs", i) for i in ("j000", "j001", "new")] == [
            {"_id": "j000", "status": "s2", "seq": 2, "_pos": {"jobs:0": 2}},
            {"_id": "j001", "status": "s1", "seq": 1, "_pos": {"jobs:0": 1}},
            {"_id": "new", "status": "s2", "seq": 2, "_pos": {"jobs:0": 2}},
        ]
    finally:
        client.close()


def test_a_concurrent_load_equals_a_load_one_collection_at_a_time(db: Database[dict[str, Any]]) -> None:
    """``load`` writes several collections at a time (LOAD_WORKERS): the same documents and checkpoints as one
    collection after the other."""
    memory = MemoryStore()
    updates = [_update(f"j{i:03d}", i) for i in range(1, 2_500)]
    updates += [
        DocUpdate(other, f"{other}-{i:03d}", "x:0", i, set={"n": i, "nested": {"k": [i, str(i)]}})
        for other in ("runs", "images", "windows")
        for i in range(1, 1_200)
    ]
    memory.apply_batch(updates, [Checkpoint("g", "jobs", 0, 2_499), Checkpoint("g", "x", 0, 1_199)])
    one = MongoStore(db.client, db.name, "one_")
    one.load(memory.state, list(memory.checkpoints.values()), workers=1)
    many = MongoStore(db.client, db.name, "many_")
    many.load(memory.state, list(memory.checkpoints.values()), workers=3)
    for name in ("jobs", "runs", "images", "windows"):
        assert many.dump(name) == one.dump(name) == memory.dump(name)
    assert list(db["many_checkpoints"].find({}, sort=[("_id", 1)])) == list(
        db["one_checkpoints"].find({}, sort=[("_id", 1)])
    )
