"""Shared by the determinism, crash, rebuild and scale-out tests: the extended scripted scenario (the
phases of test_pipeline plus a policy revision and a runtime event), deployments that sign with one key,
and snapshots of topics and read models that can be compared across deployments."""

from __future__ import annotations

import asyncio
import json
import shutil
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import orjson
from pydantic import BaseModel

from schemas.codec import encode
from schemas.messages import PolicyChange, PolicyRules, RuntimeEvent, Selector
from signing.keys import generate_keypair
from tests.integration.kit import Worker, end_offsets, produce
from tests.integration.pipeline_kit import CERN_A, Pipeline, advisories, inventories, later, vex_minimist

BROKEN = (b"broken", b'{"schema": "scheduler.advisory@1", "id": 7')
PROJECTED_COLLECTIONS = ("runs", "jobs", "images", "windows", "cursors", "deadletters")


def policy_r2(at: datetime) -> PolicyChange:
    """A policy revision for acme (like ops/demo/feed/policy): fail only on critical or KEV."""
    return PolicyChange(
        tenant="acme",
        policy_id="baseline",
        revision=2,
        activated_at=at,
        selector=Selector(all=True),
        rules=PolicyRules(severity_threshold="critical", fail_on_kev=True, allow_ids=[]),
    )


def runtime_running(at: datetime) -> RuntimeEvent:
    """CERN_A starts running in a cluster (like ops/demo/feed/runtime): priority is raised."""
    return RuntimeEvent(
        tenant="acme",
        image_digest=CERN_A,
        cluster="prod-eu-1",
        namespace="accelerator",
        state="running",
        observed_at=at,
    )


async def publish_to(pipe: Pipeline, logical: str, key: bytes, message: BaseModel) -> None:
    await produce(pipe.bootstrap, f"{pipe.prefix}{logical}", [(key, encode(message))])


Hook = Callable[[str], Awaitable[None]]


async def _noop(_phase: str) -> None:
    return None


# Distinct jobs after each phase: 3 first evaluations; the advisories touch the two CERN images; so does the
# VEX statement; the policy revision re-evaluates acme's two images; the runtime event one image.
JOBS_AFTER = {"inventories": 3, "advisories": 5, "vex": 7, "policy": 9, "runtime": 10}


async def settle_phase(pipe: Pipeline, phase: str, timeout: float = 240.0) -> None:
    """Wait until the phase's jobs exist, then until everything has settled. Waiting for the count first
    matters: a worker that is still starting (or restarting after a crash) emits nothing, and a plain quiet
    period would then pass before the phase was processed, letting the next phase's inputs into the
    knowledge its jobs are evaluated against."""
    deadline = time.monotonic() + timeout
    while True:
        pipe.alive()
        jobs = await pipe.records("jobs", timeout=30.0)
        if len({orjson.loads(r.value)["job_id"] for r in jobs}) >= JOBS_AFTER[phase]:
            break
        assert time.monotonic() < deadline, f"phase {phase}: only {len(jobs)} job record(s)"
        await asyncio.sleep(1.0)
    await pipe.settle(timeout=max(30.0, deadline - time.monotonic()))


async def extended_scenario(pipe: Pipeline, during: Hook = _noop, *, workers: int = 1) -> None:
    """inventories → advisories → a corrupt record + VEX → policy revision → runtime event, each phase
    settled before the next. ``during(phase)`` runs right after a phase is published (crash points)."""
    await pipe.start(workers=workers)
    await pipe.publish(inventories())
    await during("inventories")
    await settle_phase(pipe, "inventories")
    await pipe.publish(advisories(later(60)))
    await during("advisories")
    await settle_phase(pipe, "advisories")
    await produce(pipe.bootstrap, f"{pipe.prefix}advisories", [BROKEN])
    await pipe.publish(vex_minimist(later(120)))
    await during("vex")
    await settle_phase(pipe, "vex")
    await publish_to(pipe, "policy", b"acme", policy_r2(later(180)))
    await during("policy")
    await settle_phase(pipe, "policy")
    await publish_to(pipe, "runtime", CERN_A.encode(), runtime_running(later(240)))
    await during("runtime")
    await settle_phase(pipe, "runtime")


