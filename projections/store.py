"""Read-model stores: the ``ProjectionStore`` protocol, an in-memory twin, and the ``Projector``.

A store applies a batch in two steps, documents first and checkpoints second. A crash between them leaves
documents ahead of the checkpoint; redelivery from the checkpoint is then rejected by the per-partition
position guard (see ``projections.fold``), so the documents end up exactly as if there had been no crash.
Checkpoints only move forward (``max``), so a zombie projector cannot rewind one.

Queries are deliberately small: equality, ``$in`` / ``$nin``, ``$ne`` and the ranges ``$gte`` / ``$lt`` on
fields, sorted by ``(field, _id)`` ascending (or both descending: newest first), paged by keyset (the last
``(value, _id)`` seen). Keyset paging stays stable while documents change under it. A
document without the sort field is not returned when sorting by that field (MongoDB and memory disagree on
where missing values sort, and a page must be identical in both).
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from projections.fold import (
    COLLECTIONS,
    Checkpoint,
    Document,
    DocUpdate,
    Position,
    State,
    apply_in_place,
    checkpoint_id,
    fold_batch,
    get_path,
)

CHECKPOINTS = "checkpoints"
MAX_PAGE = 1000

Where = Mapping[str, Any]
After = tuple[Any, str]


@dataclass(frozen=True, slots=True)
class Page:
    items: list[Document]
    next_after: After | None
    """Pass back as ``after`` for the next page; None when this page is the last."""


class ProjectionStore(Protocol):
    def ensure_indexes(self) -> None: ...

    def apply_documents(self, updates: Sequence[DocUpdate]) -> None: ...

    def write_checkpoints(self, checkpoints: Sequence[Checkpoint]) -> None: ...

    def apply_batch(self, updates: Sequence[DocUpdate], checkpoints: Sequence[Checkpoint]) -> None:
        """Documents, then checkpoints: never the other way round."""
        ...

    def get_checkpoint(self, group: str, topic: str, partition: int) -> int | None: ...

    def get_checkpoints(self, group: str) -> dict[tuple[str, int], int]: ...

    def get(self, collection: str, doc_id: str) -> Document | None: ...

    def find(
        self,
        collection: str,
        where: Where | None = None,
        *,
        sort: str = "_id",
        after: After | None = None,
        limit: int = 100,
        descending: bool = False,
    ) -> Page: ...

    def dump(self, collection: str) -> list[Document]:
        """Every document of a collection ordered by _id (tests, rebuild comparison, export)."""
        ...


# ---------------------------------------------------------------- pure query helpers


def check_query(collection: str, where: Where | None, sort: str, limit: int) -> None:
    if collection not in COLLECTIONS:
        raise ValueError(f"unknown collection {collection!r}")
    if not 1 <= limit <= MAX_PAGE:
        raise ValueError(f"limit must be 1..{MAX_PAGE}")
    if sort.startswith("$") or sort.startswith("_pos"):
        raise ValueError(f"cannot sort by {sort!r}")
    for key, cond in (where or {}).items():
        if key.startswith("$"):
            raise ValueError(f"operator {key!r} is not allowed at the top of a filter")
        if isinstance(cond, Mapping) and (not cond or set(cond) - OPERATORS):
            raise ValueError(f"only equality, {', '.join(sorted(OPERATORS))} are supported (field {key!r})")


OPERATORS = frozenset({"$in", "$nin", "$ne", "$gte", "$lt"})


def _holds(value: Any, op: str, operand: Any) -> bool:
    """One operator as MongoDB applies it to a scalar field (a missing field is None; ranges never match
    None or a value of another type)."""
    if op == "$in":
        return value in list(operand)
    if op == "$nin":
        return value not in list(operand)
    if op == "$ne":
        return bool(value != operand)
    if value is None or type(value) is not type(operand):
        return False
    return bool(value >= operand) if op == "$gte" else bool(value < operand)


def matches(doc: Mapping[str, Any], where: Where | None) -> bool:
    for key, cond in (where or {}).items():
        value = get_path(doc, key)
        if isinstance(cond, Mapping):
            if not all(_holds(value, op, operand) for op, operand in cond.items()):
                return False
        elif value != cond:
            return False
    return True


def _sort_value(doc: Mapping[str, Any], sort: str) -> Any:
    return doc["_id"] if sort == "_id" else get_path(doc, sort)


def page_of(
    docs: Iterable[Document],
    where: Where | None,
    sort: str,
    after: After | None,
    limit: int,
    descending: bool = False,
) -> Page:
    """The in-memory query: filter, drop docs lacking the sort field, order by (field, _id) (both reversed
    when ``descending``), keyset page."""
    rows = [(_sort_value(d, sort), d["_id"], d) for d in docs if matches(d, where)]
    rows = [r for r in rows if r[0] is not None]
    rows.sort(key=lambda r: (r[0], r[1]), reverse=descending)
    if after is not None:
        mark = (after[0], after[1])
        rows = [r for r in rows if ((r[0], r[1]) < mark if descending else (r[0], r[1]) > mark)]
    chosen = rows[:limit]
    more = len(rows) > limit
    items = [copy.deepcopy(r[2]) for r in chosen]
    return Page(items, (chosen[-1][0], chosen[-1][1]) if more and chosen else None)


# ---------------------------------------------------------------- memory twin


class MemoryStore:
    """The same semantics as ``MongoStore``, in a dict: the unit-test and contract-test twin."""

    def __init__(self, *, take_updates: bool = False) -> None:
        """``take_updates``: documents keep the values of the updates applied instead of copies, for a
        store fed only by a ``Projector`` (each update folded for it alone: ``fold`` shares no container
        between updates). The rebuild's; a caller that applies an update twice, or keeps it, needs copies."""
        self.state: State = {name: {} for name in COLLECTIONS}
        self.checkpoints: dict[str, Checkpoint] = {}
        self._take = take_updates

    def ensure_indexes(self) -> None:
        return None

    def apply_documents(self, updates: Sequence[DocUpdate]) -> None:
        for update in updates:
            docs = self.state.setdefault(update.collection, {})
            docs[update.doc_id] = apply_in_place(docs.get(update.doc_id), update, take=self._take)

    def write_checkpoints(self, checkpoints: Sequence[Checkpoint]) -> None:
        for cp in checkpoints:
            old = self.checkpoints.get(cp.id)
            if old is None or old.offset < cp.offset:
                self.checkpoints[cp.id] = cp

    def apply_batch(self, updates: Sequence[DocUpdate], checkpoints: Sequence[Checkpoint]) -> None:
        self.apply_documents(updates)
        self.write_checkpoints(checkpoints)

    def get_checkpoint(self, group: str, topic: str, partition: int) -> int | None:
        cp = self.checkpoints.get(checkpoint_id(group, topic, partition))
        return None if cp is None else cp.offset

    def get_checkpoints(self, group: str) -> dict[tuple[str, int], int]:
        return {(cp.topic, cp.partition): cp.offset for cp in self.checkpoints.values() if cp.group == group}

    def get(self, collection: str, doc_id: str) -> Document | None:
        doc = self.state.get(collection, {}).get(doc_id)
        return None if doc is None else copy.deepcopy(doc)

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
        return page_of(self.state.get(collection, {}).values(), where, sort, after, limit, descending)

    def dump(self, collection: str) -> list[Document]:
        docs = self.state.get(collection, {})
        return [copy.deepcopy(docs[k]) for k in sorted(docs)]


