"""What the read models are built from, shared by the live projector (agents.projector) and the rebuild
(cli.rebuild): the projected topics, the projector's consumer group and how a record becomes a positioned
message for the fold. Both must agree exactly, or a rebuild would fold a different log than the live
projector does."""

from __future__ import annotations

from typing import Any, Protocol

from projections.fold import Position, inventory_tombstone
from schemas.codec import Decoded, decode

PROJECTED = (
    "jobs",
    "job-results",
    "run-events",
    "sla-breaches",
    "impacts",
    "deadletter",
    "cursors",
    "policy",
    # Image metadata (repository, tags, namespaces, labels; tombstones mark the image removed) and where it
    # runs, for the images read model and the API's selector preview.
    "inventory",
    "runtime",
    # Schedules and their decided occurrences (fired runs, missed ones).
    "schedule-events",
    # Policy simulations: queued requests and completed results (docs/simulation.md).
    "simulation-requests",
    "simulations",
    "simulation-results",  # only their job documents: a simulation's results never reach an image's
    # The audit ledger's signed snapshots (docs/audit-ledger.md).
    "audit-snapshots",
    # Not folded into documents, but checkpointed: the API's read-your-writes (`min_position`) waits on the
    # projector having passed the position a recheck (or runtime event) write produced.
    "rechecks",
)


class ProjectionSettings(Protocol):
    """The part of agents.settings.Settings these need (this package does not import agents/)."""

    @property
    def app_id(self) -> str: ...

    @property
    def max_message_bytes(self) -> int: ...


def projector_group(settings: ProjectionSettings) -> str:
    return f"{settings.app_id}-projector"


def positioned(settings: ProjectionSettings, logical: str, record: Any) -> tuple[object, Position] | None:
    """The message and its position, or None for records the read models do not use (ticks, rejects:
    the stage that consumed them dead-lettered the bad ones already)."""
    result = decode(logical, record.key, record.value, settings.max_message_bytes)
    if not isinstance(result, Decoded):
        return None
    model: object | None = result.model
    if model is None and logical == "inventory":
        model = inventory_tombstone(record.key)
    if model is None:
        return None
    return model, Position(record.topic, record.partition, record.offset)
