"""Durable local tables (rocksdb store, agents/local_state.py), on the real worker: a clean stop leaves its
tables with the changelog offsets they absorbed (a restart reads only the tail past them); a SIGKILL
leaves the directory dirty, and the restarted worker deletes its tables and replays the changelogs. Either
way the restarted worker carries on with the scenario."""

from __future__ import annotations

from pathlib import Path

import rocksdict

from tests.integration.pipeline_kit import Deployment, advisories, inventories, later, vex_minimist
from tests.integration.replay_kit import settle_phase

OFFSET_KEY = b"__faust\0offset__"  # faust/stores/rocksdb.py Store.offset_key


def persisted_offsets(tables: Path, table: str) -> dict[int, int]:
    """partition → the last changelog offset the local database applied (faust's persisted offset)."""
    found: dict[int, int] = {}
    for path in sorted(tables.glob(f"{table}-*.db")):
        db = rocksdict.Rdict(str(path), options=rocksdict.Options(raw_mode=True))
        try:
            raw = db.get(OFFSET_KEY)
        finally:
            db.close()
        if raw is not None:
            found[int(path.name[len(table) + 1 : -3])] = int(raw)
    return found


async def test_local_tables_outlive_a_clean_stop_and_not_a_kill(deployment: Deployment) -> None:
    pipe = deployment(partitions=2)
    await pipe.start(workers=1)
    worker = pipe.workers[0]
    datadir = Path(pipe.env()["STELLA_DATA_DIR"]) / pipe.env()["STELLA_APP_ID"] / "worker0"
    try:
        await pipe.publish(inventories())
        await settle_phase(pipe, "inventories")

        worker.stop()
        assert not worker.alive()
        assert not (datadir / "dirty").exists(), worker.report()
        offsets = persisted_offsets(datadir / "v1" / "tables", "index")
        assert offsets, "the index table kept no changelog offset: a restart would replay it all"
        assert all(offset >= 0 for offset in offsets.values())

        worker.start()
        await pipe.publish(advisories(later(60)))
        await settle_phase(pipe, "advisories")
        assert "did not stop cleanly" not in worker.output()

        worker.kill()
        assert (datadir / "dirty").exists()
        worker.start()
        await pipe.publish(vex_minimist(later(120)))
        await settle_phase(pipe, "vex")
        assert "did not stop cleanly" in worker.output(), worker.report()
    finally:
        pipe.stop()
