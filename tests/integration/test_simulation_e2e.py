"""Policy simulation on the real stack: a worker deployment (Kafka, FerretDB, faust) evaluates a small
estate; a stricter candidate policy POSTed to the API, from the read models and then as a queued run,
reports the expected verdict flips and newly failing findings, leaves the live read models byte-identical
(the queued run adds only its own run and job documents), calls back once terminal, and its
simulation-completed events come out of the signer and verify. A second deployment cancels a queued
simulation while its lane is busy, and live work keeps flowing meanwhile."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import os
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import orjson
from fastapi import FastAPI, Request

from agents.settings import Settings
from cli.verify import check, load_trusted
from controlplane.app import create_app
from controlplane.config import ApiConfig
from controlplane.testing import ServerThread
from schemas.canonical import dumps
from schemas.messages import Component, Inventory
from streams.simulation import simulation_job_id
from tests.integration.executor_kit import digest as kit_digest
from tests.integration.executor_kit import inventory as kit_inventory
from tests.integration.kit import REPO
from tests.integration.pipeline_kit import (
    CERN_A,
    T0,
    Deployment,
    Pipeline,
    advisories,
    inventories,
    later,
)
from tests.integration.replay_kit import read_models, settle_phase, share_key

TOKEN = "sim-token-acme"
TERMINAL = ("completed", "cancelled", "error")
SMALL = "sha256:" + "cc" * 32  # only minimist 0.0.8 (a medium finding): passes live, fails when stricter


def small_image() -> Inventory:
    component = Component(purl="pkg:npm/minimist@0.0.8", package="npm/minimist", version="0.0.8")
    return Inventory(tenant="acme", image_digest=SMALL, components=[component], observed_at=T0)


async def signed_event(pipe: Pipeline, subject: str) -> tuple[bytes, dict[str, Any], dict[str, Any]]:
    """The signed simulation-completed event about ``subject`` (key, envelope, statement), once it is there."""
    deadline = time.monotonic() + 600
    while True:
        pipe.alive()
        for record in await pipe.records("events.signed", timeout=2.0):
            envelope = orjson.loads(record.value)
            statement = orjson.loads(base64.b64decode(envelope["payload"]))
            # a queued simulation's run (same id) has a signed run event of its own: keep the simulation's
            kind = statement["predicateType"]
            if statement["subject"][0]["name"] == subject and kind.endswith("/simulation-completed/v1"):
                return record.key, envelope, statement
        assert time.monotonic() < deadline, f"no signed event about {subject}"
        await asyncio.sleep(1.0)


async def until_terminal(http: httpx.AsyncClient, url: str, pipe: Pipeline) -> dict[str, Any]:
    """GET the simulation until it is terminal (the worker runs it, the projector folds it)."""
    deadline = time.monotonic() + 600
    while True:
        pipe.alive()
        resp = await http.get(url)
        if resp.status_code == 200 and resp.json().get("state") in TERMINAL:
            result: dict[str, Any] = resp.json()
            return result
        assert resp.status_code in (200, 404, 503), resp.text
        assert time.monotonic() < deadline, f"simulation not terminal: {resp.text}"
        await asyncio.sleep(1.0)


def api_settings(pipe: Pipeline, scopes: list[str]) -> tuple[Settings, ApiConfig]:
    settings = pipe.api_settings()
    access = pipe.home / "access.json"
    entry = {"token_sha256": hashlib.sha256(TOKEN.encode()).hexdigest(), "tenant": "acme", "scopes": scopes}
    access.write_text(json.dumps({"tokens": [entry]}))
    return settings, ApiConfig.from_env(settings, tokens_path=str(access), port=0)


class Receiver:
    """A callback receiver on 127.0.0.1: records the bodies it is sent."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        self.arrived = threading.Event()
        self.app = FastAPI()

        @self.app.post("/hook")
        async def hook(request: Request) -> dict[str, bool]:
            self.bodies.append(await request.body())
            self.arrived.set()
            return {"ok": True}


def without(dump: dict[str, Any], run_id: str) -> dict[str, Any]:
    """The read models minus one run's own documents (its run and its jobs)."""
    out = dict(dump)
    out["runs"] = [d for d in dump["runs"] if d["_id"] != run_id]
    out["jobs"] = [d for d in dump["jobs"] if d.get("run_id") != run_id]
    return out


