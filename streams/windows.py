"""Per-tenant impact windows (docs/architecture.md §3): a pure fold from impacts to job commands.

Window ``[floor(t / W) * W, + W)`` on the impact's event time. The state carries the event-time watermark
(max event time seen), the boundary below which every window is closed, and a late counter.

- A window closes when ``watermark - grace`` reaches its end. Closing is a prefix: ``closed_before`` is a
  multiple of W and every window ending at or before it is closed.
- An impact whose window is already closed is late: it goes to the first open window, starting at
  ``closed_before``, and is counted.
- ``flush_idle`` closes every open window regardless of the watermark; the shell calls it from a wall-clock
  timer when the stream is quiet and ``idle_flush`` says nothing upstream can still add to the windows. The
  wall clock decides *when*, never *what*: the emitted jobs depend only on the state.

The state is meant to be keyed by tenant (the impacts topic key); nothing in it assumes one tenant, so a
shell that prefers one state per partition gets a partition-wide watermark instead.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from enum import Enum

from schemas.messages import Impact, JobCommand
from streams.codec import from_epoch, pack, to_epoch, unpack
from streams.jobs import (
    DEFAULT_CONFIG,
    JobConfig,
    PendingJob,
    decode_pending,
    encode_pending,
    make_job,
    merge_impact,
)

DEFAULT_WINDOW = 30
DEFAULT_GRACE = 10

WindowKey = tuple[str, str]  # (tenant, digest)


@dataclass(frozen=True, slots=True)
class WindowState:
    """Open windows and the clock. Table key: tenant."""

    windows: dict[int, dict[WindowKey, PendingJob]] = field(default_factory=dict)  # start epoch → jobs
    watermark: int | None = None
    closed_before: int | None = None
    late: int = 0


def window_start(epoch: int, window: int) -> int:
    return (epoch // window) * window


def _close(
    state: WindowState, boundary: int | None, window: int, config: JobConfig
) -> tuple[WindowState, list[JobCommand]]:
    """Close every window ending at or before ``boundary`` (None: all of them)."""
    closing = sorted(s for s in state.windows if boundary is None or s + window <= boundary)
    if not closing:
        return state, []
    windows = {s: jobs for s, jobs in state.windows.items() if s not in closing}
    span = timedelta(seconds=window)
    out: list[JobCommand] = []
    for start in closing:
        begin = from_epoch(start)
        for key in sorted(state.windows[start]):
            out.append(make_job(state.windows[start][key], begin, span, config))
    new_boundary = boundary if boundary is not None else closing[-1] + window
    closed = new_boundary if state.closed_before is None else max(state.closed_before, new_boundary)
    return WindowState(windows, state.watermark, closed, state.late), out


def add_impact(
    state: WindowState | None,
    impact: Impact,
    window: int = DEFAULT_WINDOW,
    grace: int = DEFAULT_GRACE,
    config: JobConfig = DEFAULT_CONFIG,
) -> tuple[WindowState, list[JobCommand]]:
    """Fold one impact; returns the new state and the jobs of any window this closes (sorted)."""
    return add_impacts(state, [impact], window, grace, config)


def add_impacts(
    state: WindowState | None,
    impacts: Iterable[Impact],
    window: int = DEFAULT_WINDOW,
    grace: int = DEFAULT_GRACE,
    config: JobConfig = DEFAULT_CONFIG,
) -> tuple[WindowState, list[JobCommand]]:
    """Fold impacts in order; returns the new state and the jobs of the windows they close, in the order
    they close. The result equals folding them one at a time, but the state is copied once, not once per
    impact (a tenant stage folds a batch of hundreds into windows of hundreds of jobs)."""
    state = state or WindowState()
    windows = {start: dict(jobs) for start, jobs in state.windows.items()}
    watermark, closed_before, late = state.watermark, state.closed_before, state.late
    span = timedelta(seconds=window)
    out: list[JobCommand] = []
    for impact in impacts:
        t = to_epoch(impact.event_time)
        start = window_start(t, window)
        if closed_before is not None and start < closed_before:
            start = closed_before
            late += 1
        jobs = windows.setdefault(start, {})
        key = (impact.tenant, impact.image_digest)
        jobs[key] = merge_impact(jobs.get(key), impact)
        watermark = t if watermark is None else max(watermark, t)
        boundary = window_start(watermark - grace, window)
        if closed_before is not None and boundary <= closed_before:
            continue
        # The boundary advances even when no window was open below it, so later stragglers count as late.
        closed_before = boundary
        for begin in sorted(s for s in windows if s + window <= boundary):
            closing = windows.pop(begin)
            out.extend(make_job(closing[k], from_epoch(begin), span, config) for k in sorted(closing))
    return WindowState(windows, watermark, closed_before, late), out


def flush_idle(
    state: WindowState | None, window: int = DEFAULT_WINDOW, config: JobConfig = DEFAULT_CONFIG
) -> tuple[WindowState, list[JobCommand]]:
    """Close every open window (a quiet stream's timer)."""
    if state is None:
        return WindowState(), []
    return _close(state, None, window, config)


def open_jobs(state: WindowState) -> int:
    return sum(len(jobs) for jobs in state.windows.values())


def encode_windows(state: WindowState) -> bytes:
    return pack(
        {
            "w": [
                [start, [encode_pending(p) for _, p in sorted(jobs.items())]]
                for start, jobs in sorted(state.windows.items())
            ],
            "wm": state.watermark,
            "cb": state.closed_before,
            "late": state.late,
        }
    )


def decode_windows(data: bytes) -> WindowState:
    header, _ = unpack(data)
    windows: dict[int, dict[WindowKey, PendingJob]] = {}
    for start, rows in header["w"]:
        pendings = [decode_pending(row) for row in rows]
        windows[int(start)] = {(p.tenant, p.digest): p for p in pendings}
    return WindowState(windows, header["wm"], header["cb"], int(header["late"]))


# ----------------------------------------------------------------------------------------- idle flush gate
#
# The wall clock says a tenant has been quiet; it must not decide what its windows contain. An impact for a
# quiet tenant can still be in flight upstream (a moved partition being recovered, a backlog on another
# worker), and closing the window before it lands pushes it into the next window: another job id. So an
# idle flush also needs the pipeline upstream of `impacts` to be quiescent, read from the broker:
#
# - every stage publishes a record's outputs and waits for their acks before faust commits the record
#   (agents/shell.py, agents/pipeline.py), so an upstream partition whose committed offset reached its end
#   offset has every impact it will ever cause already in the `impacts` topic;
# - committed offsets are read first and end offsets after, so a record that arrives in between shows as
#   lag rather than slipping past;
# - the tick that asks for the flush is itself a record of the tenant's `impacts` partition: when nothing but
#   ticks follows it there at the moment the end offsets were read, every impact already published precedes
#   it and has been folded. "Nothing but ticks", not "nothing": ticks arrive every `idle_flush / 2` s, and
#   under load the stage handles a tick, and the snapshot it asks for is taken, later than the next tick is
#   written; requiring the tick to be the very last record then held idle flushes for many ticks (8.7 s
#   from the last impact to its job with a 2 s idle flush, bench e2e at load average 20).
#
# A partition that never drains (a stuck upstream partition, a steady trickle of other tenants' input) must
# not hold a window open forever: past `max_idle` the window is flushed anyway, and the shell says so.


class FlushDecision(Enum):
    WAIT = "wait"  # not yet: the tenant is not idle long enough, or impacts may still be in flight
    FLUSH = "flush"  # idle, and nothing upstream can still add to its windows
    FORCE = "force"  # idle past the bound although the upstream did not drain (may split a window)


@dataclass(frozen=True, slots=True)
class Quiescence:
    """A snapshot of the broker: the upstream partitions with lag, and the end offsets of `impacts`."""

    lagging: tuple[tuple[str, int], ...]
    impacts_end: dict[int, int]
    # Per `impacts` partition, an offset from which the partition holds only ticks up to `impacts_end` (read
    # after the end offsets); a partition not named here may hold anything before its end.
    ticks_from: dict[int, int] = field(default_factory=dict)


def lagging_partitions(
    committed: Mapping[tuple[str, int], int | None], ends: Mapping[tuple[str, int], int]
) -> tuple[tuple[str, int], ...]:
    """The partitions whose committed offset is behind their end offset (sorted). No committed offset
    (None or Kafka's -1) counts as 0: an empty partition never committed is drained."""
    lagging = []
    for tp, end in ends.items():
        done = committed.get(tp)
        if end > max(done if done is not None else 0, 0):
            lagging.append(tp)
    return tuple(sorted(lagging))


def covers(snapshot: Quiescence | None, partition: int, tick_offset: int) -> bool:
    """Whether `snapshot` was taken after the tick at `tick_offset` was written (else it says nothing
    about the impacts that preceded the tick, and a fresher one is needed)."""
    if snapshot is None:
        return False
    return snapshot.impacts_end.get(partition, 0) > tick_offset


def only_ticks_after(snapshot: Quiescence, partition: int, tick_offset: int) -> bool:
    """Whether the snapshot was taken after the tick was written and nothing but ticks followed it."""
    end = snapshot.impacts_end.get(partition)
    if end is None or end <= tick_offset:
        return False
    return end == tick_offset + 1 or snapshot.ticks_from.get(partition, end) <= tick_offset + 1


def idle_flush(
    idle_for: float,
    idle_after: float,
    max_idle: float,
    snapshot: Quiescence | None,
    partition: int,
    tick_offset: int,
) -> FlushDecision:
    """Whether a tick at `tick_offset` of `impacts` partition `partition` may flush a tenant quiet for
    `idle_for` seconds."""
    if idle_for < idle_after:
        return FlushDecision.WAIT
    if snapshot is not None and not snapshot.lagging and only_ticks_after(snapshot, partition, tick_offset):
        return FlushDecision.FLUSH
    if idle_for >= max_idle:
        return FlushDecision.FORCE
    return FlushDecision.WAIT
