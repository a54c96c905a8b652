"""``ProjectionStore`` on MongoDB (pymongo), restricted to what FerretDB 1.24 also implements.

Guarded writes without upserts
------------------------------
The textbook guarded upsert (filter ``{_id, $or: [{_pos.P: {$lt: o}}, {_pos.P: {$exists: false}}]}`` with
``upsert=True``) reports a refused update as E11000 duplicate key. That works for single ``update_one`` calls
on both servers, but FerretDB 1.24 stops an update batch at the first write error even when it is unordered,
and omits ``nModified`` from that reply, which makes pymongo's ``bulk_write`` raise ``KeyError``. Creating
documents with ``$setOnInsert`` instead is out too: FerretDB 1.24 silently drops ``$setOnInsert`` fields
whose value is ``null`` or ``[]``. So a batch is written per collection in two steps:

1. ``insert_many(ordered=False)`` of each document the store does not know to exist, as its *first* update
   in the batch creates it (``apply_update(None, u)``, including ``_pos.P = o``). A duplicate key only
   means the document exists already (another writer, or an earlier life of this process), which step 2
   handles like any existing document. Documents are never deleted, so once inserted or refused as a
   duplicate an id is remembered (a bounded LRU): in steady state this step sends nothing, and the hot
   path reads nothing at all (no ``$in`` existence query, which FerretDB without our patch answers with a
   full scan of the collection);
2. ordered ``bulk_write`` chunks of every other update as ``{_id, <guard>}`` without upsert (``$set``/
   ``$max``/``$min``). The update that created a document in step 1 is not sent (it would find
   ``_pos.P == o`` and be a no-op); one whose insert was refused as a duplicate is. They apply in offset
   order (chunks are sent one after the other, each ordered).

That is exactly ``projections.fold.apply_update`` applied in order, with no expected write errors, and no
half-made document is ever visible (an inserted document is already complete).

Bounded commands
----------------
Every write command carries at most ``MAX_WRITES_PER_COMMAND`` updates: FerretDB 1.24.2 without our patch
(ops/ferretdb/) holds one backend connection per update of an ``update`` command until the command ends,
so a command longer than its pool (50 on PostgreSQL, 100 on SQLite) deadlocks the server. Every query the
API and the projector run has an index made at start-up (``INDEXES``, docs/read-models.md).

Switching after a rebuild
-------------------------
FerretDB 1.24 renames collections but refuses ``dropTarget=true``, and renames are per collection anyway. A
rebuild therefore writes collections under a new prefix and ``switch_to`` flips one pointer document
(``projection_meta/active``); readers open the store with ``MongoStore.open_active``.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from pymongo import ASCENDING, DESCENDING, MongoClient, UpdateOne
from pymongo.collection import Collection
from pymongo.errors import BulkWriteError, CollectionInvalid, OperationFailure

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
    SIMULATIONS,
    WINDOWS,
    Checkpoint,
    Document,
    DocUpdate,
    apply_update,
    checkpoint_id,
)
from projections.store import CHECKPOINTS, After, MemoryStore, Page, Where, check_query

META = "projection_meta"
DUPLICATE_KEY = 11000
NAMESPACE_EXISTS = 48
ACTIVE = "active"

# Updates per write command. FerretDB 1.24.2 without our patch holds a backend connection per update of a
# command until the command ends, from a pool of 50 (PostgreSQL) shared by every client: with 8, five
# projector clients writing at once hold at most 45 (plus one transient each). 40 per command measured
# about 1.3x the rate on the patched server (docs/read-models.md) but two clients could exhaust an
# unpatched server's pool.
MAX_WRITES_PER_COMMAND = 8
# Documents per insert command (pymongo splits further by message size).
MAX_INSERTS_PER_COMMAND = 1000
# Collections a rebuild loads at a time: the client encodes, FerretDB converts and PostgreSQL writes in
# turn, so one command at a time leaves most of them idle. A bulk load of 68,116 documents (bench
# rebuild_rate) took 60.9-63.7 s one collection at a time and 51.3 s three at a time, on a loaded machine.
LOAD_WORKERS = 3
# Ids remembered as existing, per store (an LRU; forgetting one only costs a refused insert).
KNOWN_IDS = 200_000

# Every query the API and the projector make, with the index that answers it (docs/read-models.md). API
# queries are tenant-scoped and paged by (sort field, _id), so indexes end in the sort field and _id.
# Lookups by _id (get, guarded updates, checkpoints, the active pointer) use the _id index every
# collection has.
INDEXES: dict[str, list[list[str]]] = {
    # GET /runs[?state=] sorted by created_at
    RUNS: [["tenant", "created_at", "_id"], ["tenant", "state", "created_at", "_id"]],
    # GET /jobs[?run_id=&status=&image_digest=] and the recheck's jobs of a run, sorted by _id
    JOBS: [
        ["tenant", "_id"],
        ["tenant", "run_id", "_id"],
        ["tenant", "status", "_id"],
        ["tenant", "image_digest", "_id"],
    ],
    # GET /images[?verdict=] and the selector preview, sorted by _id
    IMAGES: [["tenant", "_id"], ["tenant", "verdict", "_id"]],
    # GET /windows sorted by window_start
    WINDOWS: [["tenant", "window_start", "_id"]],
    CURSORS: [],  # GET /cursors: whole collection by _id (one document per partition)
    # GET /deadletters: scanned by _id pages, filtered by tenant in the API (the _id index). These three
    # serve operators' ad-hoc queries by reason, source topic and time; no code path runs them.
    DEADLETTERS: [["reason", "_id"], ["source_topic", "_id"], ["at", "_id"]],
    SCHEDULES: [["tenant", "_id"]],
    # GET /schedules/{id}/runs; GET /runs?trigger=&schedule_id= (fired occurrences, newest first)
    SCHEDULE_RUNS: [["tenant", "schedule_id", "nominal"], ["tenant", "fired", "nominal", "_id"]],
    SIMULATIONS: [["tenant", "_id"]],  # GET /policies/simulations, by _id pages
    # the projector's get_checkpoints(group) on assignment
    CHECKPOINTS: [["group", "_id"]],
}

T = TypeVar("T")


def chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


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
        self._known: OrderedDict[tuple[str, str], None] = OrderedDict()

    @classmethod
    def open_active(cls, client: MongoClient[Document], db_name: str) -> MongoStore:
        """The store readers should use: the prefix the last ``switch_to`` chose ("" before any)."""
        return cls(client, db_name, active_prefix(client, db_name))

    def collection(self, name: str) -> Collection[Document]:
        return self.db[self.prefix + name]

    def ensure_indexes(self) -> None:
        self.create_collections()
        # One index per command: FerretDB 1.24.2 answers a createIndexes of several indexes that exist
        # already with a panic ("slice bounds out of range") that closes the connection.
        for name, indexes in INDEXES.items():
            for fields in indexes:
                self.collection(name).create_index([(f, ASCENDING) for f in fields])

    def create_collections(self) -> None:
        # Create every collection before any write: FerretDB's SQLite backend takes its registry-wide
        # write lock to create a collection, and an upsert that creates one while other connections
        # read and write can deadlock the whole server (seen with v1.24.2 under load).
        existing = set(self.db.list_collection_names())
        for name in (*COLLECTIONS, CHECKPOINTS, META):
            if self.prefix + name not in existing:
                try:
                    self.db.create_collection(self.prefix + name)
                except CollectionInvalid:
                    pass
                except OperationFailure as exc:
                    # Another process created it between our listing and our create (NamespaceExists).
                    if exc.code != NAMESPACE_EXISTS:
                        raise

    def apply_documents(self, updates: Sequence[DocUpdate]) -> None:
        by_collection: dict[str, list[DocUpdate]] = {}
        for update in updates:
            by_collection.setdefault(update.collection, []).append(update)
        for name, batch in by_collection.items():
            collection = self.collection(name)
            first: dict[str, int] = {}  # doc id -> position in batch of its first update
            for i, update in enumerate(batch):
                first.setdefault(update.doc_id, i)
            missing = [i for doc_id, i in first.items() if not self._is_known(name, doc_id)]
            # The first update of a document this insert created is applied already (the document is
            # apply_update(None, u), with _pos.P = its offset): its guarded update would be refused, so it
            # is not sent. On the server that halves the work of a batch that creates its documents.
            created: set[int] = set()
            for chunk in chunks(missing, MAX_INSERTS_PER_COMMAND):
                inserted = insert_missing(collection, [apply_update(None, batch[i]) for i in chunk])
                created.update(chunk[j] for j in inserted)
            self._remember(name, first)
            updates_left = [u for i, u in enumerate(batch) if i not in created]
            # Ordered, and chunks in order: two updates of one document must apply in offset order.
            for ops in chunks(updates_left, MAX_WRITES_PER_COMMAND):
                collection.bulk_write([guarded_op(u) for u in ops], ordered=True)

    def _is_known(self, collection: str, doc_id: str) -> bool:
        key = (collection, doc_id)
        if key in self._known:
            self._known.move_to_end(key)
            return True
        return False

    def _remember(self, collection: str, doc_ids: Mapping[str, object]) -> None:
        for doc_id in doc_ids:
            self._known[(collection, doc_id)] = None
            self._known.move_to_end((collection, doc_id))
        while len(self._known) > KNOWN_IDS:
            self._known.popitem(last=False)

    def load_memory(self, memory: MemoryStore) -> None:
        """Bulk-load what ``memory`` folded (a rebuild), then make the collections and indexes it lacks
        (indexes after the data: building one index is cheaper than maintaining it per insert)."""
        self.load(memory.state, list(memory.checkpoints.values()))
        self.ensure_indexes()

    def load(
        self,
        state: Mapping[str, Mapping[str, Document]],
        checkpoints: Sequence[Checkpoint],
        *,
        workers: int = LOAD_WORKERS,
    ) -> None:
        """Bulk-load documents and checkpoints into collections nobody else writes (a rebuild's fresh
        prefix): unordered inserts, no guards, ``workers`` collections at a time. Documents first,
        checkpoints last, as in ``apply_batch``."""
        # Made before the concurrent inserts: an insert that creates its collection takes FerretDB's
        # registry lock (see ensure_indexes).
        self.create_collections()

        def insert(name: str) -> None:
            docs = [state[name][k] for k in sorted(state[name])]
            for chunk in chunks(docs, MAX_INSERTS_PER_COMMAND):
                self.collection(name).insert_many(list(chunk), ordered=False)

        # Largest first, so that the longest collection is not the one left alone at the end.
        names = sorted(state, key=lambda name: (-len(state[name]), name))
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            for _ in pool.map(insert, names):  # re-raises the first failure
                pass
        rows = [checkpoint_doc(cp) for cp in sorted(checkpoints, key=lambda cp: cp.id)]
        for chunk in chunks(rows, MAX_INSERTS_PER_COMMAND):
            self.collection(CHECKPOINTS).insert_many(list(chunk), ordered=False)

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
        for chunk in chunks(ops, MAX_WRITES_PER_COMMAND):
            self.collection(CHECKPOINTS).bulk_write(list(chunk), ordered=True)

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
        descending: bool = False,
    ) -> Page:
        check_query(collection, where, sort, limit)
        query, order = find_query(where, sort, after, descending)
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
        self._known.clear()


def find_query(
    where: Where | None, sort: str, after: After | None, descending: bool = False
) -> tuple[dict[str, Any], list[tuple[str, int]]]:
    """The filter and sort of one ``find`` page. The ``where`` equalities come first and in their order (the
    API puts ``tenant`` first, as ``INDEXES`` do): our FerretDB patch pushes top-level equalities, also
    inside a top-level ``$and``, down as conditions an index with those leading fields answers."""
    clauses: list[dict[str, Any]] = [{k: v} for k, v in (where or {}).items()]
    if sort != "_id":
        clauses.append({sort: {"$exists": True, "$ne": None}})
    beyond = "$lt" if descending else "$gt"
    if after is not None:
        value, last_id = after
        if sort == "_id":
            clauses.append({"_id": {beyond: last_id}})
        else:
            clauses.append({"$or": [{sort: {beyond: value}}, {sort: value, "_id": {beyond: last_id}}]})
    query = {"$and": clauses} if clauses else {}
    way = DESCENDING if descending else ASCENDING
    order = [("_id", way)] if sort == "_id" else [(sort, way), ("_id", way)]
    return query, order


def insert_missing(collection: Collection[Document], docs: Sequence[Document]) -> list[int]:
    """Insert documents that may exist already: a duplicate key leaves the existing one as it is. Returns
    the positions in ``docs`` of those it inserted."""
    try:
        collection.insert_many(list(docs), ordered=False)
    except BulkWriteError as exc:
        errors = exc.details.get("writeErrors", [])
        if any(err.get("code") != DUPLICATE_KEY for err in errors):
            raise
        refused = {int(err["index"]) for err in errors}
        return [i for i in range(len(docs)) if i not in refused]
    return list(range(len(docs)))


def checkpoint_doc(cp: Checkpoint) -> Document:
    """A checkpoint as ``write_checkpoints`` leaves it after its first upsert."""
    return {
        "_id": cp.id,
        "group": cp.group,
        "topic": cp.topic,
        "partition": cp.partition,
        "offset": cp.offset,
    }


def _get(doc: Document, path: str) -> Any:
    node: Any = doc
    for part in path.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def active_prefix(client: MongoClient[Document], db_name: str) -> str:
    doc = client[db_name][META].find_one({"_id": ACTIVE})
    return "" if doc is None else str(doc["prefix"])
