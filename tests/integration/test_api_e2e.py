"""The control plane end to end on the real stack (issue 6): a real worker process and the HTTP API share one
deployment (topic prefix, database, app id → projector group).

One deployment per module: inventories and advisories are published and settled once; then
* a recheck POSTed through the API becomes jobs, results, a run in the read model and signed events, found
  through the API (read-your-writes and polling), with its deltas; a retry of that run is a new run whose
  ``retry_of`` names the old one; the images read model carries the inventory metadata and runtime sites,
  so a repository selector previews the right image; ``stella-sched verify`` accepts every signed event;
* ``stella-sched query`` and ``stella-sched tail`` read the same deployment.
A second deployment with a slow remote executor cancels a run with queued jobs and retries it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import shutil
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from pymongo import MongoClient

from agents.settings import Settings
from cli.main import main as cli_main
from controlplane.app import create_app
from controlplane.config import ApiConfig
from controlplane.testing import ServerThread
from tests.integration.executor_kit import digest, http_env, scripted_engine
from tests.integration.executor_kit import inventory as small_inventory
from tests.integration.pipeline_kit import CERN_A, CERN_B, Pipeline, advisories, inventories, later

pytestmark = pytest.mark.integration

T = TypeVar("T")
SCOPES = ["scheduler.runs.read", "scheduler.runs.write", "scheduler.runs.manage"]
TOKEN = "e2e-token-acme"
REPO = "registry.example/vdm-editor"


@dataclass
class Deployment:
    pipe: Pipeline
    url: str
    http: httpx.Client
    pub_dir: Path

    def get(self, path: str, **params: Any) -> httpx.Response:
        return self.http.get(self.url + path, params=params or None)

    def post(self, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
        return self.http.post(self.url + path, json=body or {})

    def ok(self, resp: httpx.Response, status: int = 200) -> dict[str, Any]:
        assert resp.status_code == status, resp.text
        out: dict[str, Any] = resp.json()
        return out


def eventually(
    what: str, probe: Callable[[], T | None], timeout: float = 240.0, pipe: Pipeline | None = None
) -> T:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pipe is not None:
            pipe.alive()
        got = probe()
        if got is not None:
            return got
        time.sleep(0.5)
    logs = "\n".join(w.output()[-3000:] for w in (pipe.workers if pipe else []))
    raise AssertionError(f"timed out waiting for {what}\n{logs}")


def api_settings(pipe: Pipeline, pub_dir: Path) -> Settings:
    """The API's settings from the worker's environment: same prefix, database, app id, partitions."""
    return pipe.api_settings(public_keys=str(pub_dir))


def access_file(home: Path) -> Path:
    path = home / "access.json"
    entry = {"token_sha256": hashlib.sha256(TOKEN.encode()).hexdigest(), "tenant": "acme", "scopes": SCOPES}
    path.write_text(json.dumps({"tokens": [{**entry, "name": "e2e"}]}))
    return path


@contextmanager
def serve_api(pipe: Pipeline, pub_dir: Path) -> Iterator[Deployment]:
    """The control plane in this process (uvicorn on an ephemeral port), configured like ``stella-sched
    api`` would be from the worker's environment (``ApiConfig.from_env`` derives the projector group)."""
    settings = api_settings(pipe, pub_dir)
    config = ApiConfig.from_env(settings, tokens_path=str(access_file(pipe.home)), port=0)
    assert config.projector_group == f"{pipe.prefix}app-projector"
    headers = {"Authorization": f"Bearer {TOKEN}"}
    with (
        ServerThread(create_app(settings, config=config)) as server,
        httpx.Client(timeout=30, headers=headers) as http,
    ):
        yield Deployment(pipe, server.url, http, pub_dir)


def start_pipeline(
    bootstrap: str, mongo_url: str, home: Path, extra_env: dict[str, str] | None = None
) -> Pipeline:
    prefix = f"t{uuid.uuid4().hex[:10]}."
    pipe = Pipeline(bootstrap, mongo_url, prefix, f"test_{uuid.uuid4().hex[:12]}", home)
    asyncio.run(pipe.start(extra_env=extra_env))
    return pipe


def public_keys(pipe: Pipeline) -> Path:
    pub_dir = pipe.home / "pub"
    pub_dir.mkdir(exist_ok=True)
    shutil.copy(pipe.home / "keys" / "test.pub.json", pub_dir / "test.pub.json")
    return pub_dir


def drop(pipe: Pipeline, mongo_url: str) -> None:
    client: MongoClient[dict[str, Any]] = MongoClient(mongo_url)
    try:
        pass  # not dropped: see tests/integration/conftest.py mongo_db (FerretDB dropDatabase can wedge)
    finally:
        client.close()


