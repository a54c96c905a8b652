"""``ProjectionStore`` on MongoDB (pymongo), restricted to what FerretDB 1.24 also implements.

Guarded writes without upserts
------------------------------
The textbook guarded upsert (filter ``{_id, $or: [{_pos.P: {$lt: o}}, {_pos.P: {$exists: false}}]}`` with
``upsert=True``) reports a refused update as E11000 duplicate key. That works for single ``update_one`` calls
on both servers, but FerretDB 1.24 stops an update batch at the first write error even when it is unordered,
and omits ``nModified`` from that reply, which makes pymongo's ``bulk_write`` raise ``KeyError``. Creating
documents with ``$setOnInsert`` instead is out too: FerretDB 1.24 silently drops ``$setOnInsert`` fields
whose value is ``null`` or ``[]``. So a batch is written per collection in three steps:

1. find which of the batch's ids exist (one ``$in`` query);
2. ``insert_many(ordered=False)`` of each missing document as its *first* update in the batch creates it
   (``apply_update(None, u)``, including ``_pos.P = o``). A duplicate key here only means another writer
   created it first, which step 3 handles like any existing document;
3. one ordered ``bulk_write`` of every update as ``{_id, <guard>}`` without upsert (``$set``/``$max``/
   ``$min``). The update that created a document in step 2 finds ``_pos.P == o`` and is a no-op; later ones
   apply in offset order.

That is exactly ``projections.fold.apply_update`` applied in order, with no expected write errors, and no
half-made document is ever visible (an inserted document is already complete).

Switching after a rebuild
-------------------------
FerretDB 1.24 renames collections but refuses ``dropTarget=true``, and renames are per collection anyway. A
rebuild therefore writes collections under a new prefix and ``switch_to`` flips one pointer document
(``projection_meta/active``); readers open the store with ``MongoStore.open_active``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

from pymongo import ASCENDING, MongoClient, UpdateOne
from pymongo.collection import Collection
from pymongo.errors import BulkWriteError, CollectionInvalid

from projections.fold import (
    COLLECTIONS,
    CURSORS,
    DEADLETTERS,
    IMAGES,
    JOBS,
    POS,
    RUNS,
    SCHEDULE_RUNS,
    SCHEDULES,
    WINDOWS,
    Checkpoint,
    Document,
    DocUpdate,
    apply_update,
    checkpoint_id,
)
from projections.store import CHECKPOINTS, After, Page, Where, check_query

META = "projection_meta"
DUPLICATE_KEY = 11000
ACTIVE = "active"

# Every query the API makes is tenant-scoped and paged by (field, _id), so indexes end in _id.
INDEXES: dict[str, list[list[str]]] = {
    RUNS: [["tenant", "_id"], ["tenant", "state", "_id"], ["tenant", "updated_at", "_id"]],
    JOBS: [["tenant", "run_id", "_id"], ["tenant", "status", "_id"], ["tenant", "image_digest", "_id"]],
    IMAGES: [["tenant", "_id"], ["tenant", "verdict", "_id"], ["tenant", "finished_at", "_id"]],
    WINDOWS: [["tenant", "window_start", "_id"]],
    CURSORS: [],
    DEADLETTERS: [["reason", "_id"], ["source_topic", "_id"], ["at", "_id"]],
    SCHEDULES: [["tenant", "_id"]],
    SCHEDULE_RUNS: [["tenant", "schedule_id", "nominal"]],
    CHECKPOINTS: [["group", "_id"]],
}


def guard_filter(update: DocUpdate) -> dict[str, Any]:
    path = f"{POS}.{update.source}"
    return {"_id": update.doc_id, "$or": [{path: {"$lt": update.offset}}, {path: {"$exists": False}}]}


def guarded_op(update: DocUpdate) -> UpdateOne:
    """The update of an existing document, refused by the filter when its partition position is not older."""
    change: dict[str, Any] = {"$set": {**update.set, f"{POS}.{update.source}": update.offset}}
    if update.max:
        change["$max"] = dict(update.max)
    if update.min:
        change["$min"] = dict(update.min)
    return UpdateOne(guard_filter(update), change, upsert=False)


class MongoStore:
    def __init__(self, client: MongoClient[Document], db_name: str, collection_prefix: str = "") -> None:
        self.client = client
        self.db = client[db_name]
        self.prefix = collection_prefix

    @classmethod
    def open_active(cls, client: MongoClient[Document], db_name: str) -> MongoStore:
        """The store readers should use: the prefix the last ``switch_to`` chose ("" before any)."""
        return cls(client, db_name, active_prefix(client, db_name))

    def collection(self, name: str) -> Collection[Document]:
        return self.db[self.prefix + name]

    def ensure_indexes(self) -> None:
        # Create every collection before any write: FerretDB's SQLite backend takes its registry-wide
        # write lock to create a collection, and an upsert that creates one while other connections
        # read and write can deadlock the whole server (seen with v1.24.2 under load).
        existing = set(self.db.list_collection_names())
        for name in (*COLLECTIONS, CHECKPOINTS, META):
            if self.prefix + name not in existing:
                with contextlib.suppress(CollectionInvalid):
                    self.db.create_collection(self.prefix + name)
        for name, indexes in INDEXES.items():
            for fields in indexes:
                self.collection(name).create_index([(f, ASCENDING) for f in fields])

    def apply_documents(self, updates: Sequence[DocUpdate]) -> None:
        by_collection: dict[str, list[DocUpdate]] = {}
        for update in updates:
            by_collection.setdefault(update.collection, []).append(update)
        for name, batch in by_collection.items():
            collection = self.collection(name)
            first: dict[str, DocUpdate] = {}
            for update in batch:
                first.setdefault(update.doc_id, update)
            existing = {doc["_id"] for doc in collection.find({"_id": {"$in": list(first)}}, {"_id": 1})}
            missing = [apply_update(None, u) for doc_id, u in first.items() if doc_id not in existing]
            if missing:
                try:
                    collection.insert_many(missing, ordered=False)
                except BulkWriteError as exc:
                    if any(err.get("code") != DUPLICATE_KEY for err in exc.details.get("writeErrors", [])):
                        raise
            # Ordered: two updates of one document in a batch must apply in offset order.
            collection.bulk_write([guarded_op(u) for u in batch], ordered=True)

    def write_checkpoints(self, checkpoints: Sequence[Checkpoint]) -> None:
        if not checkpoints:
            return
        ops = [
            UpdateOne(
                {"_id": cp.id},
                {
                    "$set": {"group": cp.group, "topic": cp.topic, "partition": cp.partition},
                    "$max": {"offset": cp.offset},
                },
                upsert=True,
            )
            for cp in checkpoints
        ]
        self.collection(CHECKPOINTS).bulk_write(ops, ordered=True)

    def apply_batch(self, updates: Sequence[DocUpdate], checkpoints: Sequence[Checkpoint]) -> None:
        self.apply_documents(updates)
        self.write_checkpoints(checkpoints)

    def get_checkpoint(self, group: str, topic: str, partition: int) -> int | None:
        doc = self.collection(CHECKPOINTS).find_one({"_id": checkpoint_id(group, topic, partition)})
        return None if doc is None else int(doc["offset"])

    def get_checkpoints(self, group: str) -> dict[tuple[str, int], int]:
        return {
            (doc["topic"], int(doc["partition"])): int(doc["offset"])
            for doc in self.collection(CHECKPOINTS).find({"group": group})
        }

    def get(self, collection: str, doc_id: str) -> Document | None:
        return self.collection(collection).find_one({"_id": doc_id})

    def find(
        self,
        collection: str,
        where: Where | None = None,
        *,
        sort: str = "_id",
        after: After | None = None,
        limit: int = 100,
    ) -> Page:
        check_query(collection, where, sort, limit)
        clauses: list[dict[str, Any]] = [{k: v} for k, v in (where or {}).items()]
        if sort != "_id":
            clauses.append({sort: {"$exists": True, "$ne": None}})
        if after is not None:
            value, last_id = after
            if sort == "_id":
                clauses.append({"_id": {"$gt": last_id}})
            else:
                clauses.append({"$or": [{sort: {"$gt": value}}, {sort: value, "_id": {"$gt": last_id}}]})
        query = {"$and": clauses} if clauses else {}
        order = [("_id", ASCENDING)] if sort == "_id" else [(sort, ASCENDING), ("_id", ASCENDING)]
        docs = list(self.collection(collection).find(query, sort=order, limit=limit + 1))
        chosen = docs[:limit]
        if len(docs) <= limit or not chosen:
            return Page(chosen, None)
        last = chosen[-1]
        return Page(chosen, (last["_id"] if sort == "_id" else _get(last, sort), last["_id"]))

    def dump(self, collection: str) -> list[Document]:
        return list(self.collection(collection).find({}, sort=[("_id", ASCENDING)]))

    def switch_to(self, prefix: str | None = None) -> str:
        """Make ``prefix`` (default: this store's) the one readers open; returns the previous one."""
        previous = active_prefix(self.client, self.db.name)
        target = self.prefix if prefix is None else prefix
        self.db[META].update_one({"_id": ACTIVE}, {"$set": {"prefix": target}}, upsert=True)
        return previous

    def drop(self) -> None:
        """Drop this prefix's collections (an old projection after a switch, or a failed rebuild)."""
        if self.prefix == active_prefix(self.client, self.db.name):
            raise ValueError(f"refusing to drop the active projection (prefix {self.prefix!r})")
        for name in (*COLLECTIONS, CHECKPOINTS):
            self.collection(name).drop()


def _get(doc: Document, path: str) -> Any:
    node: Any = doc
    for part in path.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def active_prefix(client: MongoClient[Document], db_name: str) -> str:
    doc = client[db_name][META].find_one({"_id": ACTIVE})
    return "" if doc is None else str(doc["prefix"])
