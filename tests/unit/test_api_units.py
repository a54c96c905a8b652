"""Control-plane pieces without services: access file, tokens, HMAC, rate limit, cursors, views, and the app
over real HTTP with the in-memory read models and publisher."""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from agents.settings import Settings
from controlplane.app import ApiDeps, create_app
from controlplane.auth import AccessControl, sign_body, token_hash
from controlplane.backends import MemoryPublisher, MemoryReadModels
from controlplane.config import ApiConfig, ConfigError, parse_access
from controlplane.errors import ApiError
from controlplane.paging import decode_cursor, encode_cursor, parse_min_position
from controlplane.ratelimit import RateLimiter
from controlplane.testing import ServerThread
from controlplane.views import cursor_view, deadletter_tenant, public
from schemas.messages import Recheck
from tests.conftest import sample_data

READ = "scheduler.runs.read"


def access_doc(**extra: Any) -> dict[str, Any]:
    return {
        "tokens": [
            {"token_sha256": token_hash("tok-a"), "tenant": "acme", "scopes": [READ], "name": "ci"},
            {
                "token_sha256": token_hash("tok-b"),
                "tenant": "globex",
                "scopes": [READ, "scheduler.runs.write"],
            },
        ],
        **extra,
    }


def test_access_file_parses_and_refuses_plain_tokens_and_unknown_scopes(tmp_path: Path) -> None:
    access = parse_access(access_doc(webhooks=[{"source": "osv", "secret": "s", "kinds": ["advisories"]}]))
    assert [t.tenant for t in access.tokens] == ["acme", "globex"]
    assert access.tokens[1].name == "token-1"
    assert access.webhooks[0].kinds == frozenset({"advisories"})
    with pytest.raises(ConfigError, match="never the token"):
        parse_access({"tokens": [{"token": "x", "tenant": "a"}]})
    with pytest.raises(ConfigError, match="unknown scopes"):
        parse_access({"tokens": [{"token_sha256": "a" * 64, "tenant": "a", "scopes": ["admin"]}]})
    with pytest.raises(ConfigError, match="64 hex"):
        parse_access({"tokens": [{"token_sha256": "abc", "tenant": "a"}]})
    with pytest.raises(ConfigError, match="unknown keys"):
        parse_access({"tokenz": []})
    env = parse_access({}, env_secret="from-env")
    assert [h.source for h in env.webhooks] == ["default"]
    assert "from-env" not in repr(env)
    yaml_file = tmp_path / "access.yaml"
    yaml_file.write_text(
        f"tokens:\n  - token_sha256: {token_hash('t')}\n    tenant: x\n    scopes: [{READ}]\n"
    )
    assert AccessControl(str(yaml_file)).authenticate("t") is not None


def test_tokens_map_to_tenant_and_scopes_and_the_file_reloads(tmp_path: Path) -> None:
    path = tmp_path / "access.json"
    path.write_text(json.dumps(access_doc()))
    control = AccessControl(str(path))
    principal = control.authenticate("tok-a")
    assert principal is not None
    assert (principal.tenant, principal.scopes, principal.name) == ("acme", frozenset({READ}), "ci")
    assert control.authenticate("tok-c") is None
    assert control.authenticate("") is None
    doc = access_doc()
    doc["tokens"].append({"token_sha256": token_hash("tok-c"), "tenant": "initech", "scopes": []})
    path.write_text(json.dumps(doc))
    os.utime(path, (1, 1))
    assert control.authenticate("tok-c") is not None
    path.write_text("{broken")
    os.utime(path, (2, 2))
    assert control.authenticate("tok-c") is not None  # a broken file keeps the previous one