def share_key(*pipes: Pipeline) -> None:
    """Every deployment signs with the first one's key (copied), so signatures can match byte for byte."""
    first = pipes[0].home / "keys"
    first.mkdir(parents=True, exist_ok=True)
    if not (first / "test.key").exists():
        generate_keypair(first / "test.key", first / "test.pub.json")
    for pipe in pipes[1:]:
        target = pipe.home / "keys"
        target.mkdir(parents=True, exist_ok=True)
        for name in ("test.key", "test.pub.json"):
            shutil.copy2(first / name, target / name)


Partitions = dict[int, list[tuple[bytes | None, bytes | None]]]


async def topic_snapshot(pipe: Pipeline, logical: str) -> Partitions:
    """Records per partition as (key, value), in offset order."""
    # Everything up to the end offsets, however slow the broker is: a plain time limit returned an empty
    # snapshot on a loaded machine (test_crash: "set() == {...}").
    ends = await end_offsets(pipe.bootstrap, [pipe.prefix + logical])
    out: Partitions = defaultdict(list)
    for record in await pipe.records(logical, expect=sum(ends.values()), timeout=60.0):
        out[record.partition].append((record.key, record.value))
    return dict(out)


def per_key(snapshot: Partitions) -> dict[tuple[int, bytes | None], list[bytes | None]]:
    """Each key's values in offset order, per partition: the order Kafka does guarantee."""
    out: dict[tuple[int, bytes | None], list[bytes | None]] = defaultdict(list)
    for partition, records in snapshot.items():
        for key, value in records:
            out[(partition, key)].append(value)
    return dict(out)


def multiset(snapshot: Partitions) -> dict[int, list[tuple[bytes | None, bytes | None]]]:
    return {p: sorted(records, key=lambda r: (r[0] or b"", r[1] or b"")) for p, records in snapshot.items()}


def read_models(pipe: Pipeline, collection_prefix: str = "", *, keep_pos: bool = False) -> dict[str, Any]:
    """Every projected collection's documents ordered by _id, with this deployment's topic prefix
    replaced by a placeholder (so two deployments compare); `_pos` dropped unless `keep_pos`."""
    db = pipe.mongo()
    dumped: dict[str, Any] = {}
    for name in PROJECTED_COLLECTIONS:
        docs = list(db[collection_prefix + name].find({}, sort=[("_id", 1)]))
        if not keep_pos:
            docs = [{k: v for k, v in d.items() if k != "_pos"} for d in docs]
            if name == "deadletters":
                # A dead letter's `at` is the bad record's Kafka timestamp: part of the input log, which two
                # deployments fed at different wall-clock moments do not share.
                docs = [{k: v for k, v in d.items() if k != "at"} for d in docs]
        dumped[name] = docs
    text = json.dumps(dumped, sort_keys=True, default=str)
    # Topic names appear raw, and field-key encoded in `partitions` maps (projections.fold.field_key).
    for dot in (".", "%2E", "%252E"):
        text = text.replace(pipe.prefix.replace(".", dot), f"<prefix>{dot}")
    result: dict[str, Any] = json.loads(text)
    return result


def model_diff(a: dict[str, Any], b: dict[str, Any]) -> list[str]:
    """Readable differences between two `read_models` results (for assertion messages)."""
    out: list[str] = []
    for name in sorted(set(a) | set(b)):
        left = {d["_id"]: d for d in a.get(name, [])}
        right = {d["_id"]: d for d in b.get(name, [])}
        for doc_id in sorted(set(left) | set(right)):
            if left.get(doc_id) != right.get(doc_id):
                out.append(f"{name}/{doc_id}:\n  {left.get(doc_id)}\n  {right.get(doc_id)}")
    return out


