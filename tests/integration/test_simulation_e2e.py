"""Policy simulation on the real stack: a worker deployment (Kafka, FerretDB, faust) evaluates a small
estate; a stricter candidate policy POSTed to the API reports the expected verdict flips and newly failing
findings, leaves the live read models byte-identical, and its simulation-completed event comes out of the
signer and verifies."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import time

import httpx
import orjson

from agents.settings import Settings
from cli.verify import check, load_trusted
from controlplane.app import create_app
from controlplane.config import ApiConfig
from controlplane.testing import ServerThread
from schemas.messages import Component, Inventory
from tests.integration.pipeline_kit import CERN_A, T0, Deployment, advisories, inventories, later
from tests.integration.replay_kit import read_models, settle_phase, share_key

TOKEN = "sim-token-acme"
SMALL = "sha256:" + "cc" * 32  # only minimist 0.0.8 (a medium finding): passes live, fails when stricter


def small_image() -> Inventory:
    component = Component(purl="pkg:npm/minimist@0.0.8", package="npm/minimist", version="0.0.8")
    return Inventory(tenant="acme", image_digest=SMALL, components=[component], observed_at=T0)


async def test_stricter_policy_simulation_flips_signs_and_touches_nothing(deployment: Deployment) -> None:
    pipe = deployment("sim")
    share_key(pipe)
    try:
        await pipe.start()
        await pipe.publish([*inventories(), small_image()])
        await settle_phase(pipe, "inventories", timeout=900.0)
        await pipe.publish(advisories(later(60)))
        await settle_phase(pipe, "advisories", timeout=900.0)
        live_before = json.dumps(read_models(pipe), sort_keys=True)

        env = pipe.env()
        settings = Settings(
            kafka_bootstrap=env["KAFKA_BOOTSTRAP"],
            mongo_url=env["MONGO_URL"],
            mongo_db=env["STELLA_MONGO_DB"],
            topic_prefix=env["STELLA_TOPIC_PREFIX"],
            app_id=env["STELLA_APP_ID"],
            partitions=int(env["STELLA_PARTITIONS"]),
        )
        access = pipe.home / "access.json"
        entry = {
            "token_sha256": hashlib.sha256(TOKEN.encode()).hexdigest(),
            "tenant": "acme",
            "scopes": ["scheduler.runs.read", "scheduler.runs.write"],
        }
        access.write_text(json.dumps({"tokens": [entry]}))
        config = ApiConfig.from_env(settings, tokens_path=str(access), port=0)
        body = {"rules": {"severity_threshold": "medium"}, "selector": {"all": True}}
        with ServerThread(create_app(settings, config=config)) as server:
            headers = {"Authorization": f"Bearer {TOKEN}"}
            async with httpx.AsyncClient(timeout=60, headers=headers) as http:
                resp = await http.post(server.url + "/api/v1/policies/simulations", json=body)
                assert resp.status_code == 202, resp.text
                out = resp.json()
                again = (await http.post(server.url + "/api/v1/policies/simulations", json=body)).json()
        sim = out["simulation"]
        assert again["simulation"] == sim  # deterministic: same state, same request, same bytes
        by = {i["image_digest"]: i for i in sim["images"]}
        assert (by[SMALL]["live_verdict"], by[SMALL]["simulated_verdict"]) == ("pass", "fail")
        assert by[SMALL]["newly_failing"] == ["GHSA-vh95-rmgr-6w4m npm/minimist"]
        assert (by[CERN_A]["live_verdict"], by[CERN_A]["simulated_verdict"]) == ("fail", "fail")
        assert "GHSA-vh95-rmgr-6w4m npm/minimist" in by[CERN_A]["newly_failing"]
        assert sim["totals"]["to_fail"] == 1
        assert sim["totals"]["to_pass"] == 0
        assert all(d.startswith("sha256:") for d in by)  # acme's images only (CERN_B is beta's)
        assert len(by) == 3

        # the signer turns the produced simulation into a verifying simulation-completed event
        trusted = load_trusted(str(pipe.home / "keys" / "test.pub.json"))
        deadline = time.monotonic() + 600
        found = None
        while found is None:
            pipe.alive()
            for record in await pipe.records("events.signed", timeout=2.0):
                envelope = orjson.loads(record.value)
                statement = orjson.loads(base64.b64decode(envelope["payload"]))
                if statement["subject"][0]["name"] == out["simulation_id"]:
                    found = (record.key, envelope, statement)
            assert found is not None or time.monotonic() < deadline, "no signed simulation-completed event"
            if found is None:
                await asyncio.sleep(1.0)
        key, envelope, statement = found
        assert key == f"acme/{out['simulation_id']}".encode()
        assert check("events.signed", envelope, trusted).ok
        assert statement["predicateType"].endswith("/simulation-completed/v1")
        assert statement["predicate"] == sim

        await pipe.settle(timeout=300.0)
        assert json.dumps(read_models(pipe), sort_keys=True) == live_before, "live read models changed"
        pipe.alive()
    finally:
        pipe.stop()
