"""The project's Kafka topics: names, keys, partition counts and configs (DESIGN.md §2).

Plain data, imported by the ops scripts that pre-create topics and by the faust app. A prefix isolates
test runs and parallel environments on one broker.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

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
    return int(os.environ.get("STELLA_PARTITIONS", "6"))


def topics(prefix: str = "", partitions: int | None = None) -> list[TopicSpec]:
    """Every topic the scheduler uses. Repartition topics share the partition count of the tables they
    feed, so one count serves all (DESIGN.md §2)."""
    n = partitions if partitions is not None else default_partitions()
    p = prefix
    return [
        TopicSpec(f"{p}inventory", "image digest", n, COMPACTED_FOREVER, source=True),
        TopicSpec(f"{p}advisories", "advisory id", n, FOREVER, source=True),
        TopicSpec(f"{p}vex", "vulnerability id", n, FOREVER, source=True),
        TopicSpec(f"{p}policy", "tenant", n, FOREVER, source=True),
        TopicSpec(f"{p}rechecks", "tenant", n, FOREVER, source=True),
        TopicSpec(f"{p}runtime", "image digest", n, FOREVER, source=True),
        TopicSpec(f"{p}index-updates", "package key", n),
        TopicSpec(f"{p}impact-requests", "package key", n),
        TopicSpec(f"{p}catalog-updates", "tenant", n),
        TopicSpec(f"{p}impacts", "tenant", n),
        TopicSpec(f"{p}jobs", "image digest", n),
        TopicSpec(f"{p}job-attempts", "image digest", n),
        TopicSpec(f"{p}job-results", "image digest", n),
        TopicSpec(f"{p}run-inputs", "run id", n),
        TopicSpec(f"{p}run-events", "run id", n),
        TopicSpec(f"{p}sla-breaches", "image digest", n),
        TopicSpec(f"{p}simulations", "tenant", n),
        TopicSpec(f"{p}cursors", "source", n),
        TopicSpec(f"{p}events.signed", "tenant/subject", n),
        TopicSpec(f"{p}deadletter", "source topic", n, FOREVER),
    ]


def topic_names(prefix: str = "") -> dict[str, str]:
    """Logical name (without prefix) → real topic name."""
    return {spec.name[len(prefix) :]: spec.name for spec in topics(prefix)}