async def test_stricter_policy_simulation_flips_signs_and_touches_nothing(deployment: Deployment) -> None:
    pipe = deployment("sim")
    share_key(pipe)
    try:
        await pipe.start()
        await pipe.publish([*inventories(), small_image()])
        await settle_phase(pipe, "inventories", timeout=900.0)
        await pipe.publish(advisories(later(60)))
        await settle_phase(pipe, "advisories", timeout=900.0)
        live_before = read_models(pipe)

        settings, config = api_settings(pipe, ["scheduler.runs.read", "scheduler.runs.write"])
        body = {"rules": {"severity_threshold": "medium"}, "selector": {"all": True}, "mode": "read-model"}
        receiver = Receiver()
        with ServerThread(create_app(settings, config=config)) as server, ServerThread(receiver.app) as hook:
            headers = {"Authorization": f"Bearer {TOKEN}"}
            async with httpx.AsyncClient(timeout=60, headers=headers) as http:
                resp = await http.post(server.url + "/api/v1/policies/simulations", json=body)
                assert resp.status_code == 202, resp.text
                out = resp.json()
                again = (await http.post(server.url + "/api/v1/policies/simulations", json=body)).json()
                # the same candidate as a queued run: re-evaluated by the worker, called back when done
                callback = {"url": hook.url + "/hook", "secret": "s3cret-for-callbacks"}
                queued = {"rules": body["rules"], "selector": body["selector"], "callback": callback}
                asked_at = time.monotonic()
                sent = await http.post(
                    server.url + "/api/v1/policies/simulations",
                    json=queued,
                    headers={"Idempotency-Key": "q1"},
                )
                assert sent.status_code == 202, sent.text
                sid = sent.json()["simulation_id"]
                assert sent.json()["images"] == 3
                shown = await until_terminal(http, server.url + f"/api/v1/policies/simulations/{sid}", pipe)
                print(
                    f"queued simulation of 3 images: terminal in read model after {time.monotonic() - asked_at:.1f}s"
                )
                run = (await http.get(server.url + f"/api/v1/runs/{sid}")).json()
                listed = (await http.get(server.url + "/api/v1/policies/simulations")).json()
                assert await asyncio.to_thread(receiver.arrived.wait, 120), "no callback"
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
        key, envelope, statement = await signed_event(pipe, out["simulation_id"])
        assert key == f"acme/{out['simulation_id']}".encode()
        assert check("events.signed", envelope, trusted).ok
        assert statement["predicateType"].endswith("/simulation-completed/v1")
        assert statement["predicate"] == sim

        # the queued run: the same flips as the read-model judgement (the knowledge has not moved), every
        # image evaluated by a job of its own run, the result signed and called back byte for byte
        assert shown["state"] == "completed"
        assert shown["mode"] == "queue"
        assert [i["image_digest"] for i in shown["images"]] == sorted(by)
        for image in shown["images"]:
            assert image.pop("job_status") == "completed"
        assert shown["images"] == sim["images"]
        assert shown["totals"] == {**sim["totals"], "failed": 0, "skipped": 0}
        assert run["state"] == "completed"
        assert (run["jobs_total"], run["jobs_done"]) == (3, 3)
        assert sid in [i["simulation_id"] for i in listed["items"]]
        key, envelope, statement = await signed_event(pipe, sid)
        assert key == f"acme/{sid}".encode()
        assert check("events.signed", envelope, trusted).ok
        predicate = statement["predicate"]
        assert predicate["simulation_id"] == sid
        assert predicate["mode"] == "queue"
        assert receiver.bodies[0] == dumps(predicate)  # the callback carries the signed predicate's bytes

        await pipe.settle(timeout=300.0)
        after = read_models(pipe)
        # images, windows, cursors and dead letters byte-identical; runs and jobs gained only the run's own
        assert json.dumps(without(after, sid), sort_keys=True) == json.dumps(live_before, sort_keys=True)
        assert {d["_id"] for d in after["jobs"] if d.get("run_id") == sid} == {
            simulation_job_id(sid, digest) for digest in by
        }
        pipe.alive()
    finally:
        pipe.stop()


class HeldEngine(ThreadingHTTPServer):
    """A remote engine that answers live jobs at once and holds simulation jobs until ``release``."""

    daemon_threads = True
    block_on_close = False

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _HeldHandler)
        self.release = threading.Event()
        self.lock = threading.Lock()
        self.simulation_calls: list[str] = []
        self.live_calls: list[str] = []

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}"


class _HeldHandler(BaseHTTPRequestHandler):
    server: HeldEngine
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))))
        srv = self.server
        with srv.lock:
            (srv.simulation_calls if "simulation" in body else srv.live_calls).append(body["image_digest"])
        if "simulation" in body:
            srv.release.wait(600)
        data = json.dumps({"verdict": "pass", "findings": []}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        with contextlib.suppress(OSError):
            self.wfile.write(data)


async def wait_until(pipe: Pipeline, what: str, check: Callable[[], Awaitable[bool]]) -> None:
    deadline = time.monotonic() + 600
    while not await check():
        pipe.alive()
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.5)


