"""Explain traces end to end: the scripted scenario through a real deployment (Kafka, FerretDB, faust);
every finding in the images read model has its trace, a VEX suppression is traced with the statement that
won, and the signed job-completed events carry the traces and verify."""

from __future__ import annotations

import base64

import orjson

from cli.verify import check, load_trusted
from projections.explain import finding_explain
from tests.integration.pipeline_kit import CERN_A, Deployment, advisories, inventories, later, vex_minimist
from tests.integration.replay_kit import read_models, settle_phase, share_key, topic_snapshot

MINIMIST = "GHSA-vh95-rmgr-6w4m"


async def test_findings_carry_traces_into_read_models_and_signed_events(deployment: Deployment) -> None:
    pipe = deployment("x")
    share_key(pipe)
    try:
        # inventories → advisories → VEX, each phase settled (generous deadlines: a loaded machine is slow,
        # never wrong)
        await pipe.start()
        await pipe.publish(inventories())
        await settle_phase(pipe, "inventories", timeout=900.0)
        await pipe.publish(advisories(later(60)))
        await settle_phase(pipe, "advisories", timeout=900.0)
        await pipe.publish(vex_minimist(later(120)))
        await settle_phase(pipe, "vex", timeout=900.0)
        images = {d["_id"]: d for d in read_models(pipe)["images"]}
        evaluated = [d for d in images.values() if d.get("evaluated_job_id")]
        assert evaluated
        with_findings = 0
        for doc in evaluated:
            reported = {(t["id"], t["package"]) for t in doc["traces"] if t["outcome"] == "reported"}
            assert {(f["id"], f["package"]) for f in doc["findings"]} == reported, doc["_id"]
            with_findings += bool(doc["findings"])
            for trace in doc["traces"]:
                rng = trace["range"]
                assert rng["introduced"] is not None or rng["listed"] is not None, trace
        assert with_findings > 0
        # the VEX phase suppressed minimist: the trace says which statement won and why
        answer = finding_explain(images[f"acme/{CERN_A}"], MINIMIST)
        assert answer is not None
        [trace] = answer["traces"]
        assert trace["outcome"] == "suppressed"
        assert trace["vex"][0]["outcome"] == "won"
        assert trace["vex"][0]["justification"] == "vulnerable_code_not_in_execute_path"
        assert (trace["range"]["introduced"], trace["range"]["fixed"]) == ("0", "0.2.1")

        trusted = load_trusted(str(pipe.home / "keys" / "test.pub.json"))
        signed = await topic_snapshot(pipe, "events.signed")
        traced = 0
        for records in signed.values():
            for _key, value in records:
                envelope = orjson.loads(value or b"null")
                assert check("events.signed", envelope, trusted).ok
                statement = orjson.loads(base64.b64decode(envelope["payload"]))
                predicate = statement["predicate"]
                if predicate.get("status") == "completed":
                    traced += bool(predicate["traces"])
        assert traced > 0
        pipe.alive()
    finally:
        pipe.stop()
