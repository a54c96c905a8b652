"""The live feed's pure part (``GET /api/v1/stream``, docs/console.md): event ids and the resume cut.

The feed reads the topics the read models are folded from (``FEED_TOPICS``: run and job changes) and sends a
tenant the changes that are its own. A *source* is one (topic index, partition); the *cursor* maps each source
to the next offset to send. Every event's id is the cursor just after it, written as
``<seq>:<topic>-<partition>-<offset>.…`` where ``seq`` is the sum of the offsets: each event advances at
least one source, so ``seq`` grows strictly from event to event (a monotonic id) and the vector says exactly
where to resume. A client that reconnects with ``Last-Event-ID`` gets every record past that cut once: records
below it are dropped (no duplicate), and each source is read in offset order from it (no gap).

Events from several sources are merged by (timestamp, source) while each source stays in offset order, so the
same records give the same sequence of events.
"""

from __future__ import annotations

import heapq
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

FEED_TOPICS = ("run-events", "job-results")

Source = tuple[int, int]  # (index into FEED_TOPICS, partition)
Cursor = dict[Source, int]

MAX_PARTITION = 100_000
_PART = re.compile(r"^(\d{1,3})-(\d{1,6})-(\d{1,19})$")


class BadEventId(ValueError):
    """A Last-Event-ID (or ``from``) this feed did not issue."""


@dataclass(frozen=True, slots=True)
class FeedRecord:
    source: Source
    offset: int
    timestamp: int  # ms, the broker record's
    tenant: str | None  # None: undecodable, or no tenant (never sent to anyone)
    event: str = ""  # SSE event name
    data: Any = None  # what is sent (JSON)


@dataclass(frozen=True, slots=True)
class Delivery:
    event_id: str
    event: str
    data: Any


def event_id(cursor: Mapping[Source, int]) -> str:
    seq = sum(cursor.values())
    body = ".".join(f"{t}-{p}-{o}" for (t, p), o in sorted(cursor.items()))
    return f"{seq}:{body}"


def parse_event_id(text: str, topics: int = len(FEED_TOPICS)) -> Cursor:
    """The cursor an id names; raises ``BadEventId`` for anything this feed did not issue."""
    seq_text, sep, body = text.strip().partition(":")
    if not sep or not seq_text.isdigit():
        raise BadEventId("expected <seq>:<topic>-<partition>-<offset>.…")
    cursor: Cursor = {}
    for part in body.split(".") if body else []:
        match = _PART.match(part)
        if match is None:
            raise BadEventId(f"bad cursor entry {part[:40]!r}")
        t, p, o = (int(g) for g in match.groups())
        if t >= topics or p > MAX_PARTITION or (t, p) in cursor:
            raise BadEventId(f"bad cursor entry {part[:40]!r}")
        cursor[(t, p)] = o
    if sum(cursor.values()) != int(seq_text):
        raise BadEventId("the sequence number does not match the cursor")
    return cursor


def merged(records: Iterable[FeedRecord]) -> list[FeedRecord]:
    """Records in delivery order: each source in offset order, sources interleaved by (timestamp, source)."""
    queues: dict[Source, list[FeedRecord]] = {}
    for record in records:
        queues.setdefault(record.source, []).append(record)
    heads: list[tuple[int, Source, int]] = []
    for source, queue in queues.items():
        queue.sort(key=lambda r: r.offset)
        heads.append((queue[0].timestamp, source, 0))
    heapq.heapify(heads)
    out: list[FeedRecord] = []
    while heads:
        _, source, i = heapq.heappop(heads)
        queue = queues[source]
        out.append(queue[i])
        if i + 1 < len(queue):
            heapq.heappush(heads, (queue[i + 1].timestamp, source, i + 1))
    return out


def advance(
    cursor: Mapping[Source, int], records: Iterable[FeedRecord], tenant: str
) -> tuple[list[Delivery], Cursor]:
    """The resume cut: what to send ``tenant`` from ``records`` past ``cursor``, and the cursor after them.

    A record below its source's cursor was sent (or skipped) before and is dropped; every other record moves
    its source's cursor past it, and is sent only when it is the tenant's. A source the cursor does not name
    starts at 0."""
    now: Cursor = dict(cursor)
    out: list[Delivery] = []
    for record in merged(records):
        if record.offset < now.get(record.source, 0):
            continue
        now[record.source] = record.offset + 1
        if record.tenant == tenant and record.tenant is not None:
            out.append(Delivery(event_id(now), record.event, record.data))
    return out, now


def sse_frame(event: str, data: str, ident: str | None = None) -> str:
    """One Server-Sent Events frame (``data`` must be one line: JSON is)."""
    head = f"id: {ident}\n" if ident is not None else ""
    return f"{head}event: {event}\ndata: {data}\n\n"