def test_webhook_signature_is_checked_against_the_raw_body() -> None:
    access = parse_access({"webhooks": [{"source": "osv", "secret": "s3", "kinds": ["advisories", "vex"]}]})
    control = AccessControl("", access=access)
    body = b'{"id": "GHSA-x"}'
    now = 1_700_000_000.0

    def good(n: str = "nonce-0001") -> str:
        return sign_body(b"s3", body, "advisories", now, n)

    found, why = control.webhook_source("advisories", body, good(), now)
    assert found is not None
    assert (found.source, why) == ("osv", "")
    # the kind is signed: the same signature does not post VEX
    assert control.webhook_source("vex", body, good("nonce-0002"), now) == (None, "signature")
    assert control.webhook_source("advisories", body + b" ", good("nonce-0003"), now) == (None, "signature")
    assert control.webhook_source("advisories", body, None, now) == (None, "signature")
    legacy = "sha256=" + hashlib.sha256(body).hexdigest()
    assert control.webhook_source("advisories", body, legacy, now) == (None, "signature")
    assert control.webhook_source("advisories", body, good("nonce-0004"), now + 301) == (None, "stale")
    # a byte-for-byte replay is refused
    assert control.webhook_source("advisories", body, good(), now + 1) == (None, "replayed")


def test_token_bucket_allows_a_burst_then_answers_retry_after() -> None:
    now = [0.0]
    limiter = RateLimiter(rate=2.0, burst=3, clock=lambda: now[0])
    assert [limiter.take("a") for _ in range(3)] == [0, 0, 0]
    assert limiter.take("a") == 1
    assert limiter.take("b") == 0  # per source
    now[0] += 0.5
    assert limiter.take("a") == 0
    slow = RateLimiter(rate=0.2, burst=1, clock=lambda: now[0])
    assert slow.take("x") == 0
    assert slow.take("x") == 5
    with pytest.raises(ValueError, match="rate"):
        RateLimiter(rate=0, burst=1)


def test_cursors_round_trip_and_are_bound_to_their_listing() -> None:
    token = encode_cursor("runs", ("2025-01-01T00:00:00Z", "run-1"))
    assert token is not None
    assert decode_cursor("runs", token) == ("2025-01-01T00:00:00Z", "run-1")
    assert encode_cursor("runs", None) is None
    assert decode_cursor("runs", None) is None
    for bad in ("@@@", base64.urlsafe_b64encode(b"[1]").decode(), token + "x"):
        with pytest.raises(ApiError):
            decode_cursor("runs", bad)
    with pytest.raises(ApiError):
        decode_cursor("jobs", token)


def test_min_position_parsing() -> None:
    pos = parse_min_position("p.run-events:3:42")
    assert (pos.topic, pos.partition, pos.offset) == ("p.run-events", 3, 42)
    for bad in ("x", "t:1", ":1:2", "t:a:1", "t:1:-2"):
        with pytest.raises(ApiError):
            parse_min_position(bad)


def test_dead_letter_attribution_and_policy_cursor_redaction() -> None:
    value = base64.b64encode(orjson.dumps({"tenant": "acme", "x": 1})).decode()
    assert deadletter_tenant({"_id": "a", "value_b64": value}) == "acme"
    assert deadletter_tenant({"_id": "a", "job": {"tenant": "globex"}, "value_b64": value}) == "globex"
    assert deadletter_tenant({"_id": "a", "value_b64": base64.b64encode(b"\xff").decode()}) is None
    assert deadletter_tenant({"_id": "a", "value_b64": "%%%"}) is None
    assert deadletter_tenant({"_id": "a"}) is None
    doc = {
        "_id": "policy",
        "_pos": {"x:0": 1},
        "source": "policy",
        "modified": "2025-01-01T00:00:00Z",
        "partitions": {
            "0": {"last_id": "acme/p@1", "offset": 3, "modified": "2025-01-01T00:00:00Z"},
            "1": {"last_id": "globex/secret@2", "offset": 9, "modified": "2025-01-01T00:00:00Z"},
        },
    }
    view = cursor_view(doc, "acme")
    assert view["partitions"]["0"]["last_id"] == "acme/p@1"
    assert "1" not in view["partitions"]  # another tenant's entry is not shown at all (issue 14 #11)
    assert "modified" not in view
    assert "_pos" not in public(doc)


