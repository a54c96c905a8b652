"""The projector group's assignor: every projected partition goes to one member, the oldest.

Why one writer (chaos seed 37558, issue 17): FerretDB 1.24 applies an update as read, modify in Go, write
the whole document back (`internal/handler/msg_update.go` queries the document, then
`backends/postgresql` `UpdateAll` runs `UPDATE ... SET _jsonb = $1 WHERE _id = $2`), with no lock between
the read and the write. Two processes updating one document at once lose one update: two threads setting
100 distinct fields each on one document kept 153 of 200 (measured on the shared FerretDB). The read
models have documents fed from many partitions (a window's jobs, images and impacts come from `jobs`
and `impacts` partitions; docs/partitioning.md), so with the projected partitions spread over N workers,
two projectors wrote one window at once and a job vanished from it, for good: the position guard
(`_pos`) is evaluated on the same stale read. A filter cannot fix it from the client, and the shared
server cannot be patched from here, so the group has a single writer. Within one process the projector
applies its batches one after the other.

The oldest member keeps the partitions (its start time travels in the member metadata), so a joining
worker does not take the projection over; ties go to the lower member id. A projector whose partitions
are revoked finishes the batch it is writing first (`agents/projector.py`), so the next owner never writes
beside it. All members of the group must run this assignor (Kafka refuses a member whose protocol no
other member supports: stop every worker of an older version before starting this one).
"""

from __future__ import annotations

import collections
import struct
import time
from collections.abc import Iterable, Mapping

from aiokafka.cluster import ClusterMetadata
from aiokafka.coordinator.assignors.abstract import AbstractPartitionAssignor
from aiokafka.coordinator.protocol import (
    ConsumerProtocolMemberAssignment,
    ConsumerProtocolMemberMetadata,
)

STARTED_MS = int(time.time() * 1000)  # this process's start: the member's age in the group
_AGE = struct.Struct(">q")


def elect(started: Mapping[str, int | None]) -> str:
    """The member that projects: the earliest start time, then the lowest member id. A member whose
    metadata carries no start time counts as the youngest."""
    return min(started, key=lambda m: (started[m] is None, started[m] or 0, m))


def started_ms(user_data: bytes) -> int | None:
    if len(user_data) != _AGE.size:
        return None
    (value,) = _AGE.unpack(user_data)
    return int(value)


class OneWriterAssignor(AbstractPartitionAssignor):  # type: ignore[misc]
    name = "stella-one-writer"
    version = 0

    @classmethod
    def assign(
        cls,
        cluster: ClusterMetadata,
        members: Mapping[str, ConsumerProtocolMemberMetadata],
    ) -> dict[str, ConsumerProtocolMemberAssignment]:
        writer = elect({m: started_ms(meta.user_data or b"") for m, meta in members.items()})
        topics = sorted({t for meta in members.values() for t in meta.subscription})
        owned: dict[str, list[int]] = collections.defaultdict(list)
        for topic in topics:
            owned[topic] = sorted(cluster.partitions_for_topic(topic) or ())
        return {
            member: ConsumerProtocolMemberAssignment(
                cls.version, sorted(owned.items()) if member == writer else [], b""
            )
            for member in members
        }

    @classmethod
    def metadata(cls, topics: Iterable[str]) -> ConsumerProtocolMemberMetadata:
        return ConsumerProtocolMemberMetadata(cls.version, list(topics), _AGE.pack(STARTED_MS))

    @classmethod
    def on_assignment(cls, assignment: ConsumerProtocolMemberAssignment) -> None:
        pass