# ---------------------------------------------------------------- projector


@dataclass(frozen=True, slots=True)
class BatchStats:
    messages: int
    skipped: int
    updates: int


class Projector:
    """Folds batches of positioned messages into a store, one consumer group's checkpoints at a time.

    It keeps the checkpoints it has read or written in memory; call ``forget`` on partition revocation so
    that a later assignment reads them from the store again (another instance may have moved them).
    """

    def __init__(self, store: ProjectionStore, group: str, *, window_seconds: int = 30) -> None:
        self.store = store
        self.group = group
        self.window_seconds = window_seconds
        self._known: dict[tuple[str, int], int | None] = {}

    def checkpoint(self, topic: str, partition: int) -> int | None:
        tp = (topic, partition)
        if tp not in self._known:
            self._known[tp] = self.store.get_checkpoint(self.group, topic, partition)
        return self._known[tp]

    def seek_position(self, topic: str, partition: int) -> int:
        """Where a consumer assigned this partition starts: checkpoint + 1, or 0."""
        done = self.checkpoint(topic, partition)
        return 0 if done is None else done + 1

    def forget(self, partitions: Iterable[tuple[str, int]] | None = None) -> None:
        if partitions is None:
            self._known.clear()
        for tp in partitions or ():
            self._known.pop(tp, None)

    def process(self, batch: Sequence[tuple[object, Position]]) -> BatchStats:
        known: dict[tuple[str, int], int] = {}
        for _, pos in batch:
            done = self.checkpoint(pos.topic, pos.partition)
            if done is not None:
                known[(pos.topic, pos.partition)] = done
        updates, checkpoints = fold_batch(batch, known, group=self.group, window_seconds=self.window_seconds)
        if checkpoints:
            self.store.apply_batch(updates, checkpoints)
        # Only after the store accepted the batch: a failed write must leave the old checkpoints in force.
        for cp in checkpoints:
            self._known[(cp.topic, cp.partition)] = cp.offset
        fresh = sum(1 for _, pos in batch if pos.offset > known.get((pos.topic, pos.partition), -1))
        return BatchStats(messages=len(batch), skipped=len(batch) - fresh, updates=len(updates))


def rebuild(
    messages: Iterable[tuple[object, Position]],
    target: ProjectionStore,
    group: str,
    *,
    batch_size: int = 500,
    window_seconds: int = 30,
) -> int:
    """Fold a log replayed from offset 0 into an empty ``target``; returns the number of messages read.

    Replaying only writes read models: it never produces to Kafka, so no job or signed event is re-emitted.
    """
    target.ensure_indexes()
    projector = Projector(target, group, window_seconds=window_seconds)
    count = 0
    batch: list[tuple[object, Position]] = []
    for item in messages:
        batch.append(item)
        count += 1
        if len(batch) >= batch_size:
            projector.process(batch)
            batch = []
    if batch:
        projector.process(batch)
    return count
