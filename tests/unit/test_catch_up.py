"""streams.catch_up (where a bulk table recovery starts and ends) and agents.bulk_recovery.write_raw (what it
writes): a partition copied in fetched batches holds what faust's record-by-record recovery would."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace

import faust
import pytest
from faust.tables.recovery import Recovery, ServiceStopped
from faust.types import TP
from hypothesis import given
from hypothesis import strategies as st

from agents.bulk_recovery import BulkRecovery, TableManager, write_raw
from agents.rocksdb_store import Store
from agents.settings import Settings
from streams.catch_up import applied_after, behind

offsets = st.one_of(st.none(), st.integers(min_value=-1, max_value=50))


@given(st.dictionaries(st.integers(0, 5), st.tuples(offsets, offsets)))
def test_behind_starts_after_the_applied_offset_and_only_when_records_remain(
    parts: dict[int, tuple[int | None, int | None]],
) -> None:
    applied = {tp: a for tp, (a, _h) in parts.items()}
    highwaters = {tp: h for tp, (_a, h) in parts.items()}
    plan = behind(applied, highwaters)
    for tp, (last, highwater) in parts.items():
        first = 0 if last is None or last < 0 else last + 1
        if highwater is not None and first <= highwater:
            assert plan[tp] == first
        else:
            assert tp not in plan


def test_behind_ignores_partitions_without_an_applied_offset_entry() -> None:
    assert behind({}, {"a": 10}) == {}
    assert behind({"a": None}, {"a": -1}) == {}  # empty changelog
    assert behind({"a": 9}, {"a": 9}) == {}  # up to date


@given(offsets, st.integers(0, 60), st.integers(-1, 50))
def test_caught_up_only_past_the_highwater_and_never_behind_it(
    last: int | None, position: int, highwater: int
) -> None:
    done = applied_after(last, position, highwater)
    if position <= highwater:
        assert done is None
    else:
        assert done is not None
        assert done >= highwater  # a compacted tail still counts as read
        assert last is None or done >= last


async def test_write_raw_equals_faust_apply_changelog_batch(tmp_path: Path) -> None:
    settings = Settings(data_dir=str(tmp_path), topic_prefix="unit.", web_port=0)
    config = settings.faust_config()
    assert config["TableManager"] == "agents.bulk_recovery:TableManager"
    app = faust.App("unit-bulk", **config)
    assert isinstance(app.tables, TableManager)
    table = app.Table("index", partitions=2, options=settings.table_options())
    store = table.data
    assert isinstance(store, Store)
    topic = table.changelog_topic.get_topic_name()
    records: list[tuple[bytes, bytes | None]] = [(b"a", b"1"), (b"b", b"2"), (b"a", None), (b"c", b"3")]
    # faust's path into partition 0, ours into partition 1: the same keys, values and applied offset
    events = [
        SimpleNamespace(message=SimpleNamespace(tp=TP(topic, 0), offset=38 + i, partition=0, key=k, value=v))
        for i, (k, v) in enumerate(records)
    ]
    store.apply_changelog_batch(events, to_key=lambda k: k, to_value=lambda v: v)
    write_raw(store, store._db_for_partition(1), records, 41)
    db = store._db_for_partition(1)
    assert (db.get(b"a"), db.get(b"b"), db.get(b"c")) == (None, b"2", b"3")
    assert dict(store._db_for_partition(0).items()) == dict(db.items())
    assert store.persisted_offset(TP(topic, 1)) == store.persisted_offset(TP(topic, 0)) == 41
    write_raw(store, db, [], 44)  # a compacted tail: only the offset moves
    assert store.persisted_offset(TP(topic, 1)) == 44
    await store.stop()


async def test_a_recovery_step_slower_than_fausts_bound_completes_instead_of_ending_recovery(
    tmp_path: Path,
) -> None:
    """Chaos seed 691658: faust's `_wait` turned a 50 s seek into ServiceStopped, the recovery task ended and
    the worker never processed its partitions again."""
    app = faust.App("unit-bulk-wait", **Settings(data_dir=str(tmp_path), web_port=0).faust_config())
    recovery = app.tables.recovery
    assert isinstance(recovery, BulkRecovery)
    done: list[str] = []

    async def slow_step(name: str) -> None:
        await asyncio.sleep(0.3)
        done.append(name)

    with pytest.raises(ServiceStopped):  # faust's own
        await Recovery._wait(recovery, slow_step("faust"), timeout=0.05)
    await recovery._wait(slow_step("ours"), timeout=0.05)
    assert done == ["ours"]
