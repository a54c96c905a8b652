"""The release gate of a run with limits: a schedule's ``limits.parallelism`` and ``limits.rate_per_second``
(docs/schedules.md, "Limits"). Pure; the shell is agents/run_stage.py.

Why the run stage and not the job queue: a run's jobs are keyed by image digest, so they spread over every
partition of `jobs` and so over every worker, and the fair runner's caps are per worker. The run stage owns a
run (key: run id) on exactly one worker, already holds every job command of the run and sees every start and
result. A planner that gives a run limits sends its job commands to the run stage only; the gate releases them
to `jobs`, so the limits hold for the whole deployment whatever the number of workers, and survive a restart
(the gate is a table value).

* parallelism N: at most N of the run's released jobs are not terminal (*in flight*: queued in the job
  stage, executing, or waiting for a retry). A terminal job frees its slot.
* rate R: a token bucket over *event time*: capacity R (a burst of one second's worth), R tokens per whole
  second, full at the plan's time. Time moves only with the instants given to ``step`` (the plan's, then the
  ticks'), in whole seconds, with integers: no floats, no wall clock. By event time t at most
  ``R + R * floor(t - planned)`` jobs are released, and a job starts only after it was released.

Jobs are released in the plan's order (sorted job ids); a job whose command the stage has not seen yet is
passed over until it arrives. A cancelled run releases nothing more: its held jobs are dropped, and the shell
records them as skipped.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import UTC, datetime, timedelta

from schemas.canonical import dumps, loads
from schemas.messages import TERMINAL_JOB_STATUSES, JobStatus, Model, RunLimits, Timestamp


class Gate(Model):
    """Table value (key: run id) while a run with limits still holds jobs back."""

    run_id: str
    limits: RunLimits
    held: list[str]  # job ids not released yet, in release order
    tokens: int = 0  # rate: whole tokens available at `clock`
    clock: Timestamp  # event time of the bucket, whole seconds


def limited(limits: RunLimits | None) -> bool:
    return limits is not None and (limits.parallelism is not None or limits.rate_per_second is not None)


def _whole(at: datetime) -> datetime:
    if at.tzinfo is None:
        raise ValueError("naive datetime: pass aware UTC times")
    return at.astimezone(UTC).replace(microsecond=0)


def open_gate(run_id: str, limits: RunLimits, job_ids: Collection[str], at: datetime) -> Gate:
    """A gate holding every job of the plan, its bucket full at the plan's time."""
    return Gate(
        run_id=run_id,
        limits=limits,
        held=sorted(set(job_ids)),
        tokens=limits.rate_per_second or 0,
        clock=_whole(at),
    )


def refill(gate: Gate, now: datetime | None) -> Gate:
    """The bucket at ``now`` (whole seconds elapsed since its clock; an earlier ``now`` changes nothing)."""
    if now is None:
        return gate
    elapsed = int((_whole(now) - gate.clock).total_seconds())
    if elapsed <= 0:
        return gate
    rate = gate.limits.rate_per_second
    tokens = min(rate, gate.tokens + rate * elapsed) if rate is not None else 0
    return gate.model_copy(update={"tokens": tokens, "clock": gate.clock + timedelta(seconds=elapsed)})


def in_flight(planned: Collection[str], statuses: Mapping[str, JobStatus], gate: Gate | None) -> int:
    """Released jobs of the run that are not terminal."""
    held = set(gate.held) if gate is not None else set()
    ids = set(planned) | statuses.keys()
    return sum(1 for j in ids if j not in held and statuses.get(j, "queued") not in TERMINAL_JOB_STATUSES)


def step(gate: Gate, now: datetime | None, flying: int, known: Collection[str]) -> tuple[Gate, list[str]]:
    """Release what the limits allow at ``now`` (None: no time passed) with ``flying`` jobs in flight.
    ``known``: job ids whose command the stage holds. Returns the new gate and the job ids released."""
    gate = refill(gate, now)
    allowed = len(gate.held)
    if gate.limits.parallelism is not None:
        allowed = min(allowed, max(0, gate.limits.parallelism - flying))
    if gate.limits.rate_per_second is not None:
        allowed = min(allowed, gate.tokens)
    if allowed <= 0:
        return gate, []
    released = [j for j in gate.held if j in known][:allowed]
    if not released:
        return gate, []
    gone = set(released)
    update: dict[str, object] = {"held": [j for j in gate.held if j not in gone]}
    if gate.limits.rate_per_second is not None:
        update["tokens"] = gate.tokens - len(released)
    return gate.model_copy(update=update), released


def drop(gate: Gate) -> tuple[Gate, list[str]]:
    """A cancelled run: nothing more is released; the held job ids are returned (to be recorded skipped)."""
    return gate.model_copy(update={"held": []}), list(gate.held)


def encode(gate: Gate) -> bytes:
    return dumps(gate)


def decode(data: bytes) -> Gate:
    return Gate.model_validate(loads(data))
