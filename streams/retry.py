"""SLA-aware retry decisions for failed job attempts (docs/architecture.md §4). Pure: time comes in as an
argument.

A failed attempt is retried with exponential backoff and "equal jitter": the nominal delay for attempt *n*
is ``min(max_delay, base * factor ** (n - 1))`` and the jitter removes up to ``jitter_ratio`` of it. The
jitter fraction is ``sha256(job_id | n)``, not a random generator, so two workers (or a replay) decide
the same instant for the same job, while different jobs that failed together spread out.

A retry is only scheduled when it can still finish before the job's deadline: ``at + attempt timeout of
its class <= deadline``. The attempt timeout is used as the expected duration because it is the only
bound the scheduler can guarantee; a cheaper estimate would schedule attempts that then breach the SLA.

Pending retries live in a changelog-backed table (one entry per job id) so they survive a restart; the
functions here only transform that mapping, the shell owns the table and the timer.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Literal

import orjson

from schemas.canonical import format_time, parse_time
from schemas.messages import PRIORITY_RANK, Attempt, JobCommand, PriorityClass, SlaBreach

GiveUpReason = Literal["budget-exhausted", "deadline-unreachable", "permanent-error"]

_DEFAULT_TIMEOUTS: dict[PriorityClass, int] = {
    "emergency": 120,
    "high": 300,
    "normal": 600,
    "background": 900,
}


@dataclass(frozen=True)
class RetryPolicy:
    """Backoff parameters. Whole seconds everywhere: timestamps are second-precision
    (docs/architecture.md §3)."""

    base_delay_s: int = 10
    factor: int = 2
    max_delay_s: int = 900
    max_attempts: int = 5
    jitter_ratio: float = 0.5
    attempt_timeout_s: Mapping[PriorityClass, int] = field(default_factory=lambda: dict(_DEFAULT_TIMEOUTS))

    def __post_init__(self) -> None:
        if self.base_delay_s < 1 or self.factor < 1 or self.max_delay_s < self.base_delay_s:
            raise ValueError("need 1 <= base_delay_s <= max_delay_s and factor >= 1")
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        if not 0.0 <= self.jitter_ratio <= 1.0:
            raise ValueError("jitter_ratio must be within [0, 1]")

    def timeout_for(self, priority: PriorityClass) -> int:
        return self.attempt_timeout_s.get(priority, _DEFAULT_TIMEOUTS[priority])


@dataclass(frozen=True)
class Retry:
    at: datetime
    attempt: int  # number the next attempt will carry (1-based)
    delay_s: int


@dataclass(frozen=True)
class GiveUp:
    reason: GiveUpReason
    detail: str = ""


RetryDecision = Retry | GiveUp


def jitter_fraction(job_id: str, attempt: int) -> float:
    """A value in [0, 1) derived from the job id and attempt number only."""
    digest = hashlib.sha256(f"{job_id}|{attempt}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def nominal_delay_s(attempt: int, policy: RetryPolicy) -> int:
    """Backoff before attempt ``attempt + 1`` without jitter; ``attempt`` counts failures so far."""
    # Exponent is capped: factor ** huge is exact but needlessly large once past max_delay.
    exponent = min(max(attempt - 1, 0), 64)
    return int(min(policy.max_delay_s, policy.base_delay_s * policy.factor**exponent))


def backoff_delay_s(job_id: str, attempt: int, policy: RetryPolicy) -> int:
    """Jittered delay after ``attempt`` failures: within ``[nominal * (1 - jitter_ratio), nominal]``."""
    nominal = nominal_delay_s(attempt, policy)
    cut = int(nominal * policy.jitter_ratio * jitter_fraction(job_id, attempt))
    return max(1, nominal - cut)


def _whole_seconds(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("naive datetime: pass aware UTC times")
    return value.astimezone(UTC).replace(microsecond=0)


def next_attempt(
    job: JobCommand, attempts: Sequence[Attempt], now: datetime, policy: RetryPolicy
) -> RetryDecision:
    """Decide what follows the attempts made so far.

    With no attempt yet this answers whether a first attempt can still meet the deadline. A successful
    last attempt is a caller error: there is nothing to retry.
    """
    now = _whole_seconds(now)
    deadline = _whole_seconds(job.deadline)
    duration = timedelta(seconds=policy.timeout_for(job.priority))
    if not attempts:
        if now + duration > deadline:
            return GiveUp("deadline-unreachable", f"first attempt would end after {format_time(deadline)}")
        return Retry(at=now, attempt=1, delay_s=0)
    last = attempts[-1]
    if last.outcome == "ok":
        raise ValueError(f"job {job.job_id}: last attempt succeeded, nothing to retry")
    if last.outcome == "permanent":
        return GiveUp("permanent-error", last.error)
    failures = len(attempts)
    if failures >= policy.max_attempts:
        return GiveUp("budget-exhausted", f"{failures} of {policy.max_attempts} attempts used")
    delay = backoff_delay_s(job.job_id, failures, policy)
    if last.retry_after_s is not None:
        # The server knows its own load better than our backoff does: its hint is a floor, never a cap.
        delay = max(delay, last.retry_after_s)
    at = now + timedelta(seconds=delay)
    if at + duration > deadline:
        return GiveUp(
            "deadline-unreachable",
            f"attempt {failures + 1} at {format_time(at)} + {int(duration.total_seconds())}s "
            f"would end after {format_time(deadline)}",
        )
    return Retry(at=at, attempt=failures + 1, delay_s=delay)


def sla_breach(job: JobCommand, attempts: Sequence[Attempt], give_up: GiveUp, at: datetime) -> SlaBreach:
    """The SLA-breach event to emit alongside the dead letter when a job is given up."""
    reason = give_up.reason if not give_up.detail else f"{give_up.reason}: {give_up.detail}"
    return SlaBreach(
        job_id=job.job_id,
        run_id=job.run_id,
        tenant=job.tenant,
        image_digest=job.image_digest,
        priority=job.priority,
        deadline=job.deadline,
        at=at,
        reason=reason,
        attempts=list(attempts),
    )


# ---------------------------------------------------------------- pending retries (table state)


@dataclass(frozen=True)
class PendingRetry:
    job: JobCommand
    attempts: tuple[Attempt, ...]
    due_at: datetime


PendingRetries = Mapping[str, PendingRetry]


def add(state: PendingRetries, pending: PendingRetry) -> dict[str, PendingRetry]:
    """Record (or replace) the pending retry of a job. Replacing is what a re-delivered failure does."""
    new = dict(state)
    new[pending.job.job_id] = pending
    return new


def remove(state: PendingRetries, job_id: str) -> dict[str, PendingRetry]:
    new = dict(state)
    new.pop(job_id, None)
    return new


def _due_order(p: PendingRetry) -> tuple[datetime, int, str]:
    return (p.due_at, -PRIORITY_RANK[p.job.priority], p.job.job_id)


def due(state: PendingRetries, now: datetime) -> list[PendingRetry]:
    """Retries whose time has come, oldest due first, then higher class, then job id (total order)."""
    now = _whole_seconds(now)
    return sorted((p for p in state.values() if p.due_at <= now), key=_due_order)


def next_due_at(state: PendingRetries) -> datetime | None:
    """When the shell's timer next needs to fire."""
    return min((p.due_at for p in state.values()), default=None)


