"""The Kafka key of every message written to a source topic or to ``run-inputs`` from outside the stream
(the CLI, the HTTP API, tests), defined once: co-partitioning and compaction depend on every producer
keying a message the same way. agents.topology describes these topics with ``TOPIC_KEYS``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

from schemas.messages import (
    AdvisoryDelta,
    Inventory,
    PolicyChange,
    Recheck,
    RunCancelRequested,
    RuntimeEvent,
    ScheduleCommand,
    SimulationRequest,
    VexStatement,
)

_KEY_OF: dict[type[BaseModel], Callable[[Any], str]] = {
    # compacted: the latest inventory of one image of one tenant wins (a tombstone removes it)
    Inventory: lambda m: f"{m.tenant}/{m.image_digest}",
    AdvisoryDelta: lambda m: str(m.id),
    VexStatement: lambda m: str(m.vulnerability),
    PolicyChange: lambda m: str(m.tenant),
    Recheck: lambda m: str(m.tenant),
    RuntimeEvent: lambda m: str(m.image_digest),
    RunCancelRequested: lambda m: str(m.run_id),
    ScheduleCommand: lambda m: str(m.tenant),
    # its run id: the request meets the run's inputs and events in one partition (agents/simulation_stage)
    SimulationRequest: lambda m: str(m.simulation_id),
}

# What the key of each of these topics is, in words (agents.topology).
TOPIC_KEYS: dict[str, str] = {
    "inventory": "tenant/image digest",
    "advisories": "advisory id",
    "vex": "vulnerability id",
    "policy": "tenant",
    "rechecks": "tenant",
    "runtime": "image digest",
    "schedules": "tenant",
    "simulation-requests": "simulation id (= its run id)",
}


def message_key(message: BaseModel) -> bytes:
    """The Kafka key ``message`` is produced with."""
    key_of = _KEY_OF.get(type(message))
    if key_of is None:
        raise TypeError(f"no Kafka key defined for {type(message).__name__}")
    return key_of(message).encode()
