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

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import timedelta
from enum import Enum

from schemas.messages import Impact, JobCommand, ReportSeen, schema_id_of
from streams.codec import from_epoch, pack, to_epoch, unpack
from streams.jobs import (
    DEFAULT_CONFIG,
    JobConfig,
    PendingJob,
    ReasonRow,
    decode_pending,
    decode_reasons,
    encode_pending,
    make_job,
    merge_impact,
    sorted_reasons,
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


def _assign(
    state: WindowState, impacts: Iterable[Impact], window: int, grace: int
) -> tuple[WindowState, list[int]]:
    """The clock after `impacts` and each impact's window start (the state's windows are kept as they are).

    The boundary advances even when no window was open below it, so later stragglers count as late. An
    impact whose window is below the boundary when it arrives goes to the first open window. Every window
    below the final boundary is closed, and none of them gets an impact after it closed, so closing them
    all at the end of the fold gives the same jobs, in the same order, as closing each when its boundary
    passed."""
    watermark, closed_before, late = state.watermark, state.closed_before, state.late
    starts: list[int] = []
    for impact in impacts:
        t = to_epoch(impact.event_time)
        start = window_start(t, window)
        if closed_before is not None and start < closed_before:
            start = closed_before
            late += 1
        starts.append(start)
        watermark = t if watermark is None else max(watermark, t)
        boundary = window_start(watermark - grace, window)
        if closed_before is None or boundary > closed_before:
            closed_before = boundary
    return WindowState(state.windows, watermark, closed_before, late), starts


def add_impacts(
    state: WindowState | None,
    impacts: Iterable[Impact],
    window: int = DEFAULT_WINDOW,
    grace: int = DEFAULT_GRACE,
    config: JobConfig = DEFAULT_CONFIG,
) -> tuple[WindowState, list[JobCommand]]:
    """Fold impacts in order; returns the new state and the jobs of the windows they close, in the order
    they close. The result equals folding them one at a time, but the state is copied once, not once per
    impact (a tenant stage folds a batch of hundreds into windows of hundreds of jobs).

    It reads only the windows the impacts land in and those that close: a state holding just those
    entries (the stream's split state, `load_split`) gives the same jobs."""
    state = state or WindowState()
    impacts = list(impacts)
    clock, starts = _assign(state, impacts, window, grace)
    windows = dict(state.windows)
    copied: set[int] = set()
    for start, impact in zip(starts, impacts, strict=True):
        if start not in copied:
            windows[start] = dict(windows.get(start, {}))
            copied.add(start)
        jobs = windows[start]
        key = (impact.tenant, impact.image_digest)
        jobs[key] = merge_impact(jobs.get(key), impact)
    merged = WindowState(windows, clock.watermark, state.closed_before, clock.late)
    if clock.closed_before is None:
        return merged, []
    closed, out = _close(merged, clock.closed_before, window, config)
    return WindowState(closed.windows, clock.watermark, clock.closed_before, clock.late), out


def flush_idle(
    state: WindowState | None, window: int = DEFAULT_WINDOW, config: JobConfig = DEFAULT_CONFIG
) -> tuple[WindowState, list[JobCommand]]:
    """Close every open window (a quiet stream's timer)."""
    if state is None:
        return WindowState(), []
    return _close(state, None, window, config)


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


# ------------------------------------------------------------------------------- the stream's split state
#
# A tenant's windows can hold thousands of pending jobs, each with hundreds of reasons (a 5,000-advisory
# re-sync in one window: tens of MB), far over a changelog record's limit; and folding a batch into them
# would re-encode all of it. So the stream keeps them split over keys of one table: under the tenant's key
# an index (the clock; the pending jobs of small windows inline, see INLINE_REASONS; for each other open
# window its images and how many chunks each has stored), and per (window, image) a run of chunks: every
# fold that changes a pending job appends one chunk with the job's fields and the reasons that fold added. A fold reads the last chunk of each job it merges into,
# all chunks of the jobs whose windows it closes (`entries_needed`, `load_entries`), and writes, in this
# order to the tenant's changelog partition: its new chunks, the deletes of the chunks of the entries the
# previous fold closed, then the index (`store_changes`). So a fold writes what it adds, one record per
# changed job, not what the windows hold.
#
# A crash part-way leaves chunks ahead of the index. The redelivered impacts are folded again from the
# index's counts: the chunk numbers are the same, so they overwrite what the crashed fold wrote, with the
# reasons of impacts that are all redelivered (a shorter redelivered batch leaves the rest to the next
# chunk). A chunk past the index's count is never read; if its window closes before that number is
# written again, it stays behind (one record per crash at most). The entries of windows a fold closes are
# deleted by the next fold, once the index that no longer lists them is written.

Entry = tuple[int, WindowKey]  # (window start, (tenant, digest))
_SEP = "\x1f"


@dataclass(frozen=True, slots=True)
class WindowIndex:
    """The tenant record of the split state."""

    open: dict[int, dict[WindowKey, int]] = field(default_factory=dict)  # start → job key → chunks stored
    watermark: int | None = None
    closed_before: int | None = None
    late: int = 0
    closed: tuple[tuple[Entry, int], ...] = ()  # the last fold's closed entries and chunk counts: to delete


@dataclass(frozen=True, slots=True)
class Needed:
    merge: list[Entry]  # entries the fold merges into: their fields (reasons are only added)
    close: list[Entry]  # entries of the windows it closes: whole, for their jobs


@dataclass(frozen=True, slots=True)
class Chunk:
    number: int
    pending: PendingJob  # the job's fields (its reasons are not stored from here)
    reasons: frozenset[ReasonRow]  # the reasons this chunk adds


@dataclass(frozen=True, slots=True)
class SplitFold:
    index: WindowIndex
    writes: dict[Entry, Chunk]  # to write before the deletes and the index
    deletes: tuple[tuple[Entry, int], ...]
    jobs: list[JobCommand]
    inline: dict[Entry, PendingJob] = field(default_factory=dict)  # stored in the index record


def chunk_key(key: str, entry: Entry, chunk: int) -> str:
    """The table key of one chunk of a pending job of the index at `key` (a tenant)."""
    start, (tenant, digest) = entry
    return f"{key}{_SEP}{start}{_SEP}{tenant}{_SEP}{digest}{_SEP}{chunk}"


def is_index_key(key: str) -> bool:
    return _SEP not in key


def all_entries(index: WindowIndex) -> Needed:
    """What a flush reads: every open entry, whole."""
    return Needed([], sorted((start, key) for start, keys in index.open.items() for key in keys))


def entries_needed(index: WindowIndex, impacts: list[Impact], window: int, grace: int) -> Needed:
    """The stored entries `add_impacts` reads: those the impacts merge into, and every entry of the windows
    they close (sorted)."""
    clock, starts = _assign(
        WindowState({}, index.watermark, index.closed_before, index.late), impacts, window, grace
    )
    boundary = clock.closed_before
    close: set[Entry] = set()
    if boundary is not None:
        for start, keys in index.open.items():
            if start < boundary:
                close.update((start, key) for key in keys)
    merge: set[Entry] = set()
    for start, impact in zip(starts, impacts, strict=True):
        entry = (start, (impact.tenant, impact.image_digest))
        if entry[1] in index.open.get(start, ()) and entry not in close:
            merge.add(entry)
    return Needed(sorted(merge), sorted(close))


# A window starts inline: its pending jobs live in the index record itself, rewritten by every fold, which
# is cheapest while they are few (a short window closes before it grows: one record per fold, nothing to
# delete). Once the inline jobs of a tenant hold more than this many reasons (~100 bytes each), their
# windows spill to chunks and stay chunked until they close, so the index stays far below a record's limit.
INLINE_REASONS = 2_000


def fold_split(
    index: WindowIndex,
    loaded: Mapping[Entry, PendingJob],
    step: Callable[[WindowState], tuple[WindowState, list[JobCommand]]],
    budget: int = INLINE_REASONS,
) -> SplitFold:
    """Run a window fold (`add_impacts`, `flush_idle`) over the loaded entries of a split state and say
    what to store. `loaded` holds every inline entry (those the index record carries) and what
    `entries_needed` (`all_entries` for a flush) names of the chunked windows: the entries to merge into,
    possibly without their stored reasons, and those of closing windows whole. A window not chunked yet
    stays inline unless the inline entries would hold more than `budget` reasons."""
    # Every open window is there, loaded or not, so a step that closes "all of them" sees them all.
    windows: dict[int, dict[WindowKey, PendingJob]] = {start: {} for start in index.open}
    for (start, key), pending in loaded.items():
        windows.setdefault(start, {})[key] = pending
    after, jobs = step(WindowState(windows, index.watermark, index.closed_before, index.late))
    boundary = after.closed_before
    closing = [s for s in index.open if boundary is not None and s < boundary]
    for start in closing:
        missing = index.open[start].keys() - windows.get(start, {}).keys()
        if missing:
            raise ValueError(f"window {start} closed without {len(missing)} of its entries loaded")
    inline_starts = [s for s in after.windows if s not in index.open]
    spill = sum(len(p.reasons) + 1 for s in inline_starts for p in after.windows[s].values()) > budget
    kept: dict[Entry, PendingJob] = {}
    writes: dict[Entry, Chunk] = {}
    open_ = {s: keys for s, keys in index.open.items() if s not in closing}
    for start, pendings in after.windows.items():
        if start not in index.open:
            if not spill:
                kept.update(((start, key), pending) for key, pending in pendings.items())
                continue
            open_[start] = dict.fromkeys(pendings, 1)  # spilled: each job whole, as its chunk 0
            writes.update(((start, key), Chunk(0, p, p.reasons)) for key, p in pendings.items())
            continue
        before = windows.get(start, {})
        counts: dict[WindowKey, int] | None = None
        for key, pending in pendings.items():
            prior = before.get(key)
            if prior is pending:
                continue
            if counts is None:
                counts = open_[start] = dict(open_.get(start, {}))
            number = counts.get(key, 0)
            added = pending.reasons if prior is None else pending.reasons - prior.reasons
            writes[(start, key)] = Chunk(number, pending, added)
            counts[key] = number + 1
    closed = tuple(sorted(((s, k), n) for s in closing for k, n in index.open[s].items()))
    return SplitFold(
        WindowIndex(open_, after.watermark, after.closed_before, after.late, closed),
        writes,
        index.closed,
        jobs,
        kept,
    )


def encode_index(index: WindowIndex, inline: Mapping[Entry, PendingJob] | None = None) -> bytes:
    by_start: dict[int, list[PendingJob]] = {}
    for (start, _key), pending in sorted((inline or {}).items()):
        by_start.setdefault(start, []).append(pending)
    return pack(
        {
            "v": 2,
            "open": [
                [start, sorted([t, d, n] for (t, d), n in keys.items())]
                for start, keys in sorted(index.open.items())
            ],
            "inline": [[start, [encode_pending(p) for p in jobs]] for start, jobs in by_start.items()],
            "wm": index.watermark,
            "cb": index.closed_before,
            "late": index.late,
            "closed": [[start, tenant, digest, n] for (start, (tenant, digest)), n in index.closed],
        }
    )


def decode_index(data: bytes) -> tuple[WindowIndex, dict[Entry, PendingJob]]:
    """The index, and the entries it carries inline (a whole state written before the split is read as an
    index whose windows are all inline)."""
    header, _ = unpack(data)
    if "w" in header:
        state = decode_windows(data)
        carried = {(s, k): p for s, jobs in state.windows.items() for k, p in jobs.items()}
        return WindowIndex({}, state.watermark, state.closed_before, state.late), carried
    index = WindowIndex(
        {int(start): {(str(t), str(d)): int(n) for t, d, n in keys} for start, keys in header["open"]},
        header["wm"],
        header["cb"],
        int(header["late"]),
        tuple(((int(s), (str(t), str(d))), int(n)) for s, t, d, n in header["closed"]),
    )
    inline: dict[Entry, PendingJob] = {}
    for start, rows in header.get("inline", []):
        for row in rows:
            pending = decode_pending(row)
            inline[(int(start), (pending.tenant, pending.digest))] = pending
    return index, inline


def encode_chunk(chunk: Chunk) -> bytes:
    fields = encode_pending(replace(chunk.pending, reasons=frozenset()))
    return pack({"p": fields, "r": sorted_reasons(chunk.reasons)})


def decode_chunk(data: bytes) -> tuple[PendingJob, frozenset[ReasonRow]]:
    """The job's fields as of the chunk (without reasons) and the reasons the chunk adds."""
    fields, _ = unpack(data)
    return decode_pending(fields["p"]), decode_reasons(fields["r"])


Reader = Callable[[str], bytes | None]


def load_entries(
    read: Reader,
    key: str,
    index: WindowIndex,
    needed: Needed,
    inline: Mapping[Entry, PendingJob],
    missing: list[str] | None = None,
) -> dict[Entry, PendingJob]:
    """The entries a fold needs, from the table (`read`: the shell's, or a dict's `get` in tests): the
    fields of those it merges into (their last chunk), the whole of those it closes (all their chunks),
    and every inline one.

    A chunk the index counts but the table lacks (a lost table write) adds nothing, and its name is
    appended to `missing` for the shell to report. Refusing it instead stopped every later fold of the
    tenant once the chunk's window had to close, so all its impacts went to the dead-letter topic. Its job
    keeps the reasons of its other chunks, and the fields of its latest chunk that is there (else the
    defaults: the image is still re-evaluated)."""
    lost = missing if missing is not None else []

    def chunk(entry: Entry, number: int) -> tuple[PendingJob, frozenset[ReasonRow]] | None:
        name = chunk_key(key, entry, number)
        data = read(name)
        if data is None:
            lost.append(name)
            return None
        return decode_chunk(data)

    loaded: dict[Entry, PendingJob] = dict(inline)  # all of them: the fold stores them again
    for entry in needed.merge:
        if entry not in inline:
            fields = None
            for number in reversed(range(index.open[entry[0]][entry[1]])):  # the last one, unless lost
                if (found := chunk(entry, number)) is not None:
                    fields = found[0]
                    break
            loaded[entry] = fields or PendingJob(*entry[1])
    for entry in needed.close:
        if entry not in inline:
            rows: set[ReasonRow] = set()
            fields = None
            for number in range(index.open[entry[0]][entry[1]]):
                if (found := chunk(entry, number)) is not None:
                    fields, added = found
                    rows.update(added)
            loaded[entry] = replace(fields or PendingJob(*entry[1]), reasons=frozenset(rows))
    return loaded


def store_changes(key: str, result: SplitFold) -> list[tuple[str, bytes | None]]:
    """The table writes of a fold, in the order they must reach the changelog (None deletes): the new
    chunks, the deletes of the chunks of the entries the previous fold closed, the index last."""
    writes: list[tuple[str, bytes | None]] = [
        (chunk_key(key, entry, chunk.number), encode_chunk(chunk)) for entry, chunk in result.writes.items()
    ]
    for entry, count in result.deletes:
        writes += [(chunk_key(key, entry, number), None) for number in range(count)]
    writes.append((key, encode_index(result.index, result.inline)))
    return writes


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
#   it and has been folded. "Nothing but ticks", not "nothing": ticks arrive every `idle_flush / 4` s, and
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
    committed: Mapping[tuple[str, int], int | None],
    ends: Mapping[tuple[str, int], int],
    inert_from: Mapping[tuple[str, int], int] | None = None,
) -> tuple[tuple[str, int], ...]:
    """The partitions whose committed offset is behind their end offset (sorted). No committed offset
    (None or Kafka's -1) counts as 0: an empty partition never committed is drained. `inert_from` names,
    per partition, an offset from which it holds only records that cannot lead to an impact up to its end
    (`cannot_cause_impact`): a partition whose uncommitted records all lie past it does not lag."""
    inert = inert_from or {}
    lagging = []
    for tp, end in ends.items():
        done = committed_offset(committed, tp)
        if end > done and inert.get(tp, end) > done:
            lagging.append(tp)
    return tuple(sorted(lagging))


def committed_offset(committed: Mapping[tuple[str, int], int | None], tp: tuple[str, int]) -> int:
    """Where a partition's committed offset stands: none (None, or Kafka's -1) is 0."""
    return max(committed.get(tp) or 0, 0)


# Records of a topic upstream of `impacts` that the tenant stage folds without any impact: a completed job's
# ReportSeen (agents/schedule_stage.py re-keys each result onto `catalog-updates` for the schedules). Jobs
# complete while later windows wait for their idle flush, and counting these as upstream lag held that
# flush until every earlier job had finished (the end-to-end section's window hop: 3.3 to 7 s with a 2 s
# idle flush).
INERT_SCHEMAS = frozenset({schema_id_of(ReportSeen)})


def cannot_cause_impact(schema: object) -> bool:
    return schema in INERT_SCHEMAS


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
