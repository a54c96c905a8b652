"""Issue 14 #2 #4 #5 #6 #11: the API's edge, one regression test per reproduced defect, against the app with
in-memory backends."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient

from agents.settings import Settings
from controlplane.app import ApiDeps, create_app
from controlplane.auth import token_hash
from controlplane.backends import MemoryPublisher, MemoryReadModels
from controlplane.config import ApiConfig
from controlplane.errors import ApiError
from controlplane.guards import MAX_JSON_DEPTH, json_problem
from controlplane.paging import decode_cursor
from controlplane.views import cursor_view

T0 = datetime(2025, 3, 1, tzinfo=UTC)
SCOPES = ["scheduler.runs.read", "scheduler.runs.write", "scheduler.runs.manage"]
AUTH = {"Authorization": "Bearer tok-all"}
DIGEST = "sha256:" + "ab" * 32


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[TestClient, MemoryPublisher]]:
    path = tmp_path / "access.json"
    tokens = [{"token_sha256": token_hash("tok-all"), "tenant": "acme", "scopes": SCOPES, "name": "t"}]
    path.write_text(json.dumps({"tokens": tokens}))
    publisher = MemoryPublisher(partitions=2)
    deps = ApiDeps(publisher=publisher, read_models=MemoryReadModels(), clock=lambda: T0)
    config = ApiConfig(tokens_path=str(path), max_body_bytes=4_000_000, min_position_timeout_seconds=10)
    app = create_app(Settings(topic_prefix="edge.", partitions=6, max_message_bytes=100_000), deps, config)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client, publisher


def error_of(response: Any) -> dict[str, Any]:
    body = response.json()
    assert set(body) == {"error"}
    error: dict[str, Any] = body["error"]
    return error


def runtime_event(**changes: Any) -> dict[str, Any]:
    return {
        "image_digest": DIGEST,
        "cluster": "c",
        "namespace": "n",
        "state": "running",
        "observed_at": "2025-03-01T00:00:00Z",
        **changes,
    }


def token(items: list[Any]) -> str:
    return base64.urlsafe_b64encode(orjson.dumps(items)).decode().rstrip("=")


# ---------------------------------------------------------------- #2 digests


def test_a_200kb_image_digest_is_refused_with_422(api: tuple[TestClient, MemoryPublisher]) -> None:
    client, publisher = api
    huge = "sha256:" + "a" * 200_000
    response = client.post("/api/v1/runtime-events", json=runtime_event(image_digest=huge), headers=AUTH)
    assert response.status_code == 422
    assert error_of(response)["message"].startswith("image_digest: ")
    assert len(response.content) < 2000
    bad = client.post("/api/v1/rechecks", json={"selector": {"digests": ["sha256:xyz"]}}, headers=AUTH)
    assert bad.status_code == 422
    assert "selector.digests[0]" in error_of(bad)["message"]
    assert publisher.records == []
    ok = client.post("/api/v1/runtime-events", json=runtime_event(), headers=AUTH)
    assert ok.status_code == 202


# ---------------------------------------------------------------- #4 cursors


@pytest.mark.parametrize("route", ["runs", "windows", "jobs", "images"])
@pytest.mark.parametrize("number", [2**63, 2**64 + 5, -(2**63) - 1])
def test_a_cursor_holding_a_huge_integer_is_422(
    api: tuple[TestClient, MemoryPublisher], route: str, number: int
) -> None:
    client, _ = api
    cursor = base64.urlsafe_b64encode(json.dumps([1, route, number, "x"]).encode()).decode().rstrip("=")
    response = client.get(f"/api/v1/{route}", params={"cursor": cursor}, headers=AUTH)
    assert response.status_code == 422
    assert error_of(response)["code"] == "invalid_cursor"


def test_decode_cursor_keeps_int64_and_refuses_beyond() -> None:
    assert decode_cursor("runs", token([1, "runs", 2**63 - 1, "x"])) == (2**63 - 1, "x")
    with pytest.raises(ApiError):
        decode_cursor("runs", token([1, "runs", True, "x"]))


# ---------------------------------------------------------------- #5 #6 surrogates and nesting


@pytest.mark.parametrize("route", ["/api/v1/rechecks", "/api/v1/runtime-events", "/api/v1/impact-preview"])
def test_a_lone_surrogate_is_422_not_500(api: tuple[TestClient, MemoryPublisher], route: str) -> None:
    client, _ = api
    body = b'{"selector": {"all": true}, "reason": "\\udfff", "cluster": "\\udfff"}'
    response = client.post(route, content=body, headers={**AUTH, "Content-Type": "application/json"})
    assert response.status_code == 422
    assert error_of(response)["code"] == "invalid_json"


def test_an_inline_document_nested_deeper_than_255_is_422(api: tuple[TestClient, MemoryPublisher]) -> None:
    client, _ = api
    deep = '{"advisories": [' + '{"a":' * 300 + "1" + "}" * 300 + "]}"
    response = client.post(
        "/api/v1/impact-preview", content=deep, headers={**AUTH, "Content-Type": "application/json"}
    )
    assert response.status_code == 422
    assert f"deeper than {MAX_JSON_DEPTH}" in error_of(response)["message"]


def test_json_problem_is_strict() -> None:
    assert json_problem(b'{"a": [1, 2, {"b": "c"}]}') is None
    assert json_problem(b"") is None
    assert json_problem(b'"\\ud800"') is not None
    assert json_problem(b"[" * 65 + b"]" * 65) is not None
    assert json_problem(b"[" * 64 + b"]" * 64) is None
    assert json_problem(b"9223372036854775808") is not None
    assert json_problem(b"NaN") is not None


# ---------------------------------------------------------------- #11 lesser


def test_an_oversized_runtime_event_is_413_not_503(api: tuple[TestClient, MemoryPublisher]) -> None:
    client, publisher = api
    response = client.post("/api/v1/runtime-events", json=runtime_event(cluster="c" * 150_000), headers=AUTH)
    assert response.status_code == 413
    assert error_of(response)["code"] == "payload_too_large"
    assert publisher.records == []


def test_a_malformed_body_without_a_token_is_401(api: tuple[TestClient, MemoryPublisher]) -> None:
    client, _ = api
    for route in ("/api/v1/rechecks", "/api/v1/runtime-events", "/api/v1/impact-preview"):
        response = client.post(route, content=b"{not json", headers={"Content-Type": "application/json"})
        assert response.status_code == 401, route
        assert error_of(response)["code"] == "unauthorized"
        bad_token = {"Authorization": "Bearer nope", "Content-Type": "application/json"}
        assert client.post(route, content=b"{", headers=bad_token).status_code == 401


def test_booleans_are_strict(api: tuple[TestClient, MemoryPublisher]) -> None:
    client, publisher = api
    response = client.post("/api/v1/rechecks", json={"selector": {"all": "yes"}}, headers=AUTH)
    assert response.status_code == 422
    assert client.post("/api/v1/rechecks", json={"selector": {"all": 1}}, headers=AUTH).status_code == 422
    assert publisher.records == []
    assert client.post("/api/v1/rechecks", json={"selector": {"all": True}}, headers=AUTH).status_code == 202


def test_min_position_on_an_impossible_partition_is_refused_at_once(
    api: tuple[TestClient, MemoryPublisher],
) -> None:
    client, _ = api
    response = client.get("/api/v1/runs", params={"min_position": "edge.run-events:6:0"}, headers=AUTH)
    assert response.status_code == 422  # at once: the timeout is 10 s and TestClient would wait it out
    assert "partitions 0-5" in error_of(response)["message"]


def test_the_policy_cursor_shows_plain_keys_and_only_the_callers_entries() -> None:
    doc = {
        "_id": "policy",
        "source": "policy",
        "partitions": {
            "edge%2Epolicy:0": {"last_id": "acme/p@1", "offset": 3, "modified": "2025-01-01T00:00:00Z"},
            "edge%2Epolicy:1": {"last_id": "globex/secret@2", "offset": 9, "modified": None},
        },
    }
    view = cursor_view(doc, "acme")
    assert view["partitions"] == {
        "edge.policy:0": {"last_id": "acme/p@1", "offset": 3, "modified": "2025-01-01T00:00:00Z"}
    }
    assert "globex" not in json.dumps(cursor_view(doc, "acme"))
    assert cursor_view(doc, "initech")["partitions"] == {}


# ---------------------------------------------------------------- #10 webhooks


def test_webhook_replays_are_refused_and_failed_signatures_rate_limited(tmp_path: Path) -> None:
    from controlplane.auth import sign_body

    path = tmp_path / "access.json"
    webhooks = [{"source": "osv", "secret": "s3", "kinds": ["advisories"]}]
    path.write_text(json.dumps({"tokens": [], "webhooks": webhooks}))
    deps = ApiDeps(publisher=MemoryPublisher(), read_models=MemoryReadModels(), clock=lambda: T0)
    app = create_app(Settings(topic_prefix="wh."), deps, ApiConfig(tokens_path=str(path), feed_burst=50))
    url = "/api/v1/feeds/advisories"
    body = b"{}"
    with TestClient(app, raise_server_exceptions=False) as client:
        signed = {"X-Stella-Signature": sign_body(b"s3", body, "advisories", T0.timestamp(), "nonce-0001")}
        first = client.post(url, content=body, headers=signed)
        assert first.status_code == 422  # signature accepted; "{}" holds no advisory
        replay = client.post(url, content=body, headers=signed)
        assert replay.status_code == 401
        assert "already received" in error_of(replay)["message"]
        old = {
            "X-Stella-Signature": sign_body(b"s3", body, "advisories", T0.timestamp() - 3600, "nonce-0002")
        }
        stale = client.post(url, content=body, headers=old)
        assert stale.status_code == 401
        assert "window" in error_of(stale)["message"]
        statuses = [
            client.post(
                url, content=body, headers={"X-Stella-Signature": f"t=1,n=guess-{i:04},sha256={'0' * 64}"}
            )
            for i in range(15)
        ]
        limited = [r for r in statuses if r.status_code == 429]
        assert limited
        assert int(limited[0].headers["Retry-After"]) >= 1
        assert {r.status_code for r in statuses} <= {401, 429}


# ---------------------------------------------------------------- #13 a job's run


def test_a_run_named_by_a_job_is_never_404_only_not_caught_up(tmp_path: Path) -> None:
    from projections.fold import JOBS, DocUpdate
    from projections.store import MemoryStore

    path = tmp_path / "access.json"
    tokens = [
        {"token_sha256": token_hash("tok-all"), "tenant": "acme", "scopes": SCOPES, "name": "a"},
        {"token_sha256": token_hash("tok-g"), "tenant": "globex", "scopes": SCOPES, "name": "g"},
    ]
    path.write_text(json.dumps({"tokens": tokens}))
    store = MemoryStore()
    job = {"tenant": "acme", "run_id": "run-1", "image_digest": DIGEST, "status": "queued"}
    store.apply_documents([DocUpdate(JOBS, "job-1", "x.jobs:0", 0, set=job)])
    deps = ApiDeps(publisher=MemoryPublisher(), read_models=MemoryReadModels(store), clock=lambda: T0)
    app = create_app(Settings(topic_prefix="r."), deps, ApiConfig(tokens_path=str(path)))
    with TestClient(app, raise_server_exceptions=False) as client:
        lagging = client.get("/api/v1/runs/run-1", headers=AUTH)
        assert lagging.status_code == 503
        assert error_of(lagging)["code"] == "not_caught_up"
        assert lagging.headers["Retry-After"] == "1"
        assert client.get("/api/v1/runs/run-2", headers=AUTH).status_code == 404
        # another tenant learns nothing: its answer is the plain 404
        other = client.get("/api/v1/runs/run-1", headers={"Authorization": "Bearer tok-g"})
        assert other.status_code == 404
