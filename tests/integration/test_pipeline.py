"""The whole topology on the real broker and FerretDB, driven by a real worker process:
inventories → advisories → a corrupt record → VEX, then the jobs topic, job results, read models,
signed events and dead letters are checked, and the stream is compared with `preview` (same core)."""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import orjson

from schemas.messages import JobCommand, JobResult
from signing.dsse import verify
from signing.keys import load_public_keys
from streams.preview import preview
from tests.integration.kit import produce
from tests.integration.pipeline_kit import (
    CERN_A,
    Deployment,
    Pipeline,
    advisories,
    inventories,
    later,
    vex_minimist,
)

GHSA_NPM = {"GHSA-6fc8-4gx4-v693", "GHSA-f8q6-p94x-37v3", "GHSA-gxpj-cx7g-858c", "GHSA-vh95-rmgr-6w4m"}


async def run_scenario(pipe: Pipeline) -> None:
    await pipe.start()
    await pipe.publish(inventories())
    await pipe.settle(min_jobs=3)  # first evaluation of the three images
    await pipe.publish(advisories(later(60)))
    await pipe.settle(min_jobs=5)  # the npm advisories touch both CERN images
    await produce(
        pipe.bootstrap,
        f"{pipe.prefix}advisories",
        [(b"broken", b'{"schema": "scheduler.advisory@1", "id": 7')],
    )
    await pipe.publish(vex_minimist(later(120)))
    await pipe.settle(min_jobs=7)  # so does the VEX statement


def decoded(records: list[Any]) -> list[dict[str, Any]]:
    return [orjson.loads(r.value) for r in records]


async def test_stream_end_to_end(
    deployment: Deployment,
    prefix: str,
    tmp_path: Path,
) -> None:
    pipe = deployment()
    try:
        await run_scenario(pipe)

        # 1. The stream emits exactly the jobs `preview` computes from the same inputs.
        jobs = [JobCommand.model_validate(d) for d in decoded(await pipe.records("jobs"))]
        expected = preview(
            inventories(),
            advisories(later(60)),
            vex_minimist(later(120)),
            window=30,
            grace=5,
            include_inventory_impacts=True,
        )
        assert sorted(j.job_id for j in jobs) == sorted(j.job_id for j in expected.jobs)
        assert len({(j.tenant, j.image_digest) for j in jobs}) == 3

        # 2. Results: the advisories add the npm findings to the CERN image; the VEX removes minimist's.
        results = [JobResult.model_validate(d) for d in decoded(await pipe.records("job-results"))]
        assert all(r.status == "completed" for r in results), [r.error for r in results]
        acme = sorted((r for r in results if r.image_digest == CERN_A), key=lambda r: r.finished_at)
        debug = [
            (
                r.finished_at,
                r.job_id[:8],
                r.delta.status,
                [f.id for f in r.delta.added],
                [f.id for f in r.delta.removed],
                len(r.findings),
            )
            for r in acme
        ]
        assert [r.delta.status for r in acme] == ["no_change", "changed", "changed"], debug
        assert {f.id for f in acme[1].delta.added} == GHSA_NPM
        assert [f.id for f in acme[2].delta.removed] == ["GHSA-vh95-rmgr-6w4m"]
        assert acme[1].verdict == "fail"

        # 3. Read models: runs completed with a DeltaSummary naming the new findings; tenants apart.
        models = pipe.mongo()
        runs = list(models.runs.find({"tenant": "acme"}))
        assert runs
        assert all(r["state"] == "completed" for r in runs)
        assert any(set(r["summary"]["new_findings"]) == GHSA_NPM for r in runs)
        beta = list(models.runs.find({"tenant": "beta"}))
        assert beta
        assert not {r["_id"] for r in beta} & {r["_id"] for r in runs}
        image = models.images.find_one({"_id": f"acme/{CERN_A}"})
        assert image is not None
        assert "GHSA-vh95-rmgr-6w4m" not in {f["id"] for f in image["findings"]}

        # 4. Every completion is signed, and every envelope verifies against the public key.
        keys = load_public_keys(tmp_path / "keys" / "test.pub.json")
        signed = await pipe.records("events.signed")
        terminal_runs = [d for d in decoded(await pipe.records("run-events")) if d["state"] == "completed"]
        assert len(signed) >= len(results) + len({d["run_id"] for d in terminal_runs})
        for record in signed:
            outcome = verify(orjson.loads(record.value), keys)
            assert outcome.ok, outcome

        # 5. The corrupt record is in the dead-letter topic with its original bytes; the worker lives on.
        letters = decoded(await pipe.records("deadletter"))
        broken = [d for d in letters if d["key_b64"] == base64.b64encode(b"broken").decode()]
        assert len(broken) == 1
        assert base64.b64decode(broken[0]["value_b64"]) == b'{"schema": "scheduler.advisory@1", "id": 7'
        assert broken[0]["source_topic"] == f"{prefix}advisories"
        assert broken[0]["reason"] == "decode"
        pipe.alive()
    finally:
        pipe.stop()
