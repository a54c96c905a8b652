"""Issue 14 #7: ten concurrent ``POST /rechecks`` with one Idempotency-Key produced ten records."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import httpx

from agents.settings import Settings
from controlplane.app import ApiDeps, create_app
from controlplane.auth import token_hash
from controlplane.backends import MemoryPublisher, MemoryReadModels, Produced, Record
from controlplane.config import ApiConfig

AUTH = {"Authorization": "Bearer tok-w"}


class SlowPublisher(MemoryPublisher):
    """Kafka's ack takes a while: long enough for every concurrent request to arrive first."""

    async def send_many(self, records: Sequence[Record]) -> list[Produced]:
        await asyncio.sleep(0.2)
        return await super().send_many(records)


async def test_concurrent_requests_with_one_key_produce_one_record(tmp_path: Path) -> None:
    path = tmp_path / "access.json"
    scopes = ["scheduler.runs.read", "scheduler.runs.write"]
    path.write_text(
        json.dumps({"tokens": [{"token_sha256": token_hash("tok-w"), "tenant": "a", "scopes": scopes}]})
    )
    publisher = SlowPublisher()
    deps = ApiDeps(
        publisher=publisher, read_models=MemoryReadModels(), clock=lambda: datetime(2025, 1, 1, tzinfo=UTC)
    )
    app = create_app(Settings(topic_prefix="idem."), deps, ApiConfig(tokens_path=str(path)))
    app.state.runtime.publisher_started = True  # no lifespan under ASGITransport
    body = {"selector": {"all": True}, "reason": "r"}
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://api") as client:

        async def post(key: str, reason: str = "r") -> httpx.Response:
            headers = {**AUTH, "Idempotency-Key": key}
            return await client.post("/api/v1/rechecks", json={**body, "reason": reason}, headers=headers)

        # Concurrent repeats of one request. (A different body under the same key is asked after them: in
        # the same gather it could be served first on a busy machine, and then the ten would rightly be 409.)
        answers = await asyncio.gather(*(post("k1") for _ in range(10)))
        assert [a.status_code for a in answers] == [202] * 10
        assert (await post("k1", reason="other")).status_code == 409
        assert len(publisher.records) == 1
        assert len({a.json()["recheck_id"] for a in answers[:10]}) == 1
        assert sum(1 for a in answers[:10] if a.json().get("replayed")) == 9
        again = await post("k1")
        assert again.json()["replayed"] is True
        assert len(publisher.records) == 1
