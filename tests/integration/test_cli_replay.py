"""`stella-sched replay` against the real broker: dry-run plan with lag, refusal while a consumer is live,
and a real rewind whose committed offsets are read back."""

from __future__ import annotations

import asyncio
import io
import json
import uuid

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.admin import AIOKafkaAdminClient

from cli.main import main
from tests.integration.kit import create_topics, produce

N = 10


async def _setup(bootstrap: str, prefix: str) -> str:
    await create_topics(bootstrap, prefix, partitions=2)
    topic = f"{prefix}advisories"
    await produce(bootstrap, topic, [(f"k{i}".encode(), b"{}") for i in range(N)])
    return topic


async def _consume_all_and_commit(bootstrap: str, topic: str, group: str) -> None:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        got = 0
        while got < N:
            batch = await consumer.getmany(timeout_ms=10_000)
            assert batch, "no records within 10 s"
            got += sum(len(v) for v in batch.values())
        await consumer.commit()
    finally:
        await consumer.stop()


async def _committed(bootstrap: str, group: str) -> dict[tuple[str, int], int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        offsets = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    return {(tp.topic, tp.partition): meta.offset for tp, meta in offsets.items()}


def _replay(bootstrap: str, group: str, *extra: str) -> list[str]:
    return ["replay", "--group", group, "--bootstrap", bootstrap, *extra]


def test_dry_run_then_real_rewind_to_earliest(
    kafka_bootstrap: str, prefix: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    group = f"g-{uuid.uuid4().hex[:8]}"
    topic = asyncio.run(_setup(kafka_bootstrap, prefix))
    asyncio.run(_consume_all_and_commit(kafka_bootstrap, topic, group))
    before = asyncio.run(_committed(kafka_bootstrap, group))
    assert sum(before.values()) == N

    assert main([*_replay(kafka_bootstrap, group, "--to", "earliest", "--dry-run", "--json")]) == 0
    plan = json.loads(capsys.readouterr().out)
    assert plan["state"] == "Empty"
    rows = {(r["topic"], r["partition"]): r for r in plan["partitions"]}
    assert set(rows) == {(topic, 0), (topic, 1)}
    assert all(r["target"] == 0 for r in rows.values())
    assert sum(r["lag"] for r in rows.values()) == N
    assert {k: r["current"] for k, r in rows.items()} == before
    assert asyncio.run(_committed(kafka_bootstrap, group)) == before  # dry run changed nothing

    # text table, then "no" at the prompt: nothing changes, exit 1
    monkeypatch.setattr("sys.stdin", io.StringIO("n\n"))
    assert main(_replay(kafka_bootstrap, group, "--to", "earliest")) == 1
    captured = capsys.readouterr()
    assert "current" in captured.out
    assert "lag" in captured.out
    assert f"total lag after the rewind: {N}" in captured.out
    assert "aborted" in captured.err
    assert asyncio.run(_committed(kafka_bootstrap, group)) == before

    monkeypatch.setattr("sys.stdin", io.StringIO("y\n"))
    assert main(_replay(kafka_bootstrap, group, "--to", "earliest")) == 0
    assert "committed 2 offset(s)" in capsys.readouterr().out
    assert asyncio.run(_committed(kafka_bootstrap, group)) == {(topic, 0): 0, (topic, 1): 0}

    # offset:N is clamped into each partition's range; --yes skips the prompt
    assert main(_replay(kafka_bootstrap, group, "--to", "offset:3", "--yes", "--json")) == 0
    done = json.loads(capsys.readouterr().out)
    after = asyncio.run(_committed(kafka_bootstrap, group))
    for row in done["partitions"]:
        assert after[(row["topic"], row["partition"])] == min(3, row["end"])

    # a time after every record: the end of each partition
    assert main(_replay(kafka_bootstrap, group, "--to", "timestamp:2100-01-01T00:00:00Z", "--yes")) == 0
    capsys.readouterr()
    ends = {(r["topic"], r["partition"]): r["end"] for r in done["partitions"]}
    assert asyncio.run(_committed(kafka_bootstrap, group)) == ends


def test_refuses_while_a_consumer_is_live(
    kafka_bootstrap: str, prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    group = f"g-{uuid.uuid4().hex[:8]}"

    async def scenario() -> tuple[int, int]:
        topic = await _setup(kafka_bootstrap, prefix)
        await _consume_all_and_commit(kafka_bootstrap, topic, group)
        live = AIOKafkaConsumer(topic, bootstrap_servers=kafka_bootstrap, group_id=group)
        await live.start()
        try:
            for _ in range(40):  # wait until the member has joined (assignment received)
                await live.getmany(timeout_ms=250)
                if live.assignment():
                    break
            assert live.assignment(), "the live consumer never joined"
            before = await _committed(kafka_bootstrap, group)
            dry = await asyncio.to_thread(
                main, _replay(kafka_bootstrap, group, "--to", "earliest", "--dry-run")
            )
            real = await asyncio.to_thread(main, _replay(kafka_bootstrap, group, "--to", "earliest", "--yes"))
            assert await _committed(kafka_bootstrap, group) == before
            return dry, real
        finally:
            await live.stop()

    dry, real = asyncio.run(scenario())
    assert (dry, real) == (1, 1)
    err = capsys.readouterr().err
    assert "live member" in err
    assert "stop its consumers" in err


def test_group_without_offsets_needs_topics(
    kafka_bootstrap: str, prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    topic = asyncio.run(_setup(kafka_bootstrap, prefix))
    group = f"g-{uuid.uuid4().hex[:8]}"
    assert main(_replay(kafka_bootstrap, group, "--to", "earliest", "--dry-run")) == 1
    assert "--topic" in capsys.readouterr().err
    assert main(_replay(kafka_bootstrap, group, "--to", "latest", "--topic", topic, "--yes")) == 0
    capsys.readouterr()
    committed = asyncio.run(_committed(kafka_bootstrap, group))
    assert set(committed) == {(topic, 0), (topic, 1)}
    assert sum(committed.values()) == N