@pytest.fixture(scope="module")
def deployment(
    kafka_bootstrap: str, mongo_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    """Inventories (first evaluation) then the GHSA advisories, settled; then the API on top."""
    pipe = start_pipeline(kafka_bootstrap, mongo_url, tmp_path_factory.mktemp("e2e"))
    try:
        asyncio.run(pipe.publish(inventories()))
        asyncio.run(pipe.settle(min_jobs=3))
        asyncio.run(pipe.publish(advisories(later(60))))
        asyncio.run(pipe.settle(min_jobs=5))
        with serve_api(pipe, public_keys(pipe)) as dep:
            yield dep
    finally:
        pipe.stop()
        drop(pipe, mongo_url)


def jobs_with_reason(dep: Deployment, source: str, reason_id: str) -> list[dict[str, Any]]:
    items = dep.ok(dep.get("/api/v1/jobs", limit=1000))["items"]
    return [j for j in items if any(r["source"] == source and r["id"] == reason_id for r in j["reasons"])]


def terminal_run(dep: Deployment, run_id: str) -> dict[str, Any] | None:
    # What the API promises: a run a job names is never 404; it may be 503 not_caught_up for a moment
    # (the run's document is folded from another topic than the job's). That is "not yet", not a failure.
    resp = dep.get(f"/api/v1/runs/{run_id}")
    if resp.status_code == 503 and resp.json()["error"]["code"] == "not_caught_up":
        assert resp.headers.get("Retry-After")
        return None
    run = dep.ok(resp)
    settled = run["jobs_total"] > 0 and run["jobs_done"] == run["jobs_total"]
    return run if run["state"] in ("completed", "cancelled", "error") and settled else None


# ---------------------------------------------------------------- the API on the real pipeline


def test_recheck_retry_and_signed_events_through_the_api(deployment: Deployment, capsys: Any) -> None:
    dep, pipe = deployment, deployment.pipe

    # The images read model knows the inventory's repository: a repository selector previews one image.
    image = dep.ok(dep.get(f"/api/v1/images/{CERN_A}"))
    assert image["repository"] == REPO
    assert image["component_count"] > 0
    assert image["removed"] is False
    assert image["running"] is False
    preview = dep.ok(dep.post("/api/v1/impact-preview", {"selector": {"repositories": [REPO]}}))
    assert [i["image_digest"] for i in preview["images"]] == [CERN_A]  # CERN_B is beta's

    # A recheck through the API: read-your-writes on its position, then the run it caused.
    body = {"selector": {"repositories": ["registry.example/*"]}, "reason": "e2e recheck", "priority": "high"}
    written = dep.ok(dep.post("/api/v1/rechecks", body), 202)
    recheck_id = written["recheck_id"]
    dep.ok(dep.get("/api/v1/runs", min_position=written["min_position"]))

    def recheck_job() -> dict[str, Any] | None:
        found = jobs_with_reason(dep, "recheck", recheck_id)
        return found[0] if found else None

    job = eventually("the recheck's job", recheck_job, pipe=pipe)
    assert job["image_digest"] == CERN_A
    assert job["priority"] == "high"
    run_id = job["run_id"]
    run = eventually("the recheck's run to complete", lambda: terminal_run(dep, run_id), pipe=pipe)
    assert run["state"] == "completed"
    assert run["tenant"] == "acme"
    assert run["retry_of"] is None
    deltas = dep.ok(dep.get(f"/api/v1/runs/{run_id}/deltas"))
    assert deltas["state"] == "completed"
    assert [j["image_digest"] for j in deltas["jobs"]] == [CERN_A]
    assert deltas["jobs"][0]["status"] == "completed"
    assert deltas["jobs"][0]["verdict"] == "fail"  # the GHSA advisories made it fail
    assert deltas["summary"]["images"] == 1

    # Retry of the terminal run: a new run, whose retry_of names the old one (Recheck → impact → job → plan).
    retry = dep.ok(dep.post(f"/api/v1/runs/{run_id}/retry", {"reason": "e2e retry"}), 202)
    assert retry["retry_of"] == run_id
    assert retry["images"] == 1

    def retried() -> dict[str, Any] | None:
        runs = dep.ok(dep.get("/api/v1/runs", limit=1000))["items"]
        found = [r for r in runs if r.get("retry_of") == run_id]
        return terminal_run(dep, found[0]["id"]) if found else None

    new_run = eventually("the retry run", retried, pipe=pipe)
    assert new_run["id"] != run_id
    assert new_run["state"] == "completed"
    new_jobs = dep.ok(dep.get("/api/v1/jobs", run_id=new_run["id"]))["items"]
    assert [(j["image_digest"], j["retry_of"]) for j in new_jobs] == [(CERN_A, run_id)]
    assert dep.ok(dep.get(f"/api/v1/runs/{new_run['id']}/deltas"))["jobs"][0]["status"] == "completed"

    # A runtime event, read back at once through min_position: the image runs in eu-1/prod.
    event = {"image_digest": CERN_A, "cluster": "eu-1", "namespace": "prod", "state": "running",
             "observed_at": "2026-01-05T12:05:00Z"}  # fmt: skip
    written = dep.ok(dep.post("/api/v1/runtime-events", event), 202)
    image = dep.ok(dep.get(f"/api/v1/images/{CERN_A}", min_position=written["min_position"]))
    assert image["running"] is True
    assert image["running_sites"] == ["eu-1/prod"]
    assert image["repository"] == REPO  # the metadata survived the runtime update

    # The API's requests are in the project-wide metrics the dashboard reads.
    metrics = dep.http.get(dep.url + "/metrics").text
    assert 'route="/api/v1/runs/{run_id}/retry",status="202"' in metrics
    assert "scheduler_api_request_seconds_bucket" in metrics

    # Every signed event verifies: `stella-sched verify --topic --from-beginning`.
    asyncio.run(pipe.settle(quiet=4.0))
    signed = asyncio.run(pipe.records("events.signed"))
    capsys.readouterr()
    code = cli_main(
        ["verify", "--topic", "--from-beginning", "--public-keys", str(dep.pub_dir), "--topic-prefix",
         pipe.prefix, "--bootstrap", pipe.bootstrap, "--timeout", "3", "--json"]
    )  # fmt: skip
    report = json.loads(capsys.readouterr().out)
    assert code == 0, report
    assert report["failed"] == 0
    assert report["checked"] >= len(signed) > 0
    subjects = {e["subject"] for e in report["events"]}
    assert run_id in subjects or any(run_id in str(s) for s in subjects)


# ---------------------------------------------------------------- stella-sched query and tail


def cli_json(capsys: Any, argv: list[str]) -> dict[str, Any]:
    capsys.readouterr()
    code = cli_main(argv)
    out = capsys.readouterr().out
    assert code == 0, out
    result: dict[str, Any] = json.loads(out)
    return result


def test_query_and_tail_read_the_deployment(
    deployment: Deployment, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    pipe = deployment.pipe
    monkeypatch.setenv("MONGO_URL", pipe.mongo_url)
    monkeypatch.setenv("STELLA_MONGO_DB", pipe.db)
    monkeypatch.setenv("KAFKA_BOOTSTRAP", pipe.bootstrap)
    monkeypatch.setenv("STELLA_TOPIC_PREFIX", pipe.prefix)
    models = pipe.mongo()

    runs = cli_json(capsys, ["query", "runs", "--tenant", "acme", "--json"])
    assert runs["collection"] == "runs"
    assert runs["items"]
    assert {r["tenant"] for r in runs["items"]} == {"acme"}
    assert all("_pos" not in r for r in runs["items"])
    assert sorted(r["_id"] for r in runs["items"]) == sorted(
        d["_id"] for d in models.runs.find({"tenant": "acme"}, {"_id": 1})
    )
    completed = next(r for r in runs["items"] if r["summary"]["new_findings"])
    run_id = completed["_id"]

    one = cli_json(capsys, ["query", "runs", "--run", run_id, "--json"])["items"]
    assert [r["_id"] for r in one] == [run_id]
    jobs = cli_json(capsys, ["query", "jobs", "--run", run_id, "--tenant", "acme", "--json"])["items"]
    assert jobs
    assert {j["run_id"] for j in jobs} == {run_id}
    assert len(jobs) == models.jobs.count_documents({"run_id": run_id})
    deltas = cli_json(capsys, ["query", "deltas", "--run", run_id, "--json"])["items"]
    assert deltas == [{"run_id": run_id, "state": completed["state"], "summary": completed["summary"]}]
    images = cli_json(capsys, ["query", "images", "--tenant", "beta", "--json"])["items"]
    assert [i["image_digest"] for i in images] == [CERN_B]
    assert images[0]["repository"] == REPO
    cursors = cli_json(capsys, ["query", "cursors", "--json"])["items"]
    assert "advisories" in {c["_id"] for c in cursors}
    limited = cli_json(capsys, ["query", "jobs", "--limit", "1", "--json"])["items"]
    assert len(limited) == 1

    # errors: another tenant's run is not found; deltas without --run is a usage error
    capsys.readouterr()
    assert cli_main(["query", "runs", "--run", run_id, "--tenant", "beta"]) != 0
    assert "not found" in capsys.readouterr().err
    assert cli_main(["query", "deltas"]) != 0

    # tail: read N events from the beginning, each verified
    signed = asyncio.run(pipe.records("events.signed"))
    n = min(5, len(signed))
    assert n > 0
    capsys.readouterr()
    code = cli_main(
        ["tail", "--public-keys", str(deployment.pub_dir), "--from-beginning", "--max", str(n), "--json"]
    )
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert code == 0, lines
    assert len(lines) == n
    assert all(line["ok"] for line in lines)
    assert len({line["event_id"] for line in lines}) == n
    # and with a wrong key every event fails (exit 1)
    other = pipe.home / "other"
    other.mkdir(exist_ok=True)
    from signing.keys import generate_keypair

    generate_keypair(other / "x.key", other / "x.pub.json")
    capsys.readouterr()
    code = cli_main(
        ["tail", "--public-keys", str(other / "x.pub.json"), "--from-beginning", "--max", "2", "--json"]
    )
    bad = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.strip()]
    assert code == 1
    assert len(bad) == 2
    assert not any(line["ok"] for line in bad)


# ---------------------------------------------------------------- cancel and retry with a slow executor


def test_cancel_a_run_with_queued_jobs_then_retry_it(
    kafka_bootstrap: str, mongo_url: str, tmp_path: Path
) -> None:
    """One job at a time, 3 s each: cancelling while the first runs skips the queued ones; retrying the
    cancelled run re-runs exactly the skipped images in a new run that names the old one."""
    digests = [digest(n) for n in range(1, 6)]
    with scripted_engine(delay_s=3.0) as engine:
        env = http_env(engine, STELLA_EXECUTOR_CONCURRENCY="1", STELLA_EXECUTOR_TIMEOUT_SECONDS="20")
        pipe = start_pipeline(kafka_bootstrap, mongo_url, tmp_path, env)
        try:
            with serve_api(pipe, public_keys(pipe)) as dep:
                asyncio.run(pipe.publish([small_inventory("acme", d, later(0)) for d in digests]))

                def live_run() -> dict[str, Any] | None:
                    if not engine.calls and not any(engine.arrivals_for(d) for d in digests):
                        return None
                    runs = dep.ok(dep.get("/api/v1/runs"))["items"]
                    live = [r for r in runs if r["state"] in ("queued", "running") and r["jobs_total"] == 5]
                    return live[0] if live else None

                run = eventually("a run with a job in flight", live_run, pipe=pipe)
                run_id = run["id"]
                dep.ok(dep.post(f"/api/v1/runs/{run_id}/cancel", {"reason": "e2e cancel"}), 202)
                done = eventually("the cancelled run to settle", lambda: terminal_run(dep, run_id), pipe=pipe)
                assert done["state"] == "cancelled"
                jobs = dep.ok(dep.get("/api/v1/jobs", run_id=run_id))["items"]
                by_status: dict[str, list[str]] = {}
                for j in jobs:
                    by_status.setdefault(j["status"], []).append(j["image_digest"])
                skipped = sorted(by_status.get("skipped", []))
                assert skipped, by_status
                assert done["jobs_skipped"] == len(skipped)
                assert set(by_status) <= {"completed", "skipped"}
                executed = {c.digest for c in engine.calls}
                assert not executed & set(skipped)  # a skipped job never reached the executor
                # a cancelled run cannot be cancelled again
                assert dep.post(f"/api/v1/runs/{run_id}/cancel").status_code == 409

                retry = dep.ok(dep.post(f"/api/v1/runs/{run_id}/retry"), 202)
                assert retry["images"] == len(skipped)

                def retried() -> dict[str, Any] | None:
                    runs = dep.ok(dep.get("/api/v1/runs", limit=1000))["items"]
                    found = [r for r in runs if r.get("retry_of") == run_id]
                    return terminal_run(dep, found[0]["id"]) if found else None

                new_run = eventually("the retry run", retried, pipe=pipe)
                assert new_run["state"] == "completed"
                assert new_run["jobs_total"] == len(skipped)
                new_jobs = dep.ok(dep.get("/api/v1/jobs", run_id=new_run["id"]))["items"]
                assert sorted(j["image_digest"] for j in new_jobs) == skipped
                assert {j["status"] for j in new_jobs} == {"completed"}
                pipe.alive()
        finally:
            pipe.stop()
            drop(pipe, mongo_url)
