"""The control plane over real HTTP (uvicorn on an ephemeral port) against the real Kafka broker and the
real MongoDB-wire server. Fails, never skips, when they are unreachable."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from pymongo import MongoClient

from agents.settings import Settings
from controlplane.app import create_app
from controlplane.auth import sign_body
from controlplane.config import ApiConfig
from controlplane.testing import ServerThread
from projections.fold import Checkpoint, Position
from projections.mongo_store import MongoStore
from projections.store import Projector
from schemas.codec import encode
from schemas.messages import (
    CursorUpdate,
    DeadLetter,
    JobCommand,
    JobInputs,
    JobResult,
    PolicyChange,
    Reason,
    Recheck,
    RunEvent,
    RuntimeEvent,
)
from signing.keys import generate_keypair
from streams.runs import RunCancelRequested
from tests.conftest import sample_data
from tests.integration.kit import create_topics, read_all

pytestmark = pytest.mark.integration

READ, WRITE, MANAGE = "scheduler.runs.read", "scheduler.runs.write", "scheduler.runs.manage"
TOKENS = {
    "a-all": ("acme", [READ, WRITE, MANAGE]),
    "a-read": ("acme", [READ]),
    "a-write": ("acme", [READ, WRITE]),
    "b-all": ("globex", [READ, WRITE, MANAGE]),
}
SECRET = "feed-secret-for-tests"
GROUP = "api-test-projector"
T0 = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)
SHARED_DIGEST = "sha256:" + "5" * 64


def digest(n: int) -> str:
    return "sha256:" + f"{n:064x}"


def auth(name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer token-{name}"}


@dataclass
class Api:
    url: str
    client: httpx.Client
    settings: Settings
    store: MongoStore
    bootstrap: str

    def get(self, path: str, token: str = "a-all", **kw: Any) -> httpx.Response:
        return self.client.get(self.url + path, headers=auth(token), **kw)

    def post(self, path: str, token: str = "a-all", **kw: Any) -> httpx.Response:
        headers = {**auth(token), **kw.pop("headers", {})}
        return self.client.post(self.url + path, headers=headers, **kw)


def job_command(tenant: str, run_id: str, n: int, image: str) -> JobCommand:
    return JobCommand(
        job_id=f"{tenant}-job-{run_id}-{n:02d}",
        run_id=run_id,
        tenant=tenant,
        image_digest=image,
        kind="reevaluate",
        priority="normal",
        window_start=T0,
        window_end=T0 + timedelta(seconds=30),
        deadline=T0 + timedelta(hours=4),
        reasons=[Reason(source="advisory", id="GHSA-x")],
        inputs=JobInputs(),
    )


def job_result(cmd: JobCommand, status: str = "completed") -> JobResult:
    return JobResult.model_validate(
        {
            "job_id": cmd.job_id,
            "run_id": cmd.run_id,
            "tenant": cmd.tenant,
            "image_digest": cmd.image_digest,
            "priority": cmd.priority,
            "status": status,
            "finished_at": T0 + timedelta(minutes=5),
            "verdict": "fail",
            "findings": [{"id": "GHSA-x", "package": "npm/x", "severity": "high"}],
            "delta": {
                "status": "changed",
                "added": [{"id": "GHSA-x", "package": "npm/x", "severity": "high"}],
            },
        }
    )


def seed_messages() -> list[object]:
    """acme: 12 runs (several sharing a created_at), jobs, images; globex: 2 runs; dead letters of both."""
    msgs: list[object] = []
    for i in range(12):
        run_id = f"acme-run-{i:02d}"
        at = T0 + timedelta(seconds=(i // 3) * 10)  # groups of three share a timestamp: tie-break by id
        state = "completed" if i % 2 == 0 else "running"
        msgs.append(RunEvent(run_id=run_id, tenant="acme", state=state, at=at, jobs_total=2))
    for i in range(2):
        msgs.append(RunEvent(run_id=f"globex-run-{i}", tenant="globex", state="completed", at=T0))
    for n in range(3):
        image = SHARED_DIGEST if n == 0 else digest(n)
        cmd = job_command("acme", "acme-run-00", n, image)
        msgs += [cmd, job_result(cmd, "completed" if n < 2 else "failed")]
    running = job_command("acme", "acme-run-01", 0, digest(7))
    msgs.append(running)
    gcmd = job_command("globex", "globex-run-0", 0, SHARED_DIGEST)
    msgs += [gcmd, job_result(gcmd)]
    failed_job = job_command("acme", "acme-run-00", 9, digest(9))
    msgs.append(
        DeadLetter(
            source_topic="jobs",
            partition=0,
            offset=1,
            value_b64=base64.b64encode(encode(failed_job)).decode(),
            reason="job-failed",
            error="boom",
            at=T0,
            job=failed_job,
        )
    )
    gevent = RuntimeEvent(
        tenant="globex",
        image_digest=SHARED_DIGEST,
        cluster="c",
        namespace="n",
        state="running",
        observed_at=T0,
    )
    msgs.append(
        DeadLetter(
            source_topic="runtime",
            partition=1,
            offset=4,
            key_b64=base64.b64encode(SHARED_DIGEST.encode()).decode(),
            value_b64=base64.b64encode(encode(gevent)).decode(),
            reason="validate",
            error="x",
            at=T0,
        )
    )
    msgs.append(CursorUpdate(source="advisories", last_id="GHSA-x", modified=T0, partition=0, offset=3))
    msgs.append(PolicyChange(tenant="globex", policy_id="secret-policy", revision=3, activated_at=T0))
    return msgs


def seed(store: MongoStore, prefix: str, messages: list[object], group: str = "seed") -> None:
    store.ensure_indexes()
    batch = [(m, Position(f"{prefix}seed", 0, i)) for i, m in enumerate(messages)]
    Projector(store, group).process(batch)


@pytest.fixture
def api(
    kafka_bootstrap: str,
    mongo_url: str,
    mongo_db: tuple[MongoClient[dict[str, Any]], str],
    prefix: str,
    tmp_path: Path,
) -> Iterator[Api]:
    asyncio.run(create_topics(kafka_bootstrap, prefix, partitions=2))
    client, db = mongo_db
    access = {
        "tokens": [
            {
                "token_sha256": hashlib.sha256(f"token-{name}".encode()).hexdigest(),
                "tenant": tenant,
                "scopes": scopes,
                "name": name,
            }
            for name, (tenant, scopes) in TOKENS.items()
        ],
        "webhooks": [{"source": "osv-mirror", "secret": SECRET}],
    }
    tokens = tmp_path / "access.json"
    tokens.write_text(json.dumps(access))
    generate_keypair(tmp_path / "keys" / "signer.key", tmp_path / "pub" / "signer.pub.json")
    settings = Settings(
        kafka_bootstrap=kafka_bootstrap,
        mongo_url=mongo_url,
        mongo_db=db,
        topic_prefix=prefix,
        public_keys=str(tmp_path / "pub"),
    )
    config = ApiConfig(
        tokens_path=str(tokens),
        max_body_bytes=64 * 1024,
        feed_rate_per_second=0.5,
        feed_burst=3,
        projector_group=GROUP,
        min_position_timeout_seconds=4.0,
    )
    store = MongoStore(client, db)
    seed(store, prefix, seed_messages())
    with ServerThread(create_app(settings, config=config)) as server, httpx.Client(timeout=30) as http:
        yield Api(server.url, http, settings, store, kafka_bootstrap)


def envelope(resp: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error"}, body
    assert isinstance(body["error"]["message"], str)
    assert body["error"]["message"]
    if code is not None:
        assert body["error"]["code"] == code, body
    error: dict[str, Any] = body["error"]
    return error


def collect(
    api: Api, path: str, token: str = "a-all", limit: int = 4, **filters: str
) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    cursor: str | None = None
    for _ in range(100):
        params: dict[str, Any] = {"limit": limit, **filters}
        if cursor:
            params["cursor"] = cursor
        resp = api.get(path, token, params=params)
        assert resp.status_code == 200, resp.text
        page = resp.json()
        assert len(page["items"]) <= limit
        items += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            return items
    raise AssertionError("pagination did not end")


# ---------------------------------------------------------------- isolation


def test_tenant_a_never_sees_tenant_b_on_any_get(api: Api) -> None:
    runs = collect(api, "/api/v1/runs")
    assert len(runs) == 12
    assert {r["tenant"] for r in runs} == {"acme"}
    assert {r["tenant"] for r in collect(api, "/api/v1/runs", "b-all")} == {"globex"}
    jobs = collect(api, "/api/v1/jobs")
    assert len(jobs) == 4
    assert {j["tenant"] for j in jobs} == {"acme"}
    images = collect(api, "/api/v1/images")
    assert {i["tenant"] for i in images} == {"acme"}
    assert sorted(i["image_digest"] for i in images) == sorted([SHARED_DIGEST, digest(1), digest(2)])
    assert {w["tenant"] for w in collect(api, "/api/v1/windows")} == {"acme"}
    dls = collect(api, "/api/v1/deadletters")
    assert [d["id"] for d in dls] == ["jobs/0/1"]
    assert [d["id"] for d in collect(api, "/api/v1/deadletters", "b-all")] == ["runtime/1/4"]
    # the shared digest is a different document per tenant
    a_img = api.get(f"/api/v1/images/{SHARED_DIGEST}").json()
    b_img = api.get(f"/api/v1/images/{SHARED_DIGEST}", "b-all").json()
    assert a_img["run_id"] == "acme-run-00"
    assert b_img["run_id"] == "globex-run-0"

    # another tenant's ids answer exactly like missing ones
    foreign_to_acme = [
        "/api/v1/runs/globex-run-0",
        "/api/v1/runs/globex-run-0/deltas",
        "/api/v1/jobs/globex-job-globex-run-0-00",
        "/api/v1/deadletters/runtime/1/4",
    ]
    for path in foreign_to_acme:
        assert envelope(api.get(path), 404, "not_found")["message"]
    for path in ("/api/v1/runs/nobody-run", "/api/v1/jobs/nobody-job", "/api/v1/deadletters/x/0/0"):
        envelope(api.get(path), 404, "not_found")
    foreign_to_globex = [
        "/api/v1/runs/acme-run-00",
        "/api/v1/runs/acme-run-00/deltas",
        "/api/v1/jobs/acme-job-acme-run-00-01",
        f"/api/v1/images/{digest(1)}",
        "/api/v1/deadletters/jobs/0/1",
    ]
    for path in foreign_to_globex:
        envelope(api.get(path, "b-all"), 404, "not_found")
    assert api.get("/api/v1/jobs", params={"run_id": "globex-run-0"}).json()["items"] == []

    # policy cursor ids name tenants: acme sees the offset but not globex's policy id
    cursors = {c["id"]: c for c in api.get("/api/v1/cursors").json()["items"]}
    assert cursors["advisories"]["partitions"]
    assert "secret-policy" not in json.dumps(cursors["policy"])
    assert "secret-policy" in json.dumps(api.get("/api/v1/cursors", "b-all").json())

    deltas = api.get("/api/v1/runs/acme-run-00/deltas").json()
    assert deltas["state"] == "completed"
    assert len(deltas["jobs"]) == 3
    assert {j["job_id"].split("-")[0] for j in deltas["jobs"]} == {"acme"}


def test_impact_preview_from_read_model_is_tenant_scoped(api: Api) -> None:
    body = {"selector": {"digests": [SHARED_DIGEST, digest(1), digest(404)]}}
    resp = api.post("/api/v1/impact-preview", json=body)
    assert resp.status_code == 200, resp.text
    out = resp.json()
    assert out["mode"] == "read-model"
    assert [i["image_digest"] for i in out["images"]] == sorted([SHARED_DIGEST, digest(1)])
    b = api.post("/api/v1/impact-preview", "b-all", json={"selector": {"all": True}}).json()
    assert [i["image_digest"] for i in b["images"]] == [SHARED_DIGEST]
    envelope(api.post("/api/v1/impact-preview", json={}), 422, "validation_error")


# ---------------------------------------------------------------- auth and errors


def test_bad_token_401_and_wrong_scope_403(api: Api) -> None:
    error = envelope(api.client.get(api.url + "/api/v1/runs"), 401, "unauthorized")
    assert "token" in error["message"]
    envelope(api.get("/api/v1/runs", "nobody"), 401, "unauthorized")
    resp = api.client.get(api.url + "/api/v1/runs", headers={"Authorization": "Basic Zm9vOmJhcg=="})
    envelope(resp, 401, "unauthorized")
    assert resp.headers["www-authenticate"].startswith("Bearer")
    recheck = {"selector": {"all": True}}
    envelope(api.post("/api/v1/rechecks", "a-read", json=recheck), 403, "forbidden")
    envelope(api.post("/api/v1/runs/acme-run-01/cancel", "a-write"), 403, "forbidden")
    envelope(api.post("/api/v1/runs/acme-run-00/retry", "a-read"), 403, "forbidden")
    envelope(api.post("/api/v1/deadletters/jobs/0/1/replay", "a-write"), 403, "forbidden")


def test_every_error_uses_the_envelope(api: Api) -> None:
    envelope(api.get("/api/v1/nope"), 404, "not_found")
    envelope(api.get("/api/v1/runs", params={"limit": 0}), 422, "validation_error")
    envelope(api.get("/api/v1/runs", params={"cursor": "garbage!"}), 422, "invalid_cursor")
    # a cursor of another listing is refused too
    jobs_cursor = api.get("/api/v1/jobs", params={"limit": 1}).json()["next_cursor"]
    envelope(api.get("/api/v1/runs", params={"cursor": jobs_cursor}), 422, "invalid_cursor")
    envelope(api.post("/api/v1/rechecks", json={"selector": {}, "bogus": 1}), 422, "validation_error")
    envelope(
        api.post("/api/v1/rechecks", content=b"{not json", headers={"Content-Type": "application/json"}), 422
    )
    envelope(api.get("/api/v1/runs", params={"min_position": "nonsense"}), 422, "invalid_min_position")
    envelope(api.get("/api/v1/runs", params={"min_position": "other-topic:0:1"}), 422, "invalid_min_position")


def test_oversized_body_is_413_before_reading_it(api: Api) -> None:
    big = b"x" * (64 * 1024 + 1)
    envelope(api.post("/api/v1/rechecks", content=big), 413, "payload_too_large")

    def chunks() -> Iterator[bytes]:  # no Content-Length: counted while streaming
        for _ in range(200):
            yield b" " * 1024

    envelope(api.post("/api/v1/rechecks", content=chunks()), 413, "payload_too_large")
    body = b"y" * (64 * 1024 + 1)
    resp = api.client.post(
        api.url + "/api/v1/feeds/advisories",
        content=body,
        headers={"X-Stella-Signature": sign_body(SECRET.encode(), body, "advisories", time.time())},
    )
    envelope(resp, 413, "payload_too_large")


# ---------------------------------------------------------------- pagination


def test_pagination_is_deterministic_and_complete(api: Api) -> None:
    first = collect(api, "/api/v1/runs", limit=5)
    again = collect(api, "/api/v1/runs", limit=5)
    by_one = collect(api, "/api/v1/runs", limit=1)
    whole = api.get("/api/v1/runs", params={"limit": 1000}).json()
    assert whole["next_cursor"] is None
    ids = [r["id"] for r in first]
    assert ids == [r["id"] for r in again] == [r["id"] for r in by_one] == [r["id"] for r in whole["items"]]
    assert len(ids) == len(set(ids)) == 12
    assert ids == [r["id"] for r in sorted(first, key=lambda r: (r["created_at"], r["id"]))]
    completed = collect(api, "/api/v1/runs", limit=2, state="completed")
    assert [r["id"] for r in completed] == [i for i in ids if int(i[-2:]) % 2 == 0]
    jobs = collect(api, "/api/v1/jobs", limit=1)
    assert [j["id"] for j in jobs] == sorted(j["id"] for j in jobs)
    failed = api.get("/api/v1/jobs", params={"status": "failed"}).json()["items"]
    assert [j["image_digest"] for j in failed] == [digest(2)]


# ---------------------------------------------------------------- writes to Kafka


def records(api: Api, logical: str, expect: int) -> list[Any]:
    return asyncio.run(read_all(api.bootstrap, api.settings.topic(logical), expect=expect, timeout=20))


def test_post_recheck_produces_a_recheck_keyed_by_tenant(api: Api) -> None:
    body = {"selector": {"namespaces": ["prod"]}, "reason": "policy tightened", "priority": "high"}
    first = api.post("/api/v1/rechecks", "a-write", json=body, headers={"Idempotency-Key": "k1"})
    assert first.status_code == 202, first.text
    out = first.json()
    pos = out["position"]
    assert pos["topic"] == api.settings.topic("rechecks")
    assert out["min_position"] == f"{pos['topic']}:{pos['partition']}:{pos['offset']}"
    again = api.post("/api/v1/rechecks", "a-write", json=body, headers={"Idempotency-Key": "k1"}).json()
    assert again["recheck_id"] == out["recheck_id"]
    assert again["position"] == pos
    assert again["replayed"]
    envelope(
        api.post(
            "/api/v1/rechecks", "a-write", json={**body, "reason": "x"}, headers={"Idempotency-Key": "k1"}
        ),
        409,
        "idempotency_conflict",
    )
    other = api.post("/api/v1/rechecks", "a-write", json=body, headers={"Idempotency-Key": "k2"}).json()
    assert other["recheck_id"] != out["recheck_id"]

    got = records(api, "rechecks", 2)
    assert len(got) == 2
    first_record = next(r for r in got if r.partition == pos["partition"] and r.offset == pos["offset"])
    assert first_record.key == b"acme"
    message = Recheck.model_validate_json(first_record.value)
    assert message.tenant == "acme"
    assert message.recheck_id == out["recheck_id"]
    assert message.selector.namespaces == ["prod"]
    assert message.priority == "high"
    assert message.reason == "policy tightened"
    assert message.retry_of is None


def test_runtime_cancel_retry_and_replay_produce(api: Api) -> None:
    event = {
        "image_digest": digest(1),
        "cluster": "eu-1",
        "namespace": "prod",
        "state": "running",
        "observed_at": "2025-03-01T12:00:00Z",
    }
    resp = api.post("/api/v1/runtime-events", "a-write", json=event)
    assert resp.status_code == 202, resp.text
    envelope(api.post("/api/v1/runtime-events", "a-write", json={**event, "tenant": "globex"}), 403)
    envelope(api.post("/api/v1/runtime-events", "a-write", json={**event, "state": "dancing"}), 422)
    (rt,) = records(api, "runtime", 1)
    assert rt.key == digest(1).encode()
    assert RuntimeEvent.model_validate_json(rt.value).tenant == "acme"

    # cancel: only a live run of your own
    envelope(api.post("/api/v1/runs/acme-run-00/cancel"), 409, "conflict")
    envelope(api.post("/api/v1/runs/globex-run-1/cancel"), 404, "not_found")
    resp = api.post("/api/v1/runs/acme-run-01/cancel", json={"reason": "wrong window"})
    assert resp.status_code == 202, resp.text
    (cancel,) = records(api, "run-inputs", 1)
    assert cancel.key == b"acme-run-01"
    request = RunCancelRequested.model_validate_json(cancel.value)
    assert (request.tenant, request.reason, request.requested_by) == ("acme", "wrong window", "a-all")

    # retry: only a finished run; the recheck names the images whose jobs did not complete
    envelope(api.post("/api/v1/runs/acme-run-01/retry"), 409, "conflict")
    envelope(api.post("/api/v1/runs/globex-run-0/retry"), 404)
    resp = api.post("/api/v1/runs/acme-run-00/retry")
    assert resp.status_code == 202, resp.text
    (retry,) = records(api, "rechecks", 1)
    message = Recheck.model_validate_json(retry.value)
    assert message.retry_of == "acme-run-00"
    assert message.selector.digests == [digest(2)]
    assert retry.key == b"acme"

    # replay: the original bytes go back to the source topic
    envelope(api.post("/api/v1/deadletters/runtime/1/4/replay"), 404)
    resp = api.post("/api/v1/deadletters/jobs/0/1/replay")
    assert resp.status_code == 202, resp.text
    (replayed,) = records(api, "jobs", 1)
    assert JobCommand.model_validate_json(replayed.value).job_id == "acme-job-acme-run-00-09"
    resp = api.post("/api/v1/deadletters/runtime/1/4/replay", "b-all")
    assert resp.status_code == 202, resp.text
    runtime = records(api, "runtime", 2)
    assert {r.key for r in runtime} == {digest(1).encode(), SHARED_DIGEST.encode()}


# ---------------------------------------------------------------- feed webhooks


def test_feed_webhook_hmac_rate_limit_and_produce(api: Api) -> None:
    body = (sample_data() / "osv" / "ghsa" / "GHSA-vh95-rmgr-6w4m.json").read_bytes()
    url = api.url + "/api/v1/feeds/advisories"
    envelope(api.client.post(url, content=body), 401, "unauthorized")
    bad = sign_body(b"wrong-secret", body, "advisories", time.time())
    envelope(api.client.post(url, content=body, headers={"X-Stella-Signature": bad}), 401, "unauthorized")
    tampered = sign_body(SECRET.encode(), body, "advisories", time.time())
    resp = api.client.post(url, content=body + b" ", headers={"X-Stella-Signature": tampered})
    envelope(resp, 401, "unauthorized")

    good = {"X-Stella-Signature": sign_body(SECRET.encode(), body, "advisories", time.time())}
    resp = api.client.post(url, content=body, headers=good)
    assert resp.status_code == 202, resp.text
    assert resp.json()["accepted"] == 1
    (adv,) = records(api, "advisories", 1)
    assert adv.key == b"GHSA-vh95-rmgr-6w4m"

    replayed = api.client.post(url, content=body, headers=good)  # byte for byte: refused (issue 14 #10)
    envelope(replayed, 401, "unauthorized")

    def fresh() -> dict[str, str]:
        return {"X-Stella-Signature": sign_body(SECRET.encode(), body, "advisories", time.time())}

    statuses = [api.client.post(url, content=body, headers=fresh()) for _ in range(4)]
    limited = [r for r in statuses if r.status_code == 429]
    assert limited, [r.status_code for r in statuses]
    envelope(limited[0], 429, "rate_limited")
    assert int(limited[0].headers["retry-after"]) >= 1

    vex = (sample_data() / "vex" / "openvex").glob("*.json")
    doc = sorted(vex)[0].read_bytes()
    time.sleep(2.1)  # one token back
    resp = api.client.post(
        api.url + "/api/v1/feeds/vex",
        content=doc,
        headers={"X-Stella-Signature": sign_body(SECRET.encode(), doc, "vex", time.time())},
    )
    assert resp.status_code in (202, 422), resp.text
    envelope(api.client.post(api.url + "/api/v1/feeds/policy", content=doc, headers=good), 422)


# ---------------------------------------------------------------- read your writes


def test_min_position_waits_for_the_projection_checkpoint(api: Api) -> None:
    topic = api.settings.topic("run-events")
    timer = threading.Timer(1.0, lambda: api.store.write_checkpoints([Checkpoint(GROUP, topic, 1, 7)]))
    timer.start()
    try:
        started = time.monotonic()
        resp = api.get("/api/v1/runs", params={"min_position": f"{topic}:1:7", "limit": 1})
        waited = time.monotonic() - started
    finally:
        timer.cancel()
    assert resp.status_code == 200, resp.text
    assert 0.8 <= waited < 4.0
    # already there: no wait
    assert api.get("/api/v1/runs/acme-run-00", params={"min_position": f"{topic}:1:3"}).status_code == 200
    # never reached: bounded wait, then 503 in the envelope
    started = time.monotonic()
    resp = api.get("/api/v1/runs", params={"min_position": f"{topic}:0:1"})
    error = envelope(resp, 503, "not_caught_up")
    assert 3.5 <= time.monotonic() - started < 10
    assert resp.headers["retry-after"] == "1"
    assert topic in error["message"]


# ---------------------------------------------------------------- system endpoints


def test_health_ready_metrics_and_keys(api: Api) -> None:
    assert api.client.get(api.url + "/healthz").json() == {"status": "ok"}
    ready = api.client.get(api.url + "/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"] == {"kafka": "ok", "mongo": "ok"}
    api.get("/api/v1/runs/acme-run-00")
    api.get("/api/v1/runs/acme-run-03")
    api.get("/api/v1/runs/nothing")
    text = api.client.get(api.url + "/metrics").text
    assert 'stella_api_requests_total{method="GET",route="/api/v1/runs/{run_id}",status="200"} 2.0' in text
    assert 'route="/api/v1/runs/{run_id}",status="404"' in text
    assert "acme-run-00" not in text
    # the project-wide metrics (default registry) that the dashboard's API panels query
    shared = [line for line in text.splitlines() if line.startswith("scheduler_api_requests_total{")]
    assert any('route="/api/v1/runs/{run_id}",status="200"' in line for line in shared), shared
    assert any('route="/api/v1/runs/{run_id}",status="404"' in line for line in shared), shared
    assert 'scheduler_api_request_seconds_bucket{le="0.005",route="/api/v1/runs/{run_id}"}' in text
    assert "scheduler_worker_up" in text
    keys = api.client.get(api.url + "/api/v1/keys").json()["keys"]
    assert len(keys) == 1
    assert len(keys[0]["keyid"]) == 64
    assert keys[0]["algorithm"] == "ed25519"
