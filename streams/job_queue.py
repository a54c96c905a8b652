"""The durable job queue's state and folds (docs/architecture.md §4-5): one table value per job id, either a queued
``Entry`` (the job and its retry history) or ``DONE``. The job stage applies these folds to its table
through the position guard; the runner's caps scale with the worker's concurrency.
"""

from __future__ import annotations

from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson

from schemas.canonical import dumps, parse_time
from schemas.messages import Attempt, JobAttempt, JobCommand
from streams.fairness import Caps
from streams.simulation import is_simulation

DONE = b"done"


@dataclass
class Entry:
    """A queued job and its retry history. Table value (JSON) under the job id."""

    job: JobCommand
    attempts: list[Attempt] = field(default_factory=list)
    next_at: datetime | None = None  # event time of the next attempt
    due_at: datetime | None = None  # wall clock

    def encode(self) -> bytes:
        return dumps(
            {
                "job": self.job,
                "attempts": self.attempts,
                "next_at": self.next_at,
                "due_at": self.due_at,
            }
        )

    @classmethod
    def decode(cls, data: bytes) -> Entry:
        raw = orjson.loads(data)
        return cls(
            job=JobCommand.model_validate(raw["job"]),
            attempts=[Attempt.model_validate(a) for a in raw["attempts"]],
            next_at=_time(raw.get("next_at")),
            due_at=_time(raw.get("due_at")),
        )


def _time(text: str | None) -> datetime | None:
    return parse_time(text) if text else None


def queued(state: bytes | None) -> Entry | None:
    """The entry a table value holds, or None when there is none or the job is done."""
    return Entry.decode(state) if state and state != DONE else None


def enqueue(state: bytes | None, job: JobCommand) -> bytes:
    """A job command arrives: queued once, whatever was there stays (a redelivery changes nothing)."""
    return state if state else Entry(job).encode()


def record_attempt(state: bytes | None, attempt: JobAttempt) -> bytes | None:
    """A scheduled retry: the longer attempt history wins; a done job or an older report is ignored."""
    entry = queued(state)
    if entry is None or len(attempt.attempts) <= len(entry.attempts):
        return state
    return Entry(entry.job, attempt.attempts, attempt.next_at, attempt.due_at).encode()


def longer_history(state: bytes | None, known: Entry | None) -> Entry | None:
    """The folded entry when it carries more attempts than the runner's copy ``known`` (so attempts
    continue after a restart instead of restarting at 1), else None."""
    if known is None:
        return None
    folded = queued(state)
    if folded is None or len(folded.attempts) <= len(known.attempts):
        return None
    return folded


def scaled_caps(total: int) -> Caps:
    """Per-class caps proportional to the worker's concurrency; emergency keeps reserved slots. The
    simulation lane gets a quarter as many slots again (at least one), on top of ``total``."""
    lane = max(1, total // 4)
    return Caps(total=max(1, total), simulation=lane, simulation_per_tenant=lane, **_scaled_caps(total))


def _scaled_caps(total: int) -> dict[str, Any]:
    total = max(1, total)
    reserve_emergency = max(1, total // 4) if total > 1 else 0
    reserve_high = max(0, total // 8)
    if reserve_emergency + reserve_high > total:
        reserve_high = 0
    return {
        "per_class": {
            "emergency": total,
            "high": total,
            "normal": max(1, total - reserve_emergency),
            "background": max(1, total - reserve_emergency - reserve_high),
        },
        "reserved": {"emergency": reserve_emergency, "high": reserve_high, "normal": 0, "background": 0},
        "per_tenant": {"emergency": total, "high": total, "normal": total, "background": total},
    }


# One image's live jobs run one at a time, in this order: a job's findings are diffed against the image's
# previous result (`last-results`), which only the result of the job before it may have set. Two jobs of
# one image running together (or the later one first, after a rebalance handed both over at once) diffed
# against a result older than the reference run's (soak seed 249819). Simulations never write
# `last-results`, so they neither wait nor make a live job wait (streams/fairness.py rule 4).
ImageKey = tuple[str, str]


def image_key(job: JobCommand) -> ImageKey | None:
    """The (tenant, digest) a live job is serialised on; None for a simulation."""
    return None if is_simulation(job) else (job.tenant, job.image_digest)


def job_order(job: JobCommand) -> tuple[datetime, str]:
    """Event time, then id: the order one image's jobs run in, the same on every worker and replay."""
    return job.window_end, job.job_id


def first_of_image(
    job: JobCommand, others: list[JobCommand], started: AbstractSet[str] = frozenset()
) -> bool:
    """Whether ``job`` may start: no other known job of its image has started (one at a time, even against
    an earlier job that arrived after it, e.g. a run's retry) or comes before it."""
    key = image_key(job)
    if key is None:
        return True
    mine = job_order(job)
    return not any(
        image_key(o) == key and o.job_id != job.job_id and (o.job_id in started or job_order(o) < mine)
        for o in others
    )
