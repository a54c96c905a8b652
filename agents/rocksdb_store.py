"""faust's RocksDB table store, without reopening databases on every rebalance.

faust's store (faust/stores/rocksdb.py) opens the database of every newly assigned changelog partition inside
the rebalance callback and drops (and garbage-collects, 15 times per rebalance here) the databases of revoked
ones, so that another worker sharing the data directory can take their locks. A worker here has 15 tables x
6 partitions; opening a RocksDB database creates and syncs its files, 50-100 ms each on a loaded machine,
with the GIL held. So the first assignment held the rebalance callback for 10-15 s; the group coordinator
expelled the member meanwhile ("Heartbeat failed: local member_id was not recognized", chaos seed 748746),
the rejoin revoked everything, the next assignment reopened all 90 databases, and the workers rebalanced
in a loop for minutes without processing.

Every worker has a data directory of its own (agents/local_state.py), so nothing needs the locks back:

* a revoked partition's database is *parked*, open, instead of dropped; reassigning it takes it back at once
  (it still catches up from its persisted offset in recovery, like a reopened one);
* nothing is opened in the rebalance callback: a database opens on first use (recovery reads its persisted
  offset first), after the group has synced.

Reads and writes see exactly the databases faust's store would (`_dbs`: the assigned partitions).
"""

from __future__ import annotations

import logging
from typing import Any

from faust.stores import STORES
from faust.stores.rocksdb import Store as FaustRocksStore
from faust.types import TP

log = logging.getLogger("stella.rocksdb")


class Store(FaustRocksStore):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._parked: dict[int, Any] = {}

    def _open_for_partition(self, partition: int) -> Any:
        parked = self._parked.pop(partition, None)
        if parked is not None:
            return parked
        return super()._open_for_partition(partition)

    def revoke_partitions(self, table: Any, tps: set[TP]) -> None:
        for tp in tps:
            if tp.topic in table.changelog_topic.topics:
                db = self._dbs.pop(tp.partition, None)
                if db is not None:
                    self._parked[tp.partition] = db

    async def assign_partitions(self, table: Any, tps: set[TP], generation_id: int = 0) -> None:
        self.rebalance_ack = True  # opened lazily by _db_for_partition

    async def stop(self) -> None:
        for db in [*self._dbs.values(), *self._parked.values()]:
            try:
                db.close()
            except Exception:  # closing is best effort: the process is stopping
                log.exception("closing a RocksDB database of table %s", self.table_name)
        self._dbs.clear()
        self._parked.clear()


def register() -> None:
    """Make ``rocksdb://`` mean this store (faust resolves store URLs by scheme through STORES)."""
    STORES.aliases["rocksdb"] = f"{__name__}:Store"