async def test_cancel_a_queued_simulation_while_live_work_flows(
    deployment: Deployment, tmp_path: Path
) -> None:
    engine = HeldEngine()
    threading.Thread(target=engine.serve_forever, kwargs={"poll_interval": 0.1}, daemon=True).start()
    pipe = deployment("simcancel")
    try:
        # concurrency 4: the simulation lane has one slot, so one simulation job runs and the rest queue
        env = {
            "STELLA_EXECUTOR": "http",
            "STELLA_EXECUTOR_URL": engine.url,
            "STELLA_EXECUTOR_TIMEOUT_SECONDS": "600",
            "STELLA_EXECUTOR_CONCURRENCY": "4",
        }
        await pipe.start(extra_env=env)
        await pipe.publish([kit_inventory("acme", kit_digest(n), T0) for n in (1, 2, 3)])
        await pipe.settle(timeout=600.0, min_jobs=3)

        settings, config = api_settings(
            pipe, ["scheduler.runs.read", "scheduler.runs.write", "scheduler.runs.manage"]
        )
        with ServerThread(create_app(settings, config=config)) as server:
            api = server.url + "/api/v1"
            async with httpx.AsyncClient(timeout=60, headers={"Authorization": f"Bearer {TOKEN}"}) as http:

                async def evaluated(n: int) -> bool:
                    items = (await http.get(api + "/images")).json()["items"]
                    return sum(1 for i in items if i.get("verdict") in ("pass", "fail")) >= n

                await wait_until(pipe, "three evaluated images", lambda: evaluated(3))
                sent = await http.post(api + "/policies/simulations", json={"rules": {"fail_on_kev": False}})
                assert sent.status_code == 202, sent.text
                sid = sent.json()["simulation_id"]

                async def one_held() -> bool:
                    return len(engine.simulation_calls) >= 1

                await wait_until(pipe, "the first simulation job at the engine", one_held)

                # the simulation lane is full and two of its jobs wait: a new live image is still evaluated
                await pipe.publish([kit_inventory("acme", kit_digest(4), later(5))])

                async def live_done() -> bool:
                    results = await pipe.records("job-results", timeout=1.0)
                    return any(orjson.loads(r.value)["image_digest"] == kit_digest(4) for r in results)

                await wait_until(pipe, "the live job of the new image", live_done)
                assert len(engine.simulation_calls) == 1, "a simulation job started beyond its lane"
                assert sent.json()["images"] == 3

                async def cancelled() -> bool:
                    resp = await http.post(api + f"/policies/simulations/{sid}/cancel")
                    assert resp.status_code in (202, 404, 503), resp.text  # 404/503: not folded yet
                    return resp.status_code == 202

                await wait_until(pipe, "the cancel to be accepted", cancelled)

                async def two_skipped() -> bool:
                    jobs = (await http.get(api + "/jobs", params={"run_id": sid})).json()["items"]
                    return sorted(j.get("status") for j in jobs) == ["queued", "skipped", "skipped"]

                await wait_until(pipe, "the queued simulation jobs to be skipped", two_skipped)
                engine.release.set()  # the running one finishes (a running job is never pre-empted)
                shown = await until_terminal(http, api + f"/policies/simulations/{sid}", pipe)
                again = await http.post(api + f"/policies/simulations/{sid}/cancel")
                assert again.status_code == 409, again.text
                await wait_until(pipe, "the fourth image in the read model", lambda: evaluated(4))

        assert shown["state"] == "cancelled"
        assert sorted(i.get("job_status") for i in shown["images"]) == ["completed", "skipped", "skipped"]
        assert (shown["totals"]["skipped"], shown["totals"]["images"]) == (2, 3)
        trusted = load_trusted(str(pipe.home / "keys" / "test.pub.json"))
        _key, envelope, statement = await signed_event(pipe, sid)
        assert check("events.signed", envelope, trusted).ok
        assert statement["predicate"]["state"] == "cancelled"

        # the CLI: `simulations show` exits 1 for a cancelled one; `simulate --wait` follows a new run
        cli_env = {**os.environ, **pipe.env()}
        show = await run_cli(cli_env, "simulations", "show", sid, "--tenant", "acme", "--json")
        assert show[0] == 1, show
        assert json.loads(show[1])["state"] == "cancelled"
        policy = tmp_path / "stricter.json"
        policy.write_text(json.dumps({"severity_threshold": "low"}))
        code, out, err = await run_cli(
            cli_env, "simulate", "--tenant", "acme", "--policy", str(policy), "--wait", "--json"
        )
        assert code == 0, err
        result = json.loads(out)["simulation"]
        assert result["state"] == "completed"
        assert result["totals"]["images"] == 4
        pipe.alive()
    finally:
        engine.release.set()
        pipe.stop()
        engine.shutdown()
        engine.server_close()


async def run_cli(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "cli.main",
        *args,
        cwd=str(REPO),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 900)
    return proc.returncode or 0, out.decode(), err.decode()
