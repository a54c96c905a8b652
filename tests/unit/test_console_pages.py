"""The console's pages over the in-memory read models (no services): login and its cookie, CSRF on every
button, scopes, tenant isolation, the runs filters (newest first, trigger, time) through the API's own query."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from agents.settings import Settings
from controlplane.app import ApiDeps, create_app
from controlplane.auth import token_hash
from controlplane.backends import MemoryPublisher, MemoryReadModels
from controlplane.config import ApiConfig
from projections.fold import SCHEDULE_RUNS, DocUpdate, Position, fold
from projections.store import MemoryStore
from schemas.messages import DeltaSummary, RunEvent, ScheduleEvent, ScheduleSpec

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
SCOPES = ["scheduler.runs.read", "scheduler.runs.write", "scheduler.runs.manage"]


def run_event(run_id: str, tenant: str, state: str, minutes: int, retry_of: str | None = None) -> RunEvent:
    return RunEvent(
        run_id=run_id,
        tenant=tenant,
        state=state,  # type: ignore[arg-type]
        at=T0 + timedelta(minutes=minutes),
        jobs_total=2,
        jobs_done=2 if state == "completed" else 0,
        summary=DeltaSummary(added=3, new_findings=["GHSA-x"]),
        retry_of=retry_of,
    )


@pytest.fixture
def setup(tmp_path: Path) -> Iterator[tuple[TestClient, MemoryPublisher]]:
    path = tmp_path / "access.json"
    tokens = [
        {"token_sha256": token_hash("tok-all"), "tenant": "acme", "scopes": SCOPES, "name": "a"},
        {"token_sha256": token_hash("tok-read"), "tenant": "acme", "scopes": SCOPES[:1], "name": "r"},
        {"token_sha256": token_hash("tok-beta"), "tenant": "beta", "scopes": SCOPES, "name": "b"},
    ]
    path.write_text(json.dumps({"tokens": tokens}))
    store = MemoryStore()
    events = [
        run_event("run-old", "acme", "completed", 0),
        run_event("run-live", "acme", "running", 10),
        run_event("run-retry", "acme", "completed", 20, retry_of="run-old"),
        run_event("run-beta", "beta", "completed", 5),
    ]
    for offset, event in enumerate(events):
        store.apply_documents(fold(event, Position("c.run-events", 0, offset)))
    # run-live was fired by schedule "nightly" (its occurrence document, as the schedule fold writes it)
    occurrence = {
        "tenant": "acme",
        "schedule_id": "nightly",
        "fired": True,
        "nominal": "2026-01-05T12:10:00Z",
    }
    store.apply_documents([DocUpdate(SCHEDULE_RUNS, "run-live", "c.schedule-events:0", 0, set=occurrence)])
    publisher = MemoryPublisher()
    deps = ApiDeps(publisher=publisher, read_models=MemoryReadModels(store), clock=lambda: T0)
    app = create_app(Settings(topic_prefix="c."), deps, ApiConfig(tokens_path=str(path)))
    with TestClient(app, raise_server_exceptions=False, follow_redirects=False) as client:
        yield client, publisher


def login(client: TestClient, token: str) -> None:
    answer = client.post("/console/login", data={"token": token, "next": "/console/runs"})
    assert answer.status_code == 303, answer.text
    assert answer.headers["location"] == "/console/runs"


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([0-9a-f]{64})"', html)
    assert found, html[:2000]
    return found.group(1)


def run_ids(html: str) -> list[str]:
    return re.findall(r'<tr data-run-id="([^"]+)"', html)


def test_login_sets_an_httponly_strict_cookie_and_pages_need_it(
    setup: tuple[TestClient, MemoryPublisher],
) -> None:
    client, _ = setup
    away = client.get("/console/runs?state=completed")
    assert away.status_code == 303
    assert away.headers["location"].startswith("/console/login?next=%2Fconsole%2Fruns")
    bad = client.post("/console/login", data={"token": "nope"})
    assert bad.status_code == 401
    assert "not valid" in bad.text
    answer = client.post("/console/login", data={"token": "tok-all", "next": "https://evil.example/"})
    assert answer.headers["location"] == "/console/runs"  # no open redirect
    cookie = answer.headers["set-cookie"]
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie or "SameSite=Strict" in cookie
    assert "tok-all" in cookie
    page = client.get("/console/runs")
    assert page.status_code == 200
    assert page.headers["cache-control"] == "no-store"
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    # a cross-site login attempt is refused
    cross = client.post(
        "/console/login", data={"token": "tok-all"}, headers={"Origin": "https://evil.example"}
    )
    assert cross.status_code == 403


def test_runs_newest_first_with_filters_and_only_the_tenants(
    setup: tuple[TestClient, MemoryPublisher],
) -> None:
    client, _ = setup
    login(client, "tok-all")
    html = client.get("/console/runs").text
    assert run_ids(html) == ["run-retry", "run-live", "run-old"]
    assert "run-beta" not in html
    assert run_ids(client.get("/console/runs?state=completed").text) == ["run-retry", "run-old"]
    assert run_ids(client.get("/console/runs?trigger=retry").text) == ["run-retry"]
    assert run_ids(client.get("/console/runs?trigger=event").text) == ["run-old"]
    assert run_ids(client.get("/console/runs?trigger=schedule").text) == ["run-live"]
    assert run_ids(client.get("/console/runs?schedule=nightly").text) == ["run-live"]
    assert run_ids(client.get("/console/runs?schedule=other").text) == []
    assert "<td>schedule</td>" in html
    assert run_ids(client.get("/console/runs?since=2026-01-05T12:05&until=2026-01-05T12:15").text) == [
        "run-live"
    ]
    bad = client.get("/console/runs?since=yesterday")
    assert bad.status_code == 422
    # the API answers the same filters, newest first, paged
    auth = {"Authorization": "Bearer tok-all"}
    first = client.get("/api/v1/runs", params={"order": "desc", "limit": 2}, headers=auth).json()
    assert [r["id"] for r in first["items"]] == ["run-retry", "run-live"]
    rest = client.get(
        "/api/v1/runs", params={"order": "desc", "limit": 2, "cursor": first["next_cursor"]}, headers=auth
    )
    assert [r["id"] for r in rest.json()["items"]] == ["run-old"]
    # a cursor of the ascending listing is not one of the descending listing
    asc = client.get("/api/v1/runs", params={"limit": 1}, headers=auth).json()
    assert (
        client.get(
            "/api/v1/runs", params={"order": "desc", "cursor": asc["next_cursor"]}, headers=auth
        ).status_code
        == 422
    )


def test_run_page_and_another_tenants_run_is_not_found(setup: tuple[TestClient, MemoryPublisher]) -> None:
    client, _ = setup
    login(client, "tok-all")
    page = client.get("/console/runs/run-live")
    assert page.status_code == 200
    assert "DeltaSummary" in page.text
    assert "GHSA-x" in page.text
    assert "Cancel run" in page.text
    assert "Retry run" not in page.text
    assert client.get("/console/runs/run-beta").status_code == 404
    login(client, "tok-beta")
    assert client.get("/console/runs/run-live").status_code == 404
    assert run_ids(client.get("/console/runs").text) == ["run-beta"]


def test_buttons_need_the_csrf_token_and_the_manage_scope(setup: tuple[TestClient, MemoryPublisher]) -> None:
    client, publisher = setup
    login(client, "tok-all")
    csrf = csrf_of(client.get("/console/runs/run-live").text)
    refused = client.post("/console/runs/run-live/cancel", data={"csrf": "0" * 64})
    assert refused.status_code == 403
    assert client.post("/console/runs/run-live/cancel", data={}).status_code == 403
    assert publisher.records == []
    done = client.post("/console/runs/run-live/cancel", data={"csrf": csrf})
    assert done.status_code == 303
    assert "notice=" in done.headers["location"]
    assert [r[0] for r in publisher.records] == ["c.run-inputs"]
    # a terminal run cannot be cancelled: the API's 409 comes back as the page's error line
    again = client.post("/console/runs/run-old/cancel", data={"csrf": csrf})
    assert "error=" in again.headers["location"]
    # read-only token: no buttons, and a forged post is refused
    login(client, "tok-read")
    page = client.get("/console/runs/run-live").text
    assert "Cancel run" not in page
    csrf = csrf_of(page)  # the sign-out form still has one
    assert client.post("/console/runs/run-live/cancel", data={"csrf": csrf}).status_code == 403
    assert len(publisher.records) == 1


def test_logout_clears_the_cookie(setup: tuple[TestClient, MemoryPublisher]) -> None:
    client, _ = setup
    login(client, "tok-all")
    csrf = csrf_of(client.get("/console/runs").text)
    out = client.post("/console/logout", data={"csrf": csrf})
    assert out.status_code == 303
    assert client.get("/console/runs").status_code == 303


def test_the_stream_needs_a_token_or_a_session_and_refuses_foreign_ids(
    setup: tuple[TestClient, MemoryPublisher],
) -> None:
    client, _ = setup
    assert client.get("/api/v1/stream").status_code == 401
    bad = client.get(
        "/api/v1/stream", headers={"Authorization": "Bearer tok-all", "Last-Event-ID": "5:0-0-4"}
    )
    assert bad.status_code == 422
    assert bad.json()["error"]["code"] == "invalid_event_id"
    schema = client.get("/api/v1/openapi.json").json()
    assert "text/event-stream" in schema["paths"]["/api/v1/stream"]["get"]["responses"]["200"]["content"]
    assert not any(p.startswith("/console") for p in schema["paths"])


def test_open_streams_are_capped_per_tenant(setup: tuple[TestClient, MemoryPublisher]) -> None:
    from controlplane.routes_stream import STREAMS_PER_TENANT, OpenStreams

    client, _ = setup
    streams = OpenStreams()
    streams.count["acme"] = STREAMS_PER_TENANT
    client.app.state.open_streams = streams  # type: ignore[attr-defined]
    full = client.get("/api/v1/stream", headers={"Authorization": "Bearer tok-all"})
    assert full.status_code == 429
    assert full.headers["Retry-After"] == "5"
    assert streams.count["acme"] == STREAMS_PER_TENANT  # a refused stream holds no slot
    streams.leave("acme")
    assert streams.count["acme"] == STREAMS_PER_TENANT - 1


def test_runs_pages_follow_the_api_cursor(
    setup: tuple[TestClient, MemoryPublisher], monkeypatch: pytest.MonkeyPatch
) -> None:
    from controlplane.console import pages

    client, _ = setup
    monkeypatch.setattr(pages, "PAGE", 2)
    login(client, "tok-all")
    first = client.get("/console/runs?state=completed&trigger=").text
    assert run_ids(first) == ["run-retry", "run-old"]
    assert 'rel="next"' not in first
    first = client.get("/console/runs").text
    assert run_ids(first) == ["run-retry", "run-live"]
    older = re.search(r'href="(/console/runs\?[^"]+)" rel="next"', first)
    assert older
    second = client.get(older.group(1).replace("&amp;", "&")).text
    assert run_ids(second) == ["run-old"]
    assert 'rel="next"' not in second
    assert 'data-live="off"' in second  # only the newest unfiltered page follows the feed


def test_schedules_page_shows_next_fires_in_utc_and_local_time_and_the_preview(
    setup: tuple[TestClient, MemoryPublisher],
) -> None:
    client, publisher = setup
    store = client.app.state.runtime.read_models.memory  # type: ignore[attr-defined]
    spec = ScheduleSpec(cron="30 2 * * *", timezone="Europe/Berlin", name="nightly sweep")
    event = ScheduleEvent(
        tenant="acme", schedule_id="nightly", status="active", spec=spec, at=T0, decided_until=T0
    )
    store.apply_documents(fold(event, Position("c.schedule-events", 0, 1)))
    login(client, "tok-all")
    html = client.get("/console/schedules").text
    assert "nightly sweep" in html
    assert "2026-01-06T01:30:00Z</time> (2026-01-06 02:30 CET)" in html  # the clock is T0 (5 January)
    assert "0 selected" in html
    csrf = csrf_of(html)
    paused = client.post("/console/schedules/nightly/pause", data={"csrf": csrf})
    assert paused.status_code == 303
    assert "notice=" in paused.headers["location"]
    assert [r[0] for r in publisher.records] == ["c.schedules"]
    assert (
        client.post("/console/schedules/nightly/explode", data={"csrf": csrf})
        .headers["location"]
        .startswith("/console/schedules?error=")
    )
    login(client, "tok-beta")
    assert "nightly" not in client.get("/console/schedules").text


def test_simulation_runs_have_their_own_trigger() -> None:
    """A queued simulation is a run (id ``sim-…``): it is listed under trigger ``simulation`` only, never
    as an event-, schedule- or retry-triggered run."""
    from controlplane.console.pages import run_trigger
    from controlplane.routes_read import run_filter
    from projections.store import matches

    store = MemoryStore()
    events = [
        run_event("run-old", "acme", "completed", 0),
        run_event("run-retry", "acme", "completed", 20, retry_of="run-old"),
        run_event("sim-0123abcd", "acme", "completed", 30),
    ]
    for offset, event in enumerate(events):
        store.apply_documents(fold(event, Position("c.run-events", 0, offset)))
    docs = [{"_id": e.run_id, "id": e.run_id, "tenant": "acme", "retry_of": e.retry_of} for e in events]

    def listed(trigger: str) -> list[str]:
        where = run_filter(store, "acme", None, trigger, None, None, None)  # type: ignore[arg-type]
        return [d["_id"] for d in docs if matches(d, where)]

    assert listed("simulation") == ["sim-0123abcd"]
    assert listed("event") == ["run-old"]
    assert listed("retry") == ["run-retry"]
    assert listed("schedule") == []
    assert [run_trigger(d, set()) for d in docs] == ["event", "retry", "simulation"]
