"""Every runtime setting in one place, read from the environment (README, "Configuration").

The faust settings that decide how fast a restarted or killed worker is replaced (session timeout,
heartbeat, rebalance delay) live here too, so tests and production agree on them.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

N = TypeVar("N", int, float)


def _env(name: str, default: str) -> str:
    return os.environ.get(name, default)


def env_number(name: str, default: N, convert: Callable[[str], N], what: str) -> N:
    """The one parser of numeric environment variables: unset or empty gives ``default``; anything
    ``convert`` rejects is a ValueError naming the variable and its value."""
    raw = os.environ.get(name, "")
    if raw == "":
        return default
    try:
        return convert(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not {what}") from None


def env_int(name: str, default: int) -> int:
    return env_number(name, default, int, "an integer")


def env_float(name: str, default: float) -> float:
    return env_number(name, default, float, "a number")


def _int(name: str, default: int) -> int:
    try:
        return env_int(name, default)
    except ValueError as exc:
        raise SystemExit(f"configuration error: {exc}") from exc


@dataclass(frozen=True)
class Settings:
    kafka_bootstrap: str = "127.0.0.1:9092"
    mongo_url: str = "mongodb://127.0.0.1:27017/"
    mongo_db: str = "stella_sched"
    topic_prefix: str = ""
    app_id: str = "stella-sched"
    partitions: int = 6
    # Durable local tables: a restarted worker reads only its changelogs' tail (agents/local_state.py).
    store: str = "rocksdb://"
    data_dir: str = "run/worker"
    # Names this worker's own directory under data_dir (RocksDB files cannot be shared between
    # processes); empty: "port<web_port>", so workers started with different --web-port differ.
    worker_name: str = ""
    # Standby replicas keep a copy of other workers' table partitions warm (a moved partition is then
    # read from its standby's offset, not from 0). Off by default: the chaos test passes with them, but the
    # scale-out test's start of 3 workers ran over its bound with them (docs/partitioning.md, issue 17);
    # rocksdb store only (faust_config).
    standby_replicas: int = 0
    window_seconds: int = 30
    grace_seconds: int = 5
    idle_flush_seconds: int = 10
    # An idle flush also waits for the pipeline upstream of `impacts` to drain (streams.windows.idle_flush);
    # past this bound it flushes anyway (a stuck upstream partition must not hold windows open forever).
    idle_flush_max_seconds: int = 300
    max_message_bytes: int = 1_048_576
    web_port: int = 6066
    signing_key: str = ""
    public_keys: str = ""
    executor: str = "reference"
    executor_url: str = ""
    executor_timeout_seconds: int = 30
    executor_concurrency: int = 8
    retry_base_seconds: int = 10
    retry_max_seconds: int = 900
    retry_max_attempts: int = 5
    log_level: str = "INFO"
    # The fold stages handle a fetched batch of up to `batch_max` records per ack wait; a batch closes
    # `batch_wait_ms` after its first record when it has not filled (the latency it may add at low
    # rates; an idle agent sleeps: agents/take.py).
    batch_max: int = 500
    batch_wait_ms: int = 5
    # How long the broker may hold a fetch open when no data is there (faust's fixed value is 1,500 ms,
    # which can delay a quiet partition that long: agents/fetch_wait.py).
    fetch_max_wait_ms: int = 100
    extra: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, **overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "kafka_bootstrap": _env("KAFKA_BOOTSTRAP", cls.kafka_bootstrap),
            "mongo_url": _env("MONGO_URL", cls.mongo_url),
            "mongo_db": _env("STELLA_MONGO_DB", cls.mongo_db),
            "topic_prefix": _env("STELLA_TOPIC_PREFIX", cls.topic_prefix),
            "app_id": _env("STELLA_APP_ID", cls.app_id),
            "partitions": _int("STELLA_PARTITIONS", cls.partitions),
            "store": _env("STELLA_STORE", cls.store),
            "data_dir": _env("STELLA_DATA_DIR", cls.data_dir),
            "worker_name": _env("STELLA_WORKER_NAME", cls.worker_name),
            "standby_replicas": _int("STELLA_STANDBY_REPLICAS", cls.standby_replicas),
            "window_seconds": _int("STELLA_WINDOW_SECONDS", cls.window_seconds),
            "grace_seconds": _int("STELLA_GRACE_SECONDS", cls.grace_seconds),
            "idle_flush_seconds": _int("STELLA_IDLE_FLUSH_SECONDS", cls.idle_flush_seconds),
            "idle_flush_max_seconds": _int("STELLA_IDLE_FLUSH_MAX_SECONDS", cls.idle_flush_max_seconds),
            "max_message_bytes": _int("STELLA_MAX_MESSAGE_BYTES", cls.max_message_bytes),
            "web_port": _int("STELLA_WEB_PORT", cls.web_port),
            "signing_key": _env("STELLA_SIGNING_KEY_FILE", cls.signing_key),
            "public_keys": _env("STELLA_PUBLIC_KEYS", cls.public_keys),
            "executor": _env("STELLA_EXECUTOR", cls.executor),
            "executor_url": _env("STELLA_EXECUTOR_URL", cls.executor_url),
            "executor_timeout_seconds": _int("STELLA_EXECUTOR_TIMEOUT_SECONDS", cls.executor_timeout_seconds),
            "executor_concurrency": _int("STELLA_EXECUTOR_CONCURRENCY", cls.executor_concurrency),
            "retry_base_seconds": _int("STELLA_RETRY_BASE_SECONDS", cls.retry_base_seconds),
            "retry_max_seconds": _int("STELLA_RETRY_MAX_SECONDS", cls.retry_max_seconds),
            "retry_max_attempts": _int("STELLA_RETRY_MAX_ATTEMPTS", cls.retry_max_attempts),
            "log_level": _env("STELLA_LOG_LEVEL", cls.log_level),
            "batch_max": _int("STELLA_BATCH_MAX", cls.batch_max),
            "batch_wait_ms": _int("STELLA_BATCH_WAIT_MS", cls.batch_wait_ms),
            "fetch_max_wait_ms": _int("STELLA_FETCH_MAX_WAIT_MS", cls.fetch_max_wait_ms),
        }
        values.update(overrides)
        return cls(**values)

    def topic(self, logical: str) -> str:
        """Real topic name for a logical one ('jobs' → 'demo.jobs' with prefix 'demo.')."""
        return f"{self.topic_prefix}{logical}"

    def worker_datadir(self) -> Path:
        """This worker's own faust data directory (its local tables live under it)."""
        name = self.worker_name or f"port{self.web_port}"
        if not name.replace("-", "").replace("_", "").replace(".", "").isalnum() or name.startswith("."):
            raise SystemExit(f"configuration error: STELLA_WORKER_NAME={name!r} (letters, digits, - _ .)")
        return Path(self.data_dir) / self.app_id / name

    def table_options(self) -> dict[str, Any] | None:
        """Store options per table. faust's RocksDB defaults are sized for one big table (a 2 GiB block
        cache and 3 x 64 MiB memtables per database, 90 % of the file descriptor limit each); a worker
        opens one database per table and partition (15 x 6 here), so each gets a small share. A fresh
        dict per table: faust's store pops keys out of the one it is given."""
        if not self.store.startswith("rocksdb"):
            return None
        return {
            "write_buffer_size": 8 << 20,
            "max_write_buffer_number": 2,
            "target_file_size_base": 16 << 20,
            "block_cache_size": 16 << 20,
            "max_open_files": 64,
        }

    def faust_config(self) -> dict[str, Any]:
        """Keyword arguments for faust.App. Timeouts are short so a killed worker's partitions move
        within seconds, which the crash and scale-out tests rely on."""
        from agents.rocksdb_store import register  # imports faust: not at the top of this module

        register()  # rocksdb:// = faust's store without a reopen of every database per rebalance
        datadir = self.worker_datadir()
        datadir.mkdir(parents=True, exist_ok=True)  # faust expects it to exist
        return {
            "broker": f"kafka://{self.kafka_bootstrap}",
            "store": self.store,
            "datadir": str(datadir),
            "topic_partitions": self.partitions,
            "topic_replication_factor": 1,
            "topic_allow_declare": True,
            "broker_session_timeout": 10.0,
            "broker_heartbeat_interval": 1.0,
            "broker_request_timeout": 40.0,
            "broker_rebalance_timeout": 30.0,
            "broker_commit_every": 100,
            "broker_commit_interval": 1.0,
            "consumer_auto_offset_reset": "earliest",
            "producer_acks": -1,
            "producer_max_request_size": self.max_message_bytes * 2,
            "table_cleanup_interval": 30.0,
            # Only with the rocksdb store, which keeps a standby partition in a database of its own that table
            # iteration skips (`_dbs_for_actives`); the memory store iterates standby keys with its own, so
            # the job stage's reconcile timer would run other workers' jobs. docs/partitioning.md.
            "table_standby_replicas": self.standby_replicas if self.store.startswith("rocksdb") else 0,
            # A moved or wiped table partition is copied from its changelog in bulk (agents/bulk_recovery.py).
            "TableManager": "agents.bulk_recovery:TableManager",
            "stream_wait_empty": False,
            "web_enabled": self.web_port > 0,
            "web_port": max(self.web_port, 1),
            "web_bind": "127.0.0.1",
            "web_in_thread": False,
            # faust's own views (/table/<name>/<key> dumps any tenant's table values, /router, /graph,
            # statistics) would be served unauthenticated on the worker port; it serves only the
            # project's /healthz, /readyz and /metrics (agents.worker, docs/threat-model.md).
            "web_tables_enabled": False,
            "web_router_enabled": False,
            "web_stats_enabled": False,
            "web_graph_enabled": False,
            "web_metrics_enabled": False,
            "processing_guarantee": "at_least_once",
        }

    def public_dict(self) -> dict[str, Any]:
        """For logs: everything but key material paths' contents (paths are fine)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
