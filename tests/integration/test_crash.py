"""Crash safety: SIGKILL the worker at seeded random points while deltas flow, restart it, and the outcome
equals a clean run's.

Two deployments run the extended scenario side by side with one signing key: a clean one, and one whose
worker (its whole process group) is killed a random 0.2-3 s after several phases are published, then
replaced by a fresh process (memory store: every table comes back from its changelog). At-least-once
delivery may repeat records on the topics; what must hold:

* the same job ids exist (and they are the ones `preview` computes from the same inputs);
* every repeated record is byte-identical to the first (no job result computed twice differently);
* the set of distinct records on `jobs`, `job-results` and `events.signed` equals the clean run's;
* the read models (runs with their DeltaSummary, jobs, images, windows, cursors, dead letters) equal the
  clean run's: no effect was applied twice.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import defaultdict

import orjson

from streams.preview import preview
from tests.integration.pipeline_kit import Deployment, advisories, inventories, later, vex_minimist
from tests.integration.replay_kit import (
    distinct,
    extended_scenario,
    model_diff,
    read_models,
    share_key,
    topic_snapshot,
)

SEED = 20260105
CRASH_PHASES = ("inventories", "advisories", "vex", "policy")


async def test_sigkill_at_random_points_changes_nothing(
    deployment: Deployment,
) -> None:
    clean = deployment("clean")
    crashy = deployment("crashy")
    share_key(clean, crashy)
    rng = random.Random(SEED)
    delays = {phase: rng.uniform(0.2, 3.0) for phase in CRASH_PHASES}
    kills: list[tuple[str, float]] = []

    async def crash(phase: str) -> None:
        if phase not in delays:
            return
        await asyncio.sleep(delays[phase])
        victim = crashy.workers[-1]
        assert victim.alive(), victim.output()[-3000:]
        victim.kill()
        kills.append((phase, delays[phase]))
        started = time.monotonic()
        crashy.add_worker()
        print(
            f"killed the worker {delays[phase]:.2f} s into phase {phase!r}; restarted ({time.monotonic() - started:.2f} s)"
        )

    try:
        await asyncio.gather(extended_scenario(clean), extended_scenario(crashy, crash))
        assert [p for p, _ in kills] == list(CRASH_PHASES)

        # Jobs: the same ids in both runs, and the ones preview computes for the first three phases.
        jobs_clean, jobs_crashy = await topic_snapshot(clean, "jobs"), await topic_snapshot(crashy, "jobs")
        ids_clean = {orjson.loads(v or b"")["job_id"] for _, v in distinct(jobs_clean)}
        ids_crashy = {orjson.loads(v or b"")["job_id"] for _, v in distinct(jobs_crashy)}
        assert ids_crashy == ids_clean
        expected = preview(
            inventories(),
            advisories(later(60)),
            vex_minimist(later(120)),
            window=30,
            grace=5,
            include_inventory_impacts=True,
        )
        assert {j.job_id for j in expected.jobs} <= ids_clean

        for logical in ("jobs", "job-results", "events.signed"):
            a, b = await topic_snapshot(clean, logical), await topic_snapshot(crashy, logical)
            assert distinct(b) == distinct(a), f"{logical}: distinct records differ after crashes"
            repeats = sum(map(len, b.values())) - len(distinct(b))
            print(f"{logical}: {len(distinct(a))} distinct records; {repeats} redelivered duplicate(s)")

        # One result per job id: a re-executed job must reproduce its first result byte for byte.
        results: dict[str, set[bytes]] = defaultdict(set)
        for _, value in distinct(await topic_snapshot(crashy, "job-results")):
            results[orjson.loads(value or b"")["job_id"]].add(value or b"")
        assert all(len(v) == 1 for v in results.values()), {k: len(v) for k, v in results.items()}
        assert set(results) == ids_crashy

        models_clean, models_crashy = read_models(clean), read_models(crashy)
        assert models_crashy == models_clean, "\n".join(model_diff(models_clean, models_crashy))
        clean.alive()
        crashy.alive()
    finally:
        clean.stop()
        crashy.stop()
        # not dropped: see tests/integration/conftest.py mongo_db (FerretDB dropDatabase can wedge)
