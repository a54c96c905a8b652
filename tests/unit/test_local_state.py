"""agents.local_state: one worker per data directory; local tables survive only a clean stop."""

from __future__ import annotations

from pathlib import Path

import pytest

from agents.local_state import DataDirInUse, LocalState
from agents.settings import Settings


def _state(tmp_path: Path) -> LocalState:
    return LocalState(tmp_path / "w", tmp_path / "w" / "v1" / "tables")


def _table_file(state: LocalState) -> Path:
    db = state.tabledir / "index-0.db"
    db.mkdir(parents=True, exist_ok=True)
    (db / "CURRENT").write_text("MANIFEST-000001\n")
    return db


def test_clean_stop_keeps_the_local_tables(tmp_path: Path) -> None:
    first = _state(tmp_path)
    assert first.claim() is False
    db = _table_file(first)
    first.release_clean()
    second = _state(tmp_path)
    assert second.claim() is False
    assert db.exists()
    second.release_clean()


def test_a_killed_worker_leaves_its_tables_to_be_recovered_from_the_changelogs(tmp_path: Path) -> None:
    first = _state(tmp_path)
    first.claim()
    db = _table_file(first)
    # SIGKILL: no release_clean; the kernel drops the lock with the process (here: its descriptor).
    assert first._lock is not None
    first._lock.close()
    second = _state(tmp_path)
    assert second.claim() is True
    assert not db.exists()
    second.release_clean()


def test_a_second_worker_on_the_same_directory_is_refused_with_the_reason(tmp_path: Path) -> None:
    first = _state(tmp_path)
    first.claim()
    with pytest.raises(DataDirInUse, match=r"in use by another worker .*STELLA_WORKER_NAME"):
        _state(tmp_path).claim()
    first.release_clean()
    third = _state(tmp_path)
    third.claim()
    third.release_clean()


def test_every_worker_has_its_own_directory_by_name_or_port() -> None:
    a = Settings(data_dir="run/worker", app_id="app", web_port=6066)
    b = Settings(data_dir="run/worker", app_id="app", web_port=6067)
    named = Settings(data_dir="run/worker", app_id="app", worker_name="w-1")
    assert a.worker_datadir() == Path("run/worker/app/port6066")
    assert a.worker_datadir() != b.worker_datadir()
    assert named.worker_datadir() == Path("run/worker/app/w-1")
    with pytest.raises(SystemExit, match="STELLA_WORKER_NAME"):
        Settings(worker_name="../x").worker_datadir()


def test_rocksdb_is_the_default_store_with_small_per_database_options() -> None:
    settings = Settings()
    assert settings.store == "rocksdb://"
    options = settings.table_options()
    assert options is not None
    assert options["block_cache_size"] <= 64 << 20
    assert settings.table_options() is not options  # faust pops keys out of the dict it is given
    assert Settings(store="memory://").table_options() is None
