"""Issue 3 end to end: folders of real files published through the CLI plus a corrupt record written
straight to a source topic; a real worker consumes every good message, dead-letters the corrupt one
with its original bytes, and keeps running."""

from __future__ import annotations

import asyncio
import base64
import time
from typing import Any

import orjson

from cli.main import main as cli
from tests.conftest import sample_data
from tests.integration.kit import produce
from tests.integration.pipeline_kit import Deployment

CORRUPT = b'{"schema": "scheduler.vex@1", "statement_id": 12, "products": "nope"'


async def test_cli_folders_and_a_corrupt_record(
    deployment: Deployment,
    kafka_bootstrap: str,
    prefix: str,
    monkeypatch: Any,
) -> None:
    pipe = deployment()
    await pipe.start()
    monkeypatch.setenv("KAFKA_BOOTSTRAP", kafka_bootstrap)
    monkeypatch.setenv("STELLA_TOPIC_PREFIX", prefix)
    data = sample_data()
    try:
        # osv/ghsa and osv/pypa are all valid; vex/openvex has skipped products but no rejected file.
        assert (
            await asyncio.to_thread(
                cli, ["publish", "osv", str(data / "osv/ghsa"), str(data / "osv/pypa"), "--quiet"]
            )
            == 0
        )
        assert await asyncio.to_thread(cli, ["publish", "vex", str(data / "vex/openvex"), "--quiet"]) == 0
        await produce(kafka_bootstrap, f"{prefix}vex", [(b"corrupt", CORRUPT)])
        # Good messages after the bad one still flow.
        assert (
            await asyncio.to_thread(cli, ["publish", "osv", str(data / "osv/GO-2024-2963.json"), "--quiet"])
            == 0
        )

        advisories = await pipe.records("advisories")
        vex = await pipe.records("vex")
        good_vex = len(vex) - 1
        # Every good message is folded: each emits exactly one cursor update.
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            pipe.alive()
            cursors = [orjson.loads(r.value) for r in await pipe.records("cursors", timeout=1.0)]
            by_source = {s: sum(1 for c in cursors if c["source"] == s) for s in ("advisories", "vex")}
            if by_source == {"advisories": len(advisories), "vex": good_vex}:
                break
            await asyncio.sleep(1)
        assert by_source == {"advisories": len(advisories), "vex": good_vex}
        assert len(advisories) == 9  # 5 GHSA + 3 PyPA + 1 Go

        letters = [orjson.loads(r.value) for r in await pipe.records("deadletter", expect=1)]
        assert len(letters) == 1
        letter = letters[0]
        assert base64.b64decode(letter["value_b64"]) == CORRUPT
        assert base64.b64decode(letter["key_b64"]) == b"corrupt"
        assert letter["source_topic"] == f"{prefix}vex"
        original = next(r for r in vex if r.key == b"corrupt")
        assert (letter["partition"], letter["offset"]) == (original.partition, original.offset)
        assert letter["reason"] == "decode"
        pipe.alive()
    finally:
        pipe.stop()
