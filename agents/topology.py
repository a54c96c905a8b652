"""The project's Kafka topics: names, keys, partition counts and configs (docs/architecture.md §2).

Plain data, imported by the ops scripts that pre-create topics and by the faust app. A prefix isolates
test runs and parallel environments on one broker.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from agents.settings import Settings, env_int
from schemas.keys import TOPIC_KEYS

FOREVER = {"retention.ms": "-1"}
COMPACTED_FOREVER = {"cleanup.policy": "compact", "retention.ms": "-1"}


@dataclass(frozen=True)
class TopicSpec:
    name: str
    key: str
    partitions: int
    config: dict[str, str] = field(default_factory=dict)
    source: bool = False  # producers outside the scheduler write here


def default_partitions() -> int:
    return env_int("STELLA_PARTITIONS", Settings.partitions)


def topics(prefix: str = "", partitions: int | None = None) -> list[TopicSpec]:
    """Every topic the scheduler uses. Repartition topics share the partition count of the tables they
    feed, so one count serves all (docs/architecture.md §2)."""
    n = partitions if partitions is not None else default_partitions()
    p = prefix
    return [
        TopicSpec(f"{p}inventory", TOPIC_KEYS["inventory"], n, COMPACTED_FOREVER, source=True),
        TopicSpec(f"{p}advisories", TOPIC_KEYS["advisories"], n, FOREVER, source=True),
        TopicSpec(f"{p}vex", TOPIC_KEYS["vex"], n, FOREVER, source=True),
        TopicSpec(f"{p}policy", TOPIC_KEYS["policy"], n, FOREVER, source=True),
        TopicSpec(f"{p}rechecks", TOPIC_KEYS["rechecks"], n, FOREVER, source=True),
        TopicSpec(f"{p}runtime", TOPIC_KEYS["runtime"], n, FOREVER, source=True),
        TopicSpec(f"{p}schedules", TOPIC_KEYS["schedules"], n, FOREVER, source=True),
        TopicSpec(f"{p}index-updates", "package key", n),
        TopicSpec(f"{p}impact-requests", "package key", n),
        TopicSpec(f"{p}catalog-updates", "tenant", n),
        TopicSpec(f"{p}impacts", "tenant", n),
        TopicSpec(f"{p}schedule-events", "tenant", n),
        TopicSpec(f"{p}jobs", "image digest", n),
        TopicSpec(f"{p}job-attempts", "image digest", n),
        TopicSpec(f"{p}job-results", "image digest", n),
        TopicSpec(f"{p}run-inputs", "run id", n),
        TopicSpec(f"{p}run-events", "run id", n),
        TopicSpec(f"{p}sla-breaches", "image digest", n),
        TopicSpec(f"{p}simulations", "tenant", n),
        TopicSpec(f"{p}simulation-requests", TOPIC_KEYS["simulation-requests"], n, FOREVER, source=True),
        # simulation jobs' results: only the job stage reads them (no live read model, signer or table)
        TopicSpec(f"{p}simulation-results", "image digest", n),
        TopicSpec(f"{p}cursors", "source", n),
        TopicSpec(f"{p}events.signed", "tenant/subject", n),
        TopicSpec(f"{p}deadletter", "source topic", n, FOREVER),
        # the audit ledger (docs/audit-ledger.md): facts re-keyed by tenant, the chains, their snapshots
        TopicSpec(f"{p}audit-facts", "tenant", n),
        TopicSpec(f"{p}audit", "tenant", n, FOREVER),
        TopicSpec(f"{p}audit-snapshots", "tenant", n, FOREVER),
    ]


# faust tables (agents.pipeline.Pipeline.table refuses any other name), each backed by a compacted
# `<app id>-<table>-changelog` topic with the topics' partition count.
TABLES = (
    "images",
    "advisory-packages",
    "index",
    "advisory-specs",
    "directory",
    "catalog",
    "windows",
    "sites",
    "queue",
    "last-results",
    "runs",
    "audit-chains",
    "audit-seen",
    "schedules",
    "last-reports",
    "run-gates",
    "simulations",
)


def faust_topics(app_id: str, partitions: int | None = None) -> list[TopicSpec]:
    """The topics faust would declare itself once it runs: the tables' changelogs and its leader-election
    topic (faust/tables/base.py `_changelog_topic_name`, faust/assignor/leader_assignor.py). Created up
    front with the project's topics: a first assignment made before faust has declared them ignores them
    ("Ignoring missing topic"), then the first table write fails with PartitionsMismatch, and with one
    worker no later rebalance repairs it."""
    n = partitions if partitions is not None else default_partitions()
    specs = [
        TopicSpec(f"{app_id}-{table}-changelog", "table key", n, {"cleanup.policy": "compact"})
        for table in TABLES
    ]
    return [*specs, TopicSpec(f"{app_id}-__assignor-__leader", "none", 1)]


def topic_names(prefix: str = "") -> dict[str, str]:
    """Logical name (without prefix) → real topic name."""
    return {spec.name[len(prefix) :]: spec.name for spec in topics(prefix)}
