"""agents.shell's batch protocol with in-memory twins of a faust topic and table: outputs are sent at once,
their acks awaited when the batch closes, table writes held back until then and seen through the overlay."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from aiokafka.errors import KafkaConnectionError

from agents import shell
from agents.shell import (
    Output,
    apply_guarded,
    defer,
    end_batch,
    keys,
    open_batch,
    partition_of,
    publish,
    read,
    write,
)
from streams.guard import decode


class Topic:
    """Records what was sent; acks stay pending until `ack_all` (or fail once with `fail_next`)."""

    def __init__(self) -> None:
        self.sent: list[tuple[bytes | None, bytes | None]] = []
        self.pending: list[asyncio.Future[None]] = []
        self.fail_next = False

    async def send(self, *, key: Any, value: Any, partition: Any, force: bool) -> asyncio.Future[None]:
        self.sent.append((key, value))
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        if self.fail_next:
            self.fail_next = False
            fut.set_exception(KafkaConnectionError("broker away"))
        self.pending.append(fut)
        return fut

    def ack_all(self) -> None:
        for fut in self.pending:
            if not fut.done():
                fut.set_result(None)


class Table(dict[str, Any]):
    """A faust table's mapping surface; records the order of writes."""

    def __init__(self) -> None:
        super().__init__()
        self.log: list[str] = []

    def __setitem__(self, key: str, value: Any) -> None:
        self.log.append(key)
        super().__setitem__(key, value)


class Event:
    """A faust event's surface (weak-referenceable, as faust's current-event slot requires)."""

    def __init__(self, offset: int, partition: int) -> None:
        self.message = SimpleNamespace(topic="in", partition=partition, offset=offset)


def event(offset: int, partition: int = 0) -> Any:
    return Event(offset, partition)


async def test_outputs_are_acked_before_table_writes_and_reads_see_pending_writes() -> None:
    topic, table = Topic(), Table()
    batch, token = open_batch()
    try:
        await publish([Output(topic, b"k", b"v")])  # type: ignore[arg-type]
        write(table, "a", b"1", event(0))
        assert read(table, "a") == b"1"
        assert "a" not in table
        assert keys(table) == {"a"}
    finally:
        end_batch(token)
    closing = asyncio.create_task(batch.close(lambda attempt, exc: asyncio.sleep(0)))
    await asyncio.sleep(0.01)
    assert not closing.done()
    assert table == {}
    topic.ack_all()
    await closing
    assert table == {"a": b"1"}


async def test_a_broker_error_re_sends_every_output_of_the_batch() -> None:
    topic, table = Topic(), Table()
    topic.fail_next = True
    retries: list[int] = []

    async def on_retry(attempt: int, exc: Exception) -> None:
        retries.append(attempt)
        asyncio.get_running_loop().call_soon(topic.ack_all)

    batch, token = open_batch()
    try:
        await publish([Output(topic, b"k1", b"a"), Output(topic, b"k2", b"b")])  # type: ignore[arg-type]
        write(table, "x", b"1", event(0))
    finally:
        end_batch(token)
    topic.ack_all()
    await batch.close(on_retry)
    assert retries == [1]
    assert topic.sent == [(b"k1", b"a"), (b"k2", b"b"), (b"k1", b"a"), (b"k2", b"b")]
    assert table == {"x": b"1"}


async def test_guarded_folds_in_one_batch_chain_through_the_overlay_and_skip_duplicates() -> None:
    topic, table = Topic(), Table()

    def add(n: int) -> Any:
        def fold(state: bytes | None) -> tuple[bytes | None, list[Output]]:
            total = int(state or b"0") + n
            return str(total).encode(), [Output(topic, b"sum", str(total).encode())]  # type: ignore[arg-type]

        return fold

    batch, token = open_batch()
    try:
        assert await apply_guarded(table, "t", event(0), add(2))
        assert await apply_guarded(table, "t", event(1), add(3))
        assert not await apply_guarded(table, "t", event(1), add(3))  # redelivered: skipped
    finally:
        end_batch(token)
    topic.ack_all()
    await batch.close(lambda attempt, exc: asyncio.sleep(0))
    assert decode(table["t"]).state == b"5"
    assert decode(table["t"]).positions == {"in/0": 1}
    assert table.log == ["t"]  # one table (changelog) write per changed key per batch
    assert [v for _, v in topic.sent] == [b"2", b"5"]


