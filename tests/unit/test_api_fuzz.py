"""Issue 14: every API route's body and query parameters driven with hypothesis-generated input (lone
surrogates, deep nesting, huge numbers, wrong types, forged cursors) against the app with in-memory
backends: never a 500, every error in the ``{"error": {"code", "message"}}`` envelope."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agents.settings import Settings
from controlplane.app import ApiDeps, create_app
from controlplane.auth import token_hash
from controlplane.backends import MemoryPublisher, MemoryReadModels
from controlplane.config import ApiConfig

T0 = datetime(2025, 3, 1, tzinfo=UTC)
SCOPES = ["scheduler.runs.read", "scheduler.runs.write", "scheduler.runs.manage"]
AUTH = {"Authorization": "Bearer tok-all"}
DIGEST = "sha256:" + "ab" * 32

POSTS = [
    "/api/v1/impact-preview",
    "/api/v1/rechecks",
    "/api/v1/runtime-events",
    "/api/v1/runs/run-1/cancel",
    "/api/v1/runs/run-1/retry",
    "/api/v1/deadletters/dl-1/replay",
    "/api/v1/feeds/advisories",
    "/api/v1/feeds/vex",
]
GETS = [
    "/api/v1/runs",
    "/api/v1/runs/run-1",
    "/api/v1/runs/run-1/deltas",
    "/api/v1/jobs",
    "/api/v1/jobs/job-1",
    "/api/v1/images",
    f"/api/v1/images/{DIGEST}",
    "/api/v1/windows",
    "/api/v1/deadletters",
    "/api/v1/deadletters/dl-1",
    "/api/v1/cursors",
    "/api/v1/keys",
    "/healthz",
    "/readyz",
]
QUERY_NAMES = ["cursor", "limit", "state", "status", "run_id", "image_digest", "verdict", "min_position"]


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    path: Path = tmp_path_factory.mktemp("fuzz") / "access.json"
    tokens = [{"token_sha256": token_hash("tok-all"), "tenant": "acme", "scopes": SCOPES, "name": "fuzz"}]
    path.write_text(json.dumps({"tokens": tokens}))
    deps = ApiDeps(publisher=MemoryPublisher(partitions=2), read_models=MemoryReadModels(), clock=lambda: T0)
    config = ApiConfig(tokens_path=str(path), max_body_bytes=200_000, min_position_timeout_seconds=0.2)
    app = create_app(Settings(topic_prefix="fz."), deps, config)
    with TestClient(app, raise_server_exceptions=False) as test_client:
        yield test_client


surrogates = st.characters(min_codepoint=0xD800, max_codepoint=0xDFFF)
texts = st.text(st.one_of(st.characters(), surrogates), max_size=20)
numbers = st.one_of(
    st.integers(),
    st.integers(min_value=2**63 - 2, max_value=2**70),
    st.integers(min_value=-(2**70), max_value=-(2**63) + 2),
    st.floats(allow_nan=False, allow_infinity=False),
)
scalars = st.one_of(st.none(), st.booleans(), numbers, texts, st.sampled_from(["yes", "true", "1", DIGEST]))
FIELDS = [
    "selector", "all", "digests", "reason", "kind", "priority", "tenant", "image_digest", "cluster",
    "namespace", "state", "observed_at", "sboms", "advisories", "vex", "document", "window_seconds",
    "only_unfinished", "labels", "namespaces", "repositories",
]  # fmt: skip
json_values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(texts, st.sampled_from(FIELDS)), inner, max_size=5),
    ),
    max_leaves=12,
)


def nested(depth: int, leaf: str = "1") -> str:
    return '{"selector":' * 0 + "[" * depth + leaf + "]" * depth


def deep_document(depth: int) -> str:
    return '{"advisories": [' + '{"a":' * depth + "1" + "}" * depth + "]}"


def raw_json(value: Any) -> bytes:
    # ensure_ascii keeps lone surrogates as \\udxxx escapes: valid JSON text, impossible UTF-8.
    return json.dumps(value, ensure_ascii=True, allow_nan=False).encode()


bodies = st.one_of(
    json_values.map(raw_json),
    st.integers(1, 3000).map(lambda d: nested(d).encode()),
    st.integers(1, 3000).map(lambda d: deep_document(d).encode()),
    st.binary(max_size=40),
)


def cursor_token(items: Any) -> str:
    return base64.urlsafe_b64encode(raw_json(items)).decode().rstrip("=")


cursors = st.one_of(
    texts,
    st.tuples(st.sampled_from(["runs", "windows", "jobs", "images", "deadletters"]), numbers, texts).map(
        lambda t: cursor_token([1, t[0], t[1], t[2]])
    ),
    st.tuples(numbers, numbers).map(lambda t: f"fz.run-events:{t[0]}:{t[1]}"),
)
queries = st.dictionaries(st.sampled_from(QUERY_NAMES), st.one_of(cursors, numbers.map(str)), max_size=3)


def check(response: Any) -> None:
    assert response.status_code != 500, response.text
    if response.status_code >= 400:
        body = response.json()
        assert set(body) == {"error"}, body
        assert isinstance(body["error"]["code"], str)
        assert isinstance(body["error"]["message"], str)


def safe_params(params: dict[str, str]) -> list[tuple[str, str]]:
    # A URL cannot carry a lone surrogate as text; send its UTF-8 bytes percent-encoded the lenient way.
    return [(k, v.encode("utf-8", "surrogatepass").decode("latin-1")) for k, v in params.items()]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(route=st.sampled_from(POSTS), body=bodies)
def test_post_bodies_never_answer_500(client: TestClient, route: str, body: bytes) -> None:
    check(client.post(route, content=body, headers={"Content-Type": "application/json", **AUTH}))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(route=st.sampled_from([r for r in POSTS if "/feeds/" not in r]), body=bodies)
def test_writes_authenticate_before_reading_the_body(client: TestClient, route: str, body: bytes) -> None:
    response = client.post(route, content=body, headers={"Content-Type": "application/json"})
    check(response)
    assert response.status_code == 401


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(route=st.sampled_from(GETS), params=queries)
def test_get_queries_never_answer_500(client: TestClient, route: str, params: dict[str, str]) -> None:
    check(client.get(route, params=safe_params(params), headers=AUTH))
