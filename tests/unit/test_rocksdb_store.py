"""agents.rocksdb_store: a revoked partition's database is parked open and taken back on reassignment;
nothing is opened inside the rebalance callback (chaos seed 748746: a rebalance storm)."""

from __future__ import annotations

from pathlib import Path

import faust
from faust.types import TP

from agents.rocksdb_store import Store
from agents.settings import Settings


async def test_revoked_databases_are_parked_and_reused(tmp_path: Path) -> None:
    settings = Settings(data_dir=str(tmp_path), topic_prefix="unit.", web_port=0)
    app = faust.App("unit-rocks", **settings.faust_config())
    table = app.Table("index", partitions=2, options=settings.table_options())
    store = table.data
    assert isinstance(store, Store)
    topic = table.changelog_topic.get_topic_name()
    first = store._db_for_partition(0)
    first.put(b"k", b"v")

    store.revoke_partitions(table, {TP(topic, 0)})
    assert 0 not in store._dbs  # reads see only assigned partitions, as with faust's store
    await store.assign_partitions(table, {TP(topic, 0), TP(topic, 1)})
    assert store._dbs == {}  # nothing opened in the rebalance callback
    assert store._db_for_partition(0) is first  # taken back, not reopened
    assert store._db_for_partition(0).get(b"k") == b"v"
    await store.stop()
    assert store._dbs == {}