async def test_outside_a_batch_and_after_it_closed_effects_are_immediate() -> None:
    topic, table = Topic(), Table()
    write(table, "a", b"1", event(0))
    assert table == {"a": b"1"}
    batch, token = open_batch()
    end_batch(token)
    batch.open = False
    inherited = shell._batch.set(batch)  # a task spawned while the batch was open keeps it in its context
    try:
        write(table, "b", b"2", event(1))
        task = asyncio.create_task(publish([Output(topic, b"k", b"v")]))  # type: ignore[arg-type]
        await asyncio.sleep(0.01)
        assert not task.done()  # waits for its own ack
        topic.ack_all()
        await task
    finally:
        shell._batch.reset(inherited)
    assert table == {"a": b"1", "b": b"2"}


async def test_deferred_callbacks_run_after_the_batch_s_table_writes() -> None:
    topic, table = Topic(), Table()
    seen: list[Any] = []
    batch, token = open_batch()
    try:
        await publish([Output(topic, b"k", b"v")])  # type: ignore[arg-type]
        write(table, "a", b"1", event(0))
        defer(lambda: seen.append(dict(table)))
        assert seen == []
    finally:
        end_batch(token)
    topic.ack_all()
    await batch.close(lambda attempt, exc: asyncio.sleep(0))
    assert seen == [{"a": b"1"}]
    defer(lambda: seen.append("now"))  # outside a batch: at once
    assert seen[-1] == "now"


def test_partition_of_is_the_producer_s_default_partitioner() -> None:
    from aiokafka.partitioner import DefaultPartitioner

    for key in ["pkg:npm/left-pad", "pkg:deb/debian/openssl", "tenant-a", "", "ü/ß"]:
        for n in (1, 6, 12):
            assert partition_of(key, n) == DefaultPartitioner()(key.encode(), list(range(n)), list(range(n)))


def test_last_decoded_decodes_only_changed_bytes() -> None:
    from agents.shell import LastDecoded

    calls: list[bytes] = []

    def decode(data: bytes) -> str:
        calls.append(data)
        return data.decode()

    cache = LastDecoded(decode, limit=2)
    assert cache("a", b"x") == "x"
    assert cache("a", b"x") == "x"
    assert calls == [b"x"]
    assert cache("a", b"y") == "y"  # changed bytes: decoded again
    cache.remember("b", b"z", "zz")
    assert cache("b", b"z") == "zz"
    assert calls == [b"x", b"y"]
    cache("c", b"w")  # past the limit the memo starts over
    assert cache("a", b"y") == "y"
    assert calls == [b"x", b"y", b"w", b"y"]


async def test_a_guarded_fold_of_many_inputs_skips_the_absorbed_and_advances_every_source() -> None:
    from agents.shell import apply_guarded_many

    table = Table()
    folded: list[list[int]] = []

    def fold(state: bytes | None, fresh: list[int]) -> tuple[bytes | None, list[Output]]:
        folded.append(fresh)
        return (state or b"") + b"".join(str(i).encode() for i in fresh), []

    # Offsets 0..1 of partition 0 were absorbed before (a redelivery after a crash between the table's
    # changelog write and the input's commit).
    assert await apply_guarded(table, "t", event(1, 0), lambda state: (b"", []))
    inputs = [event(0, 0), event(1, 0), event(2, 0), event(7, 1), event(3, 0)]
    assert await apply_guarded_many(table, "t", inputs, fold) == [2, 3, 4]
    assert folded == [[2, 3, 4]]
    assert decode(table["t"]).state == b"234"
    assert decode(table["t"]).positions == {"in/0": 3, "in/1": 7}
    assert await apply_guarded_many(table, "t", inputs, fold) == []  # all of them again: nothing to do
    assert folded == [[2, 3, 4]]