# ---------------------------------------------------------------- the app, in memory, over HTTP

T0 = datetime(2025, 3, 1, tzinfo=UTC)


@pytest.fixture
def memory_api(tmp_path: Path) -> Iterator[tuple[str, MemoryPublisher]]:
    path = tmp_path / "access.json"
    path.write_text(json.dumps(access_doc()))
    publisher = MemoryPublisher(partitions=2)
    deps = ApiDeps(publisher=publisher, read_models=MemoryReadModels(), clock=lambda: T0)
    config = ApiConfig(tokens_path=str(path), max_body_bytes=2_000_000)
    app = create_app(Settings(topic_prefix="u."), deps, config)
    with ServerThread(app) as server:
        yield server.url, publisher


def test_recheck_id_is_deterministic_and_tenant_bound(memory_api: tuple[str, MemoryPublisher]) -> None:
    url, publisher = memory_api
    body = {"selector": {"all": True}, "reason": "r"}
    headers = {"Authorization": "Bearer tok-b"}
    first = httpx.post(url + "/api/v1/rechecks", json=body, headers=headers).json()
    second = httpx.post(url + "/api/v1/rechecks", json=body, headers=headers).json()
    keyed = httpx.post(
        url + "/api/v1/rechecks", json=body, headers={**headers, "Idempotency-Key": "z"}
    ).json()
    assert first["recheck_id"] == second["recheck_id"] != keyed["recheck_id"]
    assert [r[0] for r in publisher.records] == ["u.rechecks"] * 3
    message = Recheck.model_validate_json(publisher.records[0][4] or b"")
    assert message.tenant == "globex"
    assert message.requested_at == T0
    assert publisher.records[0][3] == b"globex"
    forbidden = httpx.post(url + "/api/v1/rechecks", json=body, headers={"Authorization": "Bearer tok-a"})
    assert forbidden.status_code == 403
    assert forbidden.json()["error"]["code"] == "forbidden"


def test_inline_impact_preview_runs_the_stream_core(memory_api: tuple[str, MemoryPublisher]) -> None:
    url, _ = memory_api
    sbom = json.loads((sample_data() / "sbom" / "cyclonedx" / "cern-lhc-vdm-editor.json").read_text())
    advisory = json.loads((sample_data() / "osv" / "ghsa" / "GHSA-vh95-rmgr-6w4m.json").read_text())
    digest = "sha256:" + "a" * 64
    body = {"sboms": [{"document": sbom, "image_digest": digest}], "advisories": [advisory]}
    resp = httpx.post(url + "/api/v1/impact-preview", json=body, headers={"Authorization": "Bearer tok-a"})
    assert resp.status_code == 200, resp.text
    out = resp.json()
    assert out["mode"] == "inline"
    assert out["images"] == [digest]
    assert {j["tenant"] for j in out["jobs"]} == {"acme"}
    lines = out["explanations"][digest]
    assert any(
        line["advisory_id"] == "GHSA-vh95-rmgr-6w4m" and line["status"] == "affected" for line in lines
    )
    bad = httpx.post(
        url + "/api/v1/impact-preview",
        json={"advisories": [{"nope": 1}], "sboms": [{"document": sbom}]},
        headers={"Authorization": "Bearer tok-a"},
    )
    assert bad.status_code == 422
    assert bad.json()["error"]["code"] == "invalid_document"


def test_unconfigured_webhooks_and_keys(memory_api: tuple[str, MemoryPublisher]) -> None:
    url, _ = memory_api
    resp = httpx.post(
        url + "/api/v1/feeds/vex", content=b"{}", headers={"X-Stella-Signature": "t=1,n=nonce-0001,sha256=00"}
    )
    assert resp.status_code == 401
    assert resp.json()["error"]["code"] == "unauthorized"
    assert httpx.get(url + "/api/v1/keys").json() == {"keys": []}
    assert httpx.get(url + "/readyz").json()["status"] == "ready"
