"""`stella-sched rebuild` on the real broker and FerretDB: a projection rebuilt from offset 0 equals the live
one document for document, *including* `_pos` (same topics, same offsets, same fold; the guard makes the
live projector's at-least-once redeliveries invisible), the switch moves the live projector over, and a
rebuild produces nothing to Kafka."""

from __future__ import annotations

import asyncio
import gc
import json
import time
from pathlib import Path
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from pymongo import MongoClient

from agents.topology import topics
from cli.rebuild import main
from projections.mongo_store import active_prefix
from tests.integration.pipeline_kit import Pipeline, later
from tests.integration.replay_kit import policy_r2, publish_to, read_models
from tests.integration.test_pipeline import run_scenario


def _args(pipe: Pipeline, *extra: str) -> list[str]:
    return [
        "--bootstrap",
        pipe.bootstrap,
        "--mongo-url",
        pipe.mongo_url,
        "--db",
        pipe.db,
        "--topic-prefix",
        pipe.prefix,
        "--app-id",
        f"{pipe.prefix}app",
        "--json",
        "--quiet",
        *extra,
    ]


async def _rebuild(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, Any]:
    capsys.readouterr()
    code = await asyncio.to_thread(main, list(args))
    out = capsys.readouterr().out
    assert code == 0, out
    report: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return report


async def _ends(pipe: Pipeline) -> dict[str, int]:
    """End offsets per topic (summed over partitions), except `impacts` (the leader's wall-clock ticks
    keep arriving there). Offsets, not a read-back: a read that stops at its first empty fetch counted
    0 on a busy broker."""
    names = {
        spec.name: spec.name[len(pipe.prefix) :]
        for spec in topics(pipe.prefix, pipe.partitions)
        if spec.name != f"{pipe.prefix}impacts"
    }
    consumer = AIOKafkaConsumer(bootstrap_servers=pipe.bootstrap)
    await consumer.start()
    try:
        parts = [TopicPartition(name, p) for name in names for p in range(pipe.partitions)]
        ends = await consumer.end_offsets(parts)
    finally:
        await consumer.stop()
    counts = dict.fromkeys(names.values(), 0)
    for tp, end in ends.items():
        counts[names[tp.topic]] += end
    return counts


def _checkpoints(pipe: Pipeline, collection_prefix: str) -> dict[str, int]:
    docs = pipe.mongo()[collection_prefix + "checkpoints"].find({})
    return {d["_id"]: int(d["offset"]) for d in docs}


async def test_rebuild_from_zero_equals_live_and_switches(
    kafka_bootstrap: str,
    mongo_url: str,
    mongo_db: tuple[MongoClient[dict[str, Any]], str],
    prefix: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    client, db = mongo_db
    pipe = Pipeline(kafka_bootstrap, mongo_url, prefix, db, tmp_path)
    try:
        await run_scenario(pipe)
        before = await _ends(pipe)

        dry = await _rebuild(capsys, *_args(pipe, "--dry-run"))
        assert dry["dry_run"]
        assert dry["total"] > 0
        assert dry["read"] == 0
        assert not [n for n in client[db].list_collection_names() if n.startswith("rb")]

        # 1. Build beside the live projection without switching; wait until the live projector has
        #    passed every position the rebuild folded, then compare every collection, `_pos` included.
        built = await _rebuild(capsys, *_args(pipe, "--prefix", "rbcheck_", "--no-switch"))
        assert built["read"] >= dry["total"]
        assert built["folded"] > 0
        assert not built["switched"]
        assert gc.get_freeze_count() == 0  # the fold froze its documents out of the collector; unfrozen
        rebuilt = _checkpoints(pipe, "rbcheck_")
        assert rebuilt
        deadline = time.monotonic() + 60
        while True:
            live = _checkpoints(pipe, "")
            if all(live.get(k, -1) >= v for k, v in rebuilt.items()):
                break
            assert time.monotonic() < deadline, (live, rebuilt)
            await asyncio.sleep(0.5)
        # The leader's wall-clock ticks keep arriving on `impacts`: they fold to no document but move its
        # checkpoints, so there the live projector may be ahead of the rebuild (more so now that the
        # rebuild bulk-loads after its last read). Every other checkpoint, and every document, is equal.
        ticking = f"/{pipe.prefix}impacts/"
        assert {k: v for k, v in live.items() if ticking not in k} == {
            k: v for k, v in rebuilt.items() if ticking not in k
        }
        live_models = read_models(pipe, "", keep_pos=True)
        assert sum(len(docs) for docs in live_models.values()) > 0
        assert read_models(pipe, "rbcheck_", keep_pos=True) == live_models

        # 2. A real rebuild switches the pointer and drops the old collections; nothing was produced.
        report = await _rebuild(capsys, *_args(pipe, "--drop-old"))
        assert report["switched"]
        assert report["dropped"]
        assert report["previous"] == ""
        new = report["prefix"]
        assert new.startswith("rb")
        assert active_prefix(client, db) == new
        assert read_models(pipe, new, keep_pos=True) == live_models
        assert "runs" not in client[db].list_collection_names()
        assert await _ends(pipe) == before

        # 3. The live projector follows the pointer: the next delta lands in the new collections.
        jobs_before = client[db][new + "jobs"].count_documents({})
        await publish_to(pipe, "policy", b"acme", policy_r2(later(180)))
        await pipe.settle()
        deadline = time.monotonic() + 60
        while client[db][new + "jobs"].count_documents({}) <= jobs_before:
            assert time.monotonic() < deadline, "the live projector did not follow the switch"
            await asyncio.sleep(0.5)
        assert "jobs" not in client[db].list_collection_names()
        pipe.alive()
    finally:
        pipe.stop()