class PartitionedTable:
    """faust's rocksdb store's surface: a key is read from, and written to, the database of the current
    event's partition (`faust.stores.rocksdb.Store._get` / `_set`)."""

    def __init__(self) -> None:
        self.dbs: dict[int, dict[str, Any]] = {}

    @staticmethod
    def _partition() -> int:
        from faust.streams import current_event

        event = current_event()
        assert event is not None
        return int(event.message.partition)

    def get(self, key: str) -> Any:
        return self.dbs.get(self._partition(), {}).get(key)

    def __setitem__(self, key: str, value: Any) -> None:
        self.dbs.setdefault(self._partition(), {})[key] = value

    def keys(self) -> set[str]:
        return {k for db in self.dbs.values() for k in db}


async def test_a_held_back_fold_reads_its_key_as_its_own_records_event() -> None:
    """The tenant stage folds held impacts at a batch's end, or before a record of another partition: the
    fold must read the key from its own partition's database, not the current event's (seen in the fold
    bench: every inventory impact of a tenant replaced the one before it)."""
    from agents.shell import apply_guarded_many, as_current

    table = PartitionedTable()

    def append(state: bytes | None, fresh: list[int]) -> tuple[bytes | None, list[Output]]:
        return (state or b"") + b"x" * len(fresh), []

    for offset in range(3):
        batch, token = open_batch()
        try:
            # The event faust (or the stage) made current is another partition's record.
            with as_current(event(100 + offset, partition=2)):
                assert await apply_guarded_many(table, "tenant", [event(offset, partition=5)], append) == [0]
        finally:
            end_batch(token)
        await batch.close(lambda attempt, exc: asyncio.sleep(0))
    assert set(table.dbs) == {5}
    assert decode(table.dbs[5]["tenant"]).state == b"xxx"


def test_a_table_value_over_the_record_limit_is_reported_once_per_key(caplog: Any, monkeypatch: Any) -> None:
    """faust drops a refused changelog record with a log line of its own; the shell says which state that
    leaves undurable (bench/NOTES.md, session 7: a tenant's windows during a large re-sync)."""
    import logging

    monkeypatch.setattr(shell, "changelog_limit", 16)
    monkeypatch.setattr(shell, "_oversized", set())
    table = Table()
    with caplog.at_level(logging.ERROR, logger="stella.agents"):
        write(table, "small", b"x" * 8, event(0))
        write(table, "big", b"x" * 64, event(1))
        write(table, "big", b"x" * 65, event(2))
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "'big' is 64 bytes, over the record limit of 16" in errors[0]
    assert table == {"small": b"x" * 8, "big": b"x" * 65}  # still written: reported, not refused


async def test_a_split_fold_writes_its_other_keys_first_and_the_guarded_key_last() -> None:
    """The split window state relies on it: in a batch the table writes reach the changelog in the order
    of each key's last write, so the guarded key (written after its other keys by every fold) follows
    them all, and a None write deletes."""
    from agents.shell import apply_guarded_split

    topic, table = Topic(), Table()
    table["old"] = b"x"
    table.log.clear()

    def fold(
        n: int,
    ) -> Any:
        def run(state: bytes | None, fresh: list[int]) -> tuple[bytes | None, list[Output], list[Any]]:
            return str(n).encode(), [], [(f"e{n}", b"entry"), ("old", None)]

        return run

    batch, token = open_batch()
    try:
        assert await apply_guarded_split(table, "t", [event(0)], fold(1)) == [0]
        write(table, "other", b"o", event(1))
        assert await apply_guarded_split(table, "t", [event(1)], fold(2)) == [0]
        assert read(table, "old") is None
    finally:
        end_batch(token)
    topic.ack_all()
    await batch.close(lambda attempt, exc: asyncio.sleep(0))
    assert table.log == ["e1", "other", "e2", "t"]  # "t" and "old" moved to their last write
    assert "old" not in table
    assert decode(table["t"]).state == b"2"
