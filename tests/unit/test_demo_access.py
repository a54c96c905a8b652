"""The demo's API access file: the token `make run` prints is accepted by the API, for the demo tenant,
with every scope (read, write, manage), the `curl` line it prints names that token, and the console URL it
prints signs in with it."""

from __future__ import annotations

import json
import stat
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest

from agents.settings import Settings
from cli.demo import TENANT, console_url, curl_line, demo_env, write_demo_access
from controlplane.app import ApiDeps, create_app
from controlplane.backends import MemoryPublisher, MemoryReadModels
from controlplane.config import SCOPES, ApiConfig, load_access
from controlplane.testing import ServerThread

T0 = datetime(2025, 3, 1, tzinfo=UTC)


@pytest.fixture
def demo_api(tmp_path: Path) -> Iterator[tuple[str, str, MemoryPublisher]]:
    path = tmp_path / "keys" / "demo-api-tokens.json"
    token = write_demo_access(path)
    publisher = MemoryPublisher(partitions=2)
    deps = ApiDeps(publisher=publisher, read_models=MemoryReadModels(), clock=lambda: T0)
    app = create_app(Settings(topic_prefix="demo."), deps, ApiConfig(tokens_path=str(path)))
    with ServerThread(app) as server:
        yield server.url, token, publisher


def test_the_access_file_holds_only_the_hash_for_the_demo_tenant_with_every_scope(tmp_path: Path) -> None:
    path = tmp_path / "access.json"
    token = write_demo_access(path)
    assert token not in path.read_text()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    (entry,) = load_access(str(path)).tokens
    assert (entry.tenant, entry.scopes) == (TENANT, frozenset(SCOPES))
    assert list(tmp_path.iterdir()) == [path]  # no temporary file left behind
    again = write_demo_access(path)
    assert again != token  # a new token per demo run
    assert len(json.loads(path.read_text())["tokens"]) == 1


def test_the_demo_token_reads_writes_and_manages(demo_api: tuple[str, str, MemoryPublisher]) -> None:
    url, token, publisher = demo_api
    auth = {"Authorization": f"Bearer {token}"}
    assert httpx.get(url + "/api/v1/runs").status_code == 401
    assert httpx.get(url + "/api/v1/runs", headers={"Authorization": "Bearer wrong"}).status_code == 401
    runs = httpx.get(url + "/api/v1/runs", headers=auth)
    assert runs.status_code == 200, runs.text
    recheck = httpx.post(url + "/api/v1/rechecks", json={"selector": {"all": True}}, headers=auth)
    assert recheck.status_code == 202, recheck.text
    assert [r[0] for r in publisher.records] == ["demo.rechecks"]
    assert publisher.records[0][3] == TENANT.encode()
    # manage: past the scope check, the unknown run answers 404, not 403
    cancel = httpx.post(url + "/api/v1/runs/run-nope/cancel", json={}, headers=auth)
    assert cancel.status_code == 404, cancel.text


def test_the_printed_curl_line_uses_the_token_and_the_api_reads_the_demo_access_file() -> None:
    line = curl_line("tok-123", port=8080)
    assert line == 'curl -H "Authorization: Bearer tok-123" http://127.0.0.1:8080/api/v1/runs'
    env = demo_env("127.0.0.1:9092", "mongodb://127.0.0.1:27017/", "stella-demo-1", "stella_demo_1")
    assert env["STELLA_API_TOKENS"].endswith("demo-api-tokens.json")


def test_the_printed_console_url_signs_in_with_the_demo_token(
    demo_api: tuple[str, str, MemoryPublisher],
) -> None:
    url, token, _ = demo_api
    assert console_url(8080) == "http://127.0.0.1:8080/console/"
    with httpx.Client(base_url=url, follow_redirects=True) as browser:
        start = browser.get("/console/")
        assert start.url.path == "/console/login"
        signed_in = browser.post("/console/login", data={"token": token, "next": "/console/runs"})
        assert signed_in.status_code == 200, signed_in.text
        assert signed_in.url.path == "/console/runs"
        assert f'<strong id="tenant">{TENANT}</strong>' in signed_in.text