def distinct(snapshot: dict[int, list[tuple[bytes | None, bytes | None]]]) -> set[tuple[Any, Any]]:
    """A topic snapshot's records regardless of partition and order."""
    return {record for records in snapshot.values() for record in records}


# What each agent consumes (agents/*_stage.py `pipe.source(...)`).
AGENT_INPUTS = {
    "inventory": ("inventory",),
    "advisories": ("advisories",),
    "vex": ("vex",),
    "runtime": ("runtime",),
    "index": ("index-updates", "impact-requests"),
    "tenant": ("catalog-updates", "impacts", "policy", "rechecks"),
    "jobs": ("jobs", "job-attempts", "job-results"),
    "runs": ("run-inputs",),
    "signer": ("job-results", "run-events", "sla-breaches"),
}


def handled(workers: list[Worker]) -> dict[tuple[str, str, int], set[int]]:
    """(agent, topic, partition) → offsets handled, from the workers' `stella.handled` trace lines
    (every life of every worker: a restarted worker appends to its log)."""
    out: dict[tuple[str, str, int], set[int]] = defaultdict(set)
    for worker in workers:
        for line in worker.output().splitlines():
            if '"stella.handled"' not in line:
                continue
            doc = json.loads(line)
            out[(doc["agent"], doc["topic"], int(doc["partition"]))].add(int(doc["offset"]))
    return dict(out)


async def skipped_offsets(pipe: Pipeline, workers: list[Worker], wait: float = 60.0) -> list[str]:
    """Input records no agent handled: for every agent and every partition of its inputs, each offset
    from 0 to the end must appear in the trace (the regression check of issue 17: a new owner must not
    start past records that were fetched and dropped during a rebalance). The end offsets are taken
    first; records written just before (the leader's idle-flush ticks never stop) get `wait` seconds to be
    handled."""
    ends = await end_offsets(
        pipe.bootstrap, sorted({pipe.prefix + t for ts in AGENT_INPUTS.values() for t in ts})
    )
    # Idle-flush ticks (key b"tick") are wall-clock driven and superseded by the next one 1.5 s later; a
    # tick is exempt (one was seen skipped by an owner that kept its partition through a rebalance: open,
    # see docs/partitioning.md). Every other record must be handled.
    ticks = {(r.topic, r.partition, r.offset) for r in await pipe.records("impacts") if r.key == b"tick"}
    deadline = time.monotonic() + wait
    while True:
        seen = handled(workers)
        out: list[str] = []
        for agent, inputs in sorted(AGENT_INPUTS.items()):
            for logical in inputs:
                topic = pipe.prefix + logical
                for partition in range(pipe.partitions):
                    expected = {
                        o
                        for o in range(ends.get((topic, partition), 0))
                        if (topic, partition, o) not in ticks
                    }
                    missing = expected - seen.get((agent, topic, partition), set())
                    if missing:
                        out.append(f"{agent}: {logical}/{partition} offsets {sorted(missing)} never handled")
        if not out or time.monotonic() > deadline:
            return out
        await asyncio.sleep(1.0)


def is_run_key(key: bytes | None) -> bool:
    """`run-events` are keyed by run id, their signed envelopes by `tenant/run id`."""
    return key is not None and (key.startswith(b"run-") or b"/run-" in key)


def settled_view(snapshot: Partitions) -> set[tuple[Any, Any]]:
    """A topic's distinct records, except that a run contributes only its last event (per key, in offset
    order: its settled state and counts). A run's intermediate events depend on the order in which job
    starts and results from different job partitions reach `run-inputs` (streams/runs.py emits on every
    derived-state change: e.g. `queued` only when the plan arrives before the first start), which is
    timing, not input; two correct deployments may differ there. Everything else must match exactly."""
    out: set[tuple[Any, Any]] = set()
    for (_partition, key), values in per_key(snapshot).items():
        if is_run_key(key):
            out.add((key, values[-1]))
        else:
            out.update((key, value) for value in values)
    return out
