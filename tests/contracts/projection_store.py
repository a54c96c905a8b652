"""The ProjectionStore contract, as an abstract suite (the eventsourcing library's way): a store passes
when a subclass that says how to make one passes every test here. tests/unit/test_projection_store_memory.py
runs it against the in-memory twin, tests/integration/test_projection_contract.py against MongoDB (FerretDB).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from projections.fold import COLLECTIONS, JOBS, WINDOWS, Position, State, apply_all, fold
from projections.store import ProjectionStore, Projector, page_of, rebuild
from schemas.messages import (
    AdvisoryDelta,
    Component,
    DeadLetter,
    ImageRemoved,
    Impact,
    Inventory,
    JobCommand,
    JobInputs,
    JobResult,
    Reason,
    RunEvent,
    RuntimeEvent,
)

T0 = datetime(2025, 5, 1, 8, 0, 0, tzinfo=UTC)
W = 30
GROUP = "projector"

Item = tuple[object, Position]


# ---------------------------------------------------------------- a small log


def _digest(i: int) -> str:
    return "sha256:" + f"{i:02x}" * 32


def _command(job: int) -> JobCommand:
    start = T0 + timedelta(seconds=W * (job % 4))
    return JobCommand(
        job_id=f"job-{job:03d}",
        run_id=f"run-{job % 4}",
        tenant=f"tenant-{job % 2}",
        image_digest=_digest(job % 6),
        kind="reevaluate",
        priority=("emergency", "high", "normal")[job % 3],
        window_start=start,
        window_end=start + timedelta(seconds=W),
        deadline=start + timedelta(hours=4),
        reasons=[Reason(source="advisory", id=f"GHSA-{job}")],
        inputs=JobInputs(policy_revision=1),
    )


def _result(job: int, failed: bool) -> JobResult:
    cmd = _command(job)
    return JobResult(
        job_id=cmd.job_id,
        run_id=cmd.run_id,
        tenant=cmd.tenant,
        image_digest=cmd.image_digest,
        priority=cmd.priority,
        status="failed" if failed else "completed",
        finished_at=T0 + timedelta(minutes=job),
        verdict="unknown" if failed else ("fail" if job % 2 else "pass"),
    )


def build_log() -> list[Item]:
    """Jobs, results, run events, impacts, dead letters and advisories over several partitions with gaps."""
    rng = random.Random(7)
    produced: list[tuple[str, int, object]] = []
    for job in range(24):
        cmd = _command(job)
        produced.append(("jobs", job % 6 % 3, cmd))
        produced.append(("job-results", job % 6 % 2, _result(job, failed=job % 5 == 0)))
        if job % 5 == 0:
            produced.append(("job-results", job % 6 % 2, _result(job, failed=False)))
    for run in range(4):
        for n, state in enumerate(["queued", "running", "completed"]):
            event = RunEvent(
                run_id=f"run-{run}", tenant=f"tenant-{run % 2}", state=state, at=T0 + timedelta(seconds=n)
            )
            produced.append(("run-events", run % 2, event))
    for i in range(10):
        impact = Impact(
            tenant=f"tenant-{i % 2}",
            image_digest=_digest(i % 6),
            event_time=T0 + timedelta(seconds=11 * i),
            reasons=[Reason(source="vex", id=f"stmt-{i}")],
        )
        produced.append(("impacts", i % 2, impact))
        dead = DeadLetter(
            source_topic="advisories", partition=i % 3, offset=100 + i, reason="decode", error="x", at=T0
        )
        produced.append(("deadletter", 0, dead))
        produced.append(("advisories", i % 3, AdvisoryDelta(id=f"GHSA-{i}", modified=T0 + timedelta(days=i))))
    # Image metadata (dotted label keys, empty lists), a tombstone, and runtime sites (dotted cluster names).
    for i in range(8):
        tenant, image = f"tenant-{i % 2}", _digest(i % 6)
        inventory = Inventory(
            tenant=tenant,
            image_digest=image,
            repository=f"registry.example/app-{i % 3}",
            tags=[f"v{i}"] if i % 2 else [],
            namespaces=["prod", "dev"] if i % 3 else [],
            labels={"app.kubernetes.io/name": f"app-{i}", "$team": "a.b"} if i % 2 else {},
            components=[Component(purl=f"pkg:npm/x@{i}", package="npm/x", version=str(i))],
            observed_at=T0 + timedelta(minutes=i),
        )
        produced.append(("inventory", i % 3, inventory))
        if i % 4 == 3:
            produced.append(("inventory", i % 3, ImageRemoved(tenant=tenant, image_digest=image)))
        site = RuntimeEvent(
            tenant=tenant,
            image_digest=image,
            cluster=f"eu.{i % 2}",
            namespace="prod",
            state="running" if i % 3 else "stopped",
            observed_at=T0 + timedelta(minutes=i),
        )
        produced.append(("runtime", i % 2, site))
    offsets: dict[tuple[str, int], int] = {}
    log: list[Item] = []
    for topic, partition, message in produced:
        offset = offsets.get((topic, partition), 0) + rng.randint(0, 3)  # gaps, as after compaction
        offsets[(topic, partition)] = offset + 1
        log.append((message, Position(topic, partition, offset)))
    return log


def interleave(log: list[Item], seed: int) -> list[Item]:
    """Another valid delivery order: each partition in order, partitions mixed at random."""
    rng = random.Random(seed)
    queues: dict[tuple[str, int], list[Item]] = {}
    for item in log:
        queues.setdefault((item[1].topic, item[1].partition), []).append(item)
    out: list[Item] = []
    while any(queues.values()):
        tp = rng.choice(sorted(tp for tp, q in queues.items() if q))
        out.append(queues[tp].pop(0))
    return out


def batches(items: list[Item], size: int) -> Iterator[list[Item]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def reference(log: list[Item]) -> State:
    ordered = sorted({pos: msg for msg, pos in log}.items())
    state = apply_all({}, [u for pos, msg in ordered for u in fold(msg, pos, window_seconds=W)])
    return {name: state.get(name, {}) for name in COLLECTIONS}


def snapshot(store: ProjectionStore) -> State:
    return {name: {doc["_id"]: doc for doc in store.dump(name)} for name in COLLECTIONS}


def final_checkpoints(log: list[Item]) -> dict[tuple[str, int], int]:
    out: dict[tuple[str, int], int] = {}
    for _, pos in log:
        out[(pos.topic, pos.partition)] = max(out.get((pos.topic, pos.partition), -1), pos.offset)
    return out


class Crash(RuntimeError):
    pass


class CrashBeforeCheckpoint:
    """Wraps a store: writes the documents of the first batch, then 'dies' before the checkpoint."""

    def __init__(self, inner: ProjectionStore) -> None:
        self.inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def apply_batch(self, updates: Any, checkpoints: Any) -> None:
        self.inner.apply_documents(updates)
        raise Crash("killed between the document write and the checkpoint write")


# ---------------------------------------------------------------- the contract


class ProjectionStoreContract:
    """Subclass as ``Test...`` and implement ``make_store``; every store made is empty."""

    def make_store(self, prefix: str) -> ProjectionStore:
        raise NotImplementedError

    def check_switch(self, live: ProjectionStore, rebuilt: ProjectionStore, log: list[Item]) -> None:
        """After a rebuild into ``rebuilt``: what a store with an active-projection pointer adds."""

    def test_live_projection_equals_reference(self) -> None:
        log = build_log()
        store = self.make_store("")
        projector = Projector(store, GROUP, window_seconds=W)
        for batch in batches(interleave(log, 1), 17):
            projector.process(batch)
        assert snapshot(store) == reference(log)
        assert store.get_checkpoints(GROUP) == final_checkpoints(log)
        assert projector.seek_position("jobs", 0) == final_checkpoints(log)[("jobs", 0)] + 1

    def test_duplicate_delivery_changes_nothing(self) -> None:
        log = build_log()
        store = self.make_store("")
        projector = Projector(store, GROUP, window_seconds=W)
        for batch in batches(log, 25):
            projector.process(batch)
        before = snapshot(store)
        # Same batches again, through a restarted projector (skips by checkpoint) ...
        again = Projector(store, GROUP, window_seconds=W)
        stats = [again.process(batch) for batch in batches(log, 25)]
        assert all(s.skipped == s.messages for s in stats)
        assert snapshot(store) == before
        # ... and straight into the store, bypassing checkpoints: the document guard alone must hold.
        for batch in batches(log, 25):
            store.apply_documents([u for msg, pos in batch for u in fold(msg, pos, window_seconds=W)])
        assert snapshot(store) == before

    def test_out_of_order_across_partitions(self) -> None:
        log = build_log()
        results = []
        for seed, prefix in [(2, "a_"), (3, "b_")]:
            store = self.make_store(prefix)
            projector = Projector(store, GROUP, window_seconds=W)
            for batch in batches(interleave(log, seed), 9):
                projector.process(batch)
            results.append(snapshot(store))
        assert results[0] == results[1] == reference(log)
        # A job whose result arrived before its command still ends completed with its planning fields.
        job = results[0][JOBS]["job-001"]
        assert job["status"] == "completed"
        assert job["window_start"] == "2025-05-01T08:00:30Z"

    def test_crash_between_documents_and_checkpoint(self) -> None:
        log = build_log()
        store = self.make_store("")
        order = interleave(log, 4)
        first, rest = order[:40], order[40:]
        with pytest.raises(Crash):
            Projector(CrashBeforeCheckpoint(store), GROUP, window_seconds=W).process(first)  # type: ignore[arg-type]
        assert store.get_checkpoints(GROUP) == {}
        assert snapshot(store) != reference([])  # the documents did land
        # Restart: nothing was checkpointed, so the whole log is redelivered from the start.
        projector = Projector(store, GROUP, window_seconds=W)
        for batch in batches(first + rest, 13):
            projector.process(batch)
        assert snapshot(store) == reference(log)
        assert store.get_checkpoints(GROUP) == final_checkpoints(log)

    def test_rebuild_from_zero_equals_live(self) -> None:
        log = build_log()
        live = self.make_store("")
        projector = Projector(live, GROUP, window_seconds=W)
        order = interleave(log, 5)
        for batch in batches(order[:30] + order[:50] + order[20:], 11):  # with redeliveries
            projector.process(batch)
        rebuilt = self.make_store("rb1_")
        assert rebuild(log, rebuilt, GROUP, batch_size=8, window_seconds=W) == len(log)
        assert snapshot(rebuilt) == snapshot(live) == reference(log)
        assert rebuilt.get_checkpoints(GROUP) == live.get_checkpoints(GROUP)
        self.check_switch(live, rebuilt, log)

    def test_pagination_is_deterministic(self) -> None:
        log = build_log()
        store = self.make_store("")
        projector = Projector(store, GROUP, window_seconds=W)
        for batch in batches(log, 50):
            projector.process(batch)
        expected_state = reference(log)
        middle = sorted(d["window_start"] for d in expected_state[JOBS].values())[
            len(expected_state[JOBS]) // 2
        ]
        cases: list[tuple[str, dict[str, Any] | None, str, bool]] = [
            (JOBS, {"tenant": "tenant-1"}, "_id", False),
            (JOBS, {"tenant": "tenant-0"}, "window_start", False),
            (JOBS, {"status": {"$in": ["completed", "failed"]}}, "priority", False),
            (WINDOWS, None, "window_start", False),
            ("runs", {"tenant": "tenant-0", "state": "completed"}, "updated_at", False),
            # newest first, and the operators the runs console filters with (issue 19)
            (JOBS, {"tenant": "tenant-0"}, "window_start", True),
            (JOBS, {"tenant": "tenant-1"}, "_id", True),
            (JOBS, {"window_start": {"$gte": middle}, "status": {"$nin": ["queued"]}}, "window_start", True),
            (JOBS, {"window_start": {"$lt": middle}, "status": {"$ne": "queued"}}, "_id", False),
            ("runs", {"tenant": "tenant-0", "retry_of": None}, "created_at", True),
        ]
        for collection, where, sort, descending in cases:
            expected = page_of(expected_state[collection].values(), where, sort, None, 1000, descending).items
            assert expected, (collection, where, sort)
            for size in (1, 4, 1000):
                seen: list[dict[str, Any]] = []
                after = None
                while True:
                    page = store.find(
                        collection, where, sort=sort, after=after, limit=size, descending=descending
                    )
                    seen += page.items
                    if page.next_after is None:
                        break
                    after = page.next_after
                assert [d["_id"] for d in seen] == [d["_id"] for d in expected], (collection, sort, size)
                assert seen == expected
        assert store.get(JOBS, "job-003") == expected_state[JOBS]["job-003"]
        assert store.get(JOBS, "nope") is None
        with pytest.raises(ValueError, match="operator"):
            store.find(JOBS, {"$where": "1"})
