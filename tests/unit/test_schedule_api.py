"""Schedule routes over real HTTP with the in-memory publisher and read models. A stand-in for the worker
folds each produced command with the stream's own core and projects its event, so the routes can be
followed end to end: create, show, preview (onlyIf against the images read model), catch-up dry run,
pause, update, run, delete; tenant isolation, scopes, idempotency."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from agents.settings import Settings
from controlplane.app import ApiDeps, create_app
from controlplane.auth import token_hash
from controlplane.backends import MemoryPublisher, MemoryReadModels
from controlplane.config import ApiConfig
from controlplane.testing import ServerThread
from projections.fold import IMAGES, DocUpdate, Position, fold
from projections.store import MemoryStore
from schemas.messages import ScheduleCommand
from streams.schedules import ScheduleState, decode, encode, on_command

READ, MANAGE = "scheduler.runs.read", "scheduler.runs.manage"
NOW = datetime(2026, 3, 28, 12, 0, tzinfo=UTC)


class FakeWorker:
    def __init__(self, store: MemoryStore) -> None:
        self.store = store
        self.states: dict[str, bytes] = {}
        self.offset = 0

    def __call__(self, record: Any) -> None:
        topic, _key, value = record
        if not topic.endswith("schedules"):
            return
        command = ScheduleCommand.model_validate_json(value)
        key = f"{command.tenant}/{command.schedule_id}"
        raw = self.states.get(key)
        current: ScheduleState | None = decode(raw) if raw else None
        step = on_command(current, command, None)
        if step.state is not None:
            self.states[key] = encode(step.state)
        assert step.event is not None
        self.offset += 1
        self.store.apply_documents(fold(step.event, Position("u.schedule-events", 0, self.offset)))


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[str, MemoryPublisher, MemoryStore]]:
    path = tmp_path / "access.json"
    tokens = [
        {"token_sha256": token_hash("acme-m"), "tenant": "acme", "scopes": [READ, MANAGE]},
        {"token_sha256": token_hash("acme-r"), "tenant": "acme", "scopes": [READ]},
        {"token_sha256": token_hash("beta-m"), "tenant": "beta", "scopes": [READ, MANAGE]},
    ]
    path.write_text(json.dumps({"tokens": tokens}))
    store = MemoryStore()
    publisher = MemoryPublisher(partitions=2, on_send=FakeWorker(store))
    deps = ApiDeps(publisher=publisher, read_models=MemoryReadModels(store), clock=lambda: NOW)
    app = create_app(Settings(topic_prefix="u."), deps, ApiConfig(tokens_path=str(path)))
    with ServerThread(app) as server:
        yield server.url, publisher, store


def h(token: str, key: str | None = None) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **({"Idempotency-Key": key} if key else {})}


def image(n: int, finished: datetime | None) -> DocUpdate:
    doc: dict[str, Any] = {"tenant": "acme", "image_digest": f"sha256:{n:064x}", "namespaces": ["prod"]}
    if finished:
        doc["finished_at"] = finished.strftime("%Y-%m-%dT%H:%M:%SZ")
    return DocUpdate(IMAGES, f"acme/{doc['image_digest']}", "inventory:0", n, set=doc)


def test_schedule_routes(api: tuple[str, MemoryPublisher, MemoryStore]) -> None:
    url, publisher, store = api
    base = url + "/api/v1/schedules"
    store.apply_documents(
        [image(1, None), image(2, NOW - timedelta(days=1)), image(3, NOW - timedelta(days=9))]
    )
    spec = {
        "cron": "30 2 * * *",
        "timezone": "Europe/Berlin",
        "only_if": {"last_report_older_than_days": 7},
        "missed": {"policy": "all", "max_catchup": 5},
    }
    created = httpx.post(base, json={"schedule_id": "nightly", "spec": spec}, headers=h("acme-m", "k1"))
    assert created.status_code == 202, created.text
    again = httpx.post(base, json={"schedule_id": "nightly", "spec": spec}, headers=h("acme-m", "k1"))
    assert again.json()["replayed"] is True
    assert len([r for r in publisher.records if r[0] == "u.schedules"]) == 1
    conflict = httpx.post(base, json={"schedule_id": "nightly", "spec": spec}, headers=h("acme-m"))
    assert conflict.status_code == 409

    shown = httpx.get(base + "/nightly", headers=h("acme-r")).json()
    assert (shown["status"], shown["next_fire"]) == ("active", "2026-03-29T01:00:00Z")  # 03:00 CEST
    assert httpx.get(base + "/nightly", headers=h("beta-m")).status_code == 404
    assert [s["id"] for s in httpx.get(base, headers=h("beta-m")).json()["items"]] == []
    assert httpx.post(base + "/nightly/pause", headers=h("acme-r")).status_code == 403
    bad = httpx.post(base, json={"schedule_id": "x", "spec": {"cron": "61 * * * *"}}, headers=h("acme-m"))
    assert bad.status_code == 422
    assert "Bad minute" in bad.text

    preview = httpx.get(base + "/nightly/preview", headers=h("acme-r")).json()
    assert (preview["selected"], preview["filtered_only_if"], preview["jobs"]) == (3, 1, 2)
    assert preview["missed"]["would_fire"] == []

    assert httpx.post(base + "/nightly/pause", headers=h("acme-m")).status_code == 202
    assert httpx.get(base + "/nightly", headers=h("acme-r")).json()["status"] == "paused"
    assert httpx.post(base + "/nightly/resume", headers=h("acme-m")).status_code == 202
    updated = httpx.put(base + "/nightly", json={"spec": {**spec, "cron": "0 * * * *"}}, headers=h("acme-m"))
    assert updated.status_code == 202
    assert httpx.get(base + "/nightly", headers=h("acme-r")).json()["next_fire"] == "2026-03-28T13:00:00Z"
    assert httpx.post(base + "/nightly/run", headers=h("acme-m")).status_code == 202
    runs = httpx.get(base + "/nightly/runs", headers=h("acme-r")).json()["items"]
    assert [(r["trigger"], r["fired"]) for r in runs] == [("manual", True)]
    assert httpx.delete(base + "/nightly", headers=h("acme-m")).status_code == 202
    assert httpx.get(base + "/nightly", headers=h("acme-r")).status_code == 404
    assert httpx.post(base + "/ghost/pause", headers=h("acme-m")).status_code == 404


def test_catchup_dry_run_uses_the_workers_core(api: tuple[str, MemoryPublisher, MemoryStore]) -> None:
    url, _, store = api
    base = url + "/api/v1/schedules"
    spec = {"cron": "0 * * * *", "missed": {"policy": "latest", "grace_seconds": 60}}
    httpx.post(base, json={"schedule_id": "hourly", "spec": spec}, headers=h("acme-m"))
    # The worker was down: the schedule decided nothing since NOW. Make the read model say so 3 h ago.
    doc = store.state["schedules"]["acme/hourly"]
    doc["decided_until"] = "2026-03-28T08:30:00Z"
    out = httpx.get(base + "/hourly/catchup", headers=h("acme-r")).json()
    assert out["would_fire"] == ["2026-03-28T12:00:00Z"]
    assert out["would_skip"] == ["2026-03-28T09:00:00Z", "2026-03-28T10:00:00Z", "2026-03-28T11:00:00Z"]
