"""A VEX statement that names an image by digest takes the same route in the stream and in `preview`
(streams.resolve.vex_requests): the real worker emits exactly the jobs, reasons included, that preview
computes from the same inputs."""

from __future__ import annotations

import orjson

from schemas.messages import JobCommand, VexStatement
from streams.preview import preview
from tests.integration.pipeline_kit import CERN_A, Deployment, inventories, later


def vex_for_digest() -> VexStatement:
    return VexStatement.model_validate(
        {
            "document_id": "https://example.test/vex/digest",
            "statement_id": "https://example.test/vex/digest#0",
            "vulnerability": "GHSA-vh95-rmgr-6w4m",
            "products": [{"image_digest": CERN_A}],
            "status": "not_affected",
            "justification": "vulnerable_code_not_in_execute_path",
            "timestamp": later(120),
        }
    )


async def test_digest_vex_gives_the_same_jobs_in_stream_and_preview(deployment: Deployment) -> None:
    pipe = deployment()
    try:
        await pipe.start()
        await pipe.publish(inventories())
        await pipe.settle(min_jobs=3)  # first evaluation of the three images
        await pipe.publish([vex_for_digest()])
        await pipe.settle(min_jobs=4)  # the statement re-evaluates the one image with that digest

        jobs = [JobCommand.model_validate(orjson.loads(r.value)) for r in await pipe.records("jobs")]
        expected = preview(
            inventories(), vex=[vex_for_digest()], window=30, grace=5, include_inventory_impacts=True
        )
        assert sorted(j.job_id for j in jobs) == sorted(j.job_id for j in expected.jobs)
        by_id = {j.job_id: j for j in jobs}
        vex_jobs = [j for j in expected.jobs if any(r.source == "vex" for r in j.reasons)]
        assert [(j.tenant, j.image_digest) for j in vex_jobs] == [("acme", CERN_A)]
        for job in expected.jobs:
            assert by_id[job.job_id].reasons == job.reasons
    finally:
        pipe.stop()
