"""One image's live jobs run one at a time, earliest window first (streams.job_queue.first_of_image), on a
real worker against a real HTTP engine: two jobs of one image planned by the same fold reach the runner
in one batch, and the later one must not start until the earlier one's result is folded into
`last-results`, so its findings diff is taken against that result. Before the rule both started at once
and both were diffed against no previous result (the soak divergence of seed 249819, docs/partitioning.md).
"""

from __future__ import annotations

import asyncio
import time
from datetime import timedelta

import orjson

from schemas.messages import Component, Inventory, JobCommand, JobResult
from tests.integration.executor_kit import digest, http_env, inventory, scripted_engine
from tests.integration.pipeline_kit import T0, Deployment

TENANT = "acme"
IMAGE, OTHER = digest(41), digest(42)


def second_sighting() -> Inventory:
    """The image again, one component more, in the next window: a second job for it."""
    first = inventory(TENANT, IMAGE, T0 + timedelta(seconds=34))
    extra = Component(purl="pkg:npm/is-even@1.0.0", package="npm/is-even", version="1.0.0")
    return first.model_copy(update={"components": [*first.components, extra]})


async def test_one_images_jobs_run_in_order_each_diffed_against_the_one_before(
    deployment: Deployment,
) -> None:
    pipe = deployment()
    with scripted_engine({}) as engine:
        engine.gate.clear()  # held: the first job stays in flight while the second is offered
        try:
            await pipe.start(extra_env=http_env(engine, STELLA_EXECUTOR_TIMEOUT_SECONDS="20"))
            # Windows of 30 s, grace 5 s: the first two sightings stay open until the third, much later,
            # closes both in one fold, so both jobs reach the job stage together.
            await pipe.publish(
                [
                    inventory(TENANT, IMAGE, T0),
                    second_sighting(),
                    inventory(TENANT, OTHER, T0 + timedelta(seconds=100)),
                ]
            )
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                jobs = [JobCommand.model_validate(orjson.loads(r.value)) for r in await pipe.records("jobs")]
                if len([j for j in jobs if j.image_digest == IMAGE]) >= 2 and engine.arrivals_for(IMAGE):
                    break
                pipe.alive()
                await asyncio.sleep(0.5)
            mine = sorted(
                (j for j in jobs if j.image_digest == IMAGE), key=lambda j: (j.window_end, j.job_id)
            )
            assert len(mine) == 2, f"two jobs for the image expected, got {mine}"
            await asyncio.sleep(3.0)  # time for a second call, had the later job been started
            assert engine.arrivals_for(IMAGE) == 1, "the later job started while the earlier was in flight"
        finally:
            engine.gate.set()
        try:
            await pipe.settle(min_jobs=3)
            results = {
                r.job_id: r
                for r in (
                    JobResult.model_validate(orjson.loads(x.value)) for x in await pipe.records("job-results")
                )
            }
            first, second = (results[j.job_id] for j in mine)
            assert first.status == second.status == "completed"
            assert [f.id for f in first.delta.added] == ["CVE-2026-0001"]  # against no previous result
            assert second.delta.status == "no_change", second.delta  # against the first job's result
            assert second.previous_verdict == first.verdict
            calls = [c.job_id for c in engine.calls_for(IMAGE)]
            assert calls == [j.job_id for j in mine]
        finally:
            pipe.stop()
