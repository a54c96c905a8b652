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

4. Simulations (``streams.simulation.is_simulation``) have a lane of their own: ``simulation`` slots on top
   of ``total``, at most ``simulation_per_tenant`` per tenant, tenants in turn. A simulation job never holds
   a live slot and is never counted by the live rules, so the live admissions are the same whether or not
   simulations are queued or running (tests/unit/test_fairness.py proves it with hypothesis): a simulation
   never delays live work, it only runs when its own slots are free.

``pick_next`` only looks; ``admit`` picks and records the start. The queue and running sets are
mutable containers owned by one worker; determinism comes from the explicit sequence numbers.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from schemas.messages import JobCommand, PriorityClass
from streams.simulation import is_simulation

CLASSES_HIGH_FIRST: tuple[PriorityClass, ...] = ("emergency", "high", "normal", "background")
SIMULATION: Literal["simulation"] = "simulation"
Lane = PriorityClass | Literal["simulation"]
LANES: tuple[Lane, ...] = (*CLASSES_HIGH_FIRST, SIMULATION)


def lane_of(job: JobCommand) -> Lane:
    return SIMULATION if is_simulation(job) else job.priority


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
    simulation: int = 2  # slots of the simulation lane, on top of ``total``
    simulation_per_tenant: int = 1

    def __post_init__(self) -> None:
        if self.total < 1:
            raise ValueError("total must be >= 1")
        if sum(self.reserved.get(c, 0) for c in CLASSES_HIGH_FIRST) > self.total:
            raise ValueError("reservations exceed the total number of slots")


@dataclass
class QueueState:
    """Queued jobs: per class, per tenant FIFO queues of (arrival seq, job)."""

    queues: dict[Lane, dict[str, deque[tuple[int, JobCommand]]]] = field(
        default_factory=lambda: {c: {} for c in LANES}
    )
    queued_ids: set[str] = field(default_factory=set)
    next_seq: int = 0
    # (class, tenant) → admission tick of its last start; drives the round-robin.
    last_served: dict[tuple[Lane, str], int] = field(default_factory=dict)
    tick: int = 0

    def enqueue(self, job: JobCommand) -> bool:
        """Add a job; False when it is already queued (re-delivery)."""
        if job.job_id in self.queued_ids:
            return False
        self.queues[lane_of(job)].setdefault(job.tenant, deque()).append((self.next_seq, job))
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

    def depth(self, cls: Lane) -> int:
        return sum(len(q) for q in self.queues[cls].values())


@dataclass
class RunningState:
    jobs: dict[str, tuple[Lane, str]] = field(default_factory=dict)
    by_class: Counter[Lane] = field(default_factory=Counter)
    by_tenant: Counter[tuple[Lane, str]] = field(default_factory=Counter)

    def start(self, job: JobCommand) -> None:
        if job.job_id in self.jobs:
            return
        lane = lane_of(job)
        self.jobs[job.job_id] = (lane, job.tenant)
        self.by_class[lane] += 1
        self.by_tenant[(lane, job.tenant)] += 1

    def finish(self, job_id: str) -> None:
        entry = self.jobs.pop(job_id, None)
        if entry is None:
            return
        self.by_class[entry[0]] -= 1
        self.by_tenant[entry] -= 1

    def __len__(self) -> int:
        return len(self.jobs)

    def live(self) -> int:
        """Running jobs that hold live slots (every lane but the simulation one)."""
        return len(self.jobs) - self.by_class[SIMULATION]


def class_has_slot(cls: PriorityClass, running: RunningState, caps: Caps) -> bool:
    if running.by_class[cls] >= caps.per_class.get(cls, caps.total):
        return False
    held_back = sum(max(0, caps.reserved.get(h, 0) - running.by_class[h]) for h in _higher(cls))
    return running.live() + held_back < caps.total


def _next_in(queue: QueueState, running: RunningState, lane: Lane, tenant_cap: int) -> JobCommand | None:
    """The lane's next job: tenants in turn (least recently served first), each tenant's jobs FIFO."""
    best: tuple[int, int, JobCommand] | None = None
    for tenant, q in queue.queues[lane].items():
        if not q or running.by_tenant[(lane, tenant)] >= tenant_cap:
            continue
        seq, job = q[0]
        rank = (queue.last_served.get((lane, tenant), -1), seq, job)
        if best is None or rank[:2] < best[:2]:
            best = rank
    return None if best is None else best[2]


def pick_next(queue: QueueState, running: RunningState, caps: Caps) -> JobCommand | None:
    """The job that should start now, or None when nothing may start. Does not change either state."""
    for cls in CLASSES_HIGH_FIRST:
        if not queue.queues[cls] or not class_has_slot(cls, running, caps):
            continue
        job = _next_in(queue, running, cls, caps.per_tenant.get(cls, caps.total))
        if job is not None:
            return job
    if queue.queues[SIMULATION] and running.by_class[SIMULATION] < caps.simulation:
        return _next_in(queue, running, SIMULATION, caps.simulation_per_tenant)
    return None


def admit(queue: QueueState, running: RunningState, caps: Caps) -> JobCommand | None:
    """``pick_next`` and record it: dequeue, mark running, advance the tenant's round-robin turn."""
    job = pick_next(queue, running, caps)
    if job is None:
        return None
    lane = lane_of(job)
    tenants = queue.queues[lane]
    q = tenants[job.tenant]
    q.popleft()
    if not q:
        del tenants[job.tenant]
    queue.queued_ids.discard(job.job_id)
    queue.last_served[(lane, job.tenant)] = queue.tick
    queue.tick += 1
    running.start(job)
    return job
