"""Admission for workers: which queued job starts next (docs/architecture.md §4). Deterministic, no I/O,
no clock.

Rules, in the order they are applied:

1. Classes are tried highest first (emergency, high, normal, background); the first class with an
   admissible job wins, so an urgent job never queues behind a sweep, however long the sweep.
2. Capacity: ``total`` slots overall and at most ``per_class[c]`` running jobs of class *c*. Each class
   also has ``reserved[c]`` slots that lower classes may not take: a job of class *c* may start only if a
   slot stays free after holding back the *unused* reservations of every higher class. Running jobs are
   never pre-empted, so this hold-back is what guarantees an emergency job a slot as soon as it arrives.
3. Tenants: at most ``per_tenant[c]`` running jobs of class *c* per tenant, and within a class tenants
   take turns (round-robin: the tenant served least recently goes first, ties by arrival). Each tenant's
   own jobs start in arrival order (FIFO).

``pick_next`` only looks; ``admit`` picks and records the start. The queue and running sets are
mutable containers owned by one worker; determinism comes from the explicit sequence numbers.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import dataclass, field

from schemas.messages import JobCommand, PriorityClass

CLASSES_HIGH_FIRST: tuple[PriorityClass, ...] = ("emergency", "high", "normal", "background")


def _higher(cls: PriorityClass) -> tuple[PriorityClass, ...]:
    return CLASSES_HIGH_FIRST[: CLASSES_HIGH_FIRST.index(cls)]


@dataclass(frozen=True)
class Caps:
    total: int = 16
    per_class: Mapping[PriorityClass, int] = field(
        default_factory=lambda: {"emergency": 16, "high": 12, "normal": 8, "background": 6}
    )
    reserved: Mapping[PriorityClass, int] = field(
        default_factory=lambda: {"emergency": 4, "high": 2, "normal": 1, "background": 0}
    )
    per_tenant: Mapping[PriorityClass, int] = field(
        default_factory=lambda: {"emergency": 16, "high": 6, "normal": 4, "background": 3}
    )

    def __post_init__(self) -> None:
        if self.total < 1:
            raise ValueError("total must be >= 1")
        if sum(self.reserved.get(c, 0) for c in CLASSES_HIGH_FIRST) > self.total:
            raise ValueError("reservations exceed the total number of slots")


@dataclass
class QueueState:
    """Queued jobs: per class, per tenant FIFO queues of (arrival seq, job)."""

    queues: dict[PriorityClass, dict[str, deque[tuple[int, JobCommand]]]] = field(
        default_factory=lambda: {c: {} for c in CLASSES_HIGH_FIRST}
    )
    queued_ids: set[str] = field(default_factory=set)
    next_seq: int = 0
    # (class, tenant) → admission tick of its last start; drives the round-robin.
    last_served: dict[tuple[PriorityClass, str], int] = field(default_factory=dict)
    tick: int = 0

    def enqueue(self, job: JobCommand) -> bool:
        """Add a job; False when it is already queued (re-delivery)."""
        if job.job_id in self.queued_ids:
            return False
        self.queues[job.priority].setdefault(job.tenant, deque()).append((self.next_seq, job))
        self.queued_ids.add(job.job_id)
        self.next_seq += 1
        return True

    def remove(self, job_id: str) -> JobCommand | None:
        """Take a job out wherever it is (cancellation); linear, but cancellation is rare."""
        if job_id not in self.queued_ids:
            return None
        for tenants in self.queues.values():
            for tenant, q in tenants.items():
                for item in q:
                    if item[1].job_id == job_id:
                        q.remove(item)
                        if not q:
                            del tenants[tenant]
                        self.queued_ids.discard(job_id)
                        return item[1]
        return None

    def __len__(self) -> int:
        return len(self.queued_ids)

    def depth(self, cls: PriorityClass) -> int:
        return sum(len(q) for q in self.queues[cls].values())


@dataclass
class RunningState:
    jobs: dict[str, tuple[PriorityClass, str]] = field(default_factory=dict)
    by_class: Counter[PriorityClass] = field(default_factory=Counter)
    by_tenant: Counter[tuple[PriorityClass, str]] = field(default_factory=Counter)

    def start(self, job: JobCommand) -> None:
        if job.job_id in self.jobs:
            return
        self.jobs[job.job_id] = (job.priority, job.tenant)
        self.by_class[job.priority] += 1
        self.by_tenant[(job.priority, job.tenant)] += 1

    def finish(self, job_id: str) -> None:
        entry = self.jobs.pop(job_id, None)
        if entry is None:
            return
        self.by_class[entry[0]] -= 1
        self.by_tenant[entry] -= 1

    def __len__(self) -> int:
        return len(self.jobs)


def class_has_slot(cls: PriorityClass, running: RunningState, caps: Caps) -> bool:
    if running.by_class[cls] >= caps.per_class.get(cls, caps.total):
        return False
    held_back = sum(max(0, caps.reserved.get(h, 0) - running.by_class[h]) for h in _higher(cls))
    return len(running) + held_back < caps.total


def pick_next(queue: QueueState, running: RunningState, caps: Caps) -> JobCommand | None:
    """The job that should start now, or None when nothing may start. Does not change either state."""
    for cls in CLASSES_HIGH_FIRST:
        tenants = queue.queues[cls]
        if not tenants or not class_has_slot(cls, running, caps):
            continue
        tenant_cap = caps.per_tenant.get(cls, caps.total)
        best: tuple[int, int, JobCommand] | None = None
        for tenant, q in tenants.items():
            if not q or running.by_tenant[(cls, tenant)] >= tenant_cap:
                continue
            seq, job = q[0]
            rank = (queue.last_served.get((cls, tenant), -1), seq, job)
            if best is None or rank[:2] < best[:2]:
                best = rank
        if best is not None:
            return best[2]
    return None


def admit(queue: QueueState, running: RunningState, caps: Caps) -> JobCommand | None:
    """``pick_next`` and record it: dequeue, mark running, advance the tenant's round-robin turn."""
    job = pick_next(queue, running, caps)
    if job is None:
        return None
    tenants = queue.queues[job.priority]
    q = tenants[job.tenant]
    q.popleft()
    if not q:
        del tenants[job.tenant]
    queue.queued_ids.discard(job.job_id)
    queue.last_served[(job.priority, job.tenant)] = queue.tick
    queue.tick += 1
    running.start(job)
    return job