def schedule(
    state: PendingRetries,
    job: JobCommand,
    attempts: Sequence[Attempt],
    now: datetime,
    policy: RetryPolicy,
) -> tuple[dict[str, PendingRetry], RetryDecision]:
    """``next_attempt`` plus the state change it implies: a Retry is stored, a GiveUp clears the entry."""
    decision = next_attempt(job, attempts, now, policy)
    if isinstance(decision, Retry):
        return add(state, PendingRetry(job, tuple(attempts), decision.at)), decision
    return remove(state, job.job_id), decision


def encode_pending(pending: PendingRetry) -> bytes:
    """Canonical JSON, so a table value is byte-identical across replays."""
    doc = {
        "job": pending.job.model_dump(mode="json", by_alias=True),
        "attempts": [a.model_dump(mode="json", by_alias=True) for a in pending.attempts],
        "due_at": format_time(pending.due_at),
    }
    return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS)


def decode_pending(data: bytes) -> PendingRetry:
    doc = orjson.loads(data)
    return PendingRetry(
        job=JobCommand.model_validate(doc["job"]),
        attempts=tuple(Attempt.model_validate(a) for a in doc["attempts"]),
        due_at=parse_time(doc["due_at"]),
    )


def encode_state(state: PendingRetries) -> bytes:
    """Whole mapping in one value, for shells that keep a single key instead of one key per job."""
    docs = {job_id: orjson.loads(encode_pending(p)) for job_id, p in state.items()}
    return orjson.dumps(docs, option=orjson.OPT_SORT_KEYS)


def decode_state(data: bytes) -> dict[str, PendingRetry]:
    docs = orjson.loads(data)
    return {job_id: decode_pending(orjson.dumps(doc)) for job_id, doc in docs.items()}
