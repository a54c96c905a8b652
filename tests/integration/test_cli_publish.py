"""`stella-sched publish` against the real broker: folders of real files land on the right topics with the
right keys; `verify --topic` reads the signed-events topic back."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from cli.main import main
from signing.keys import load_signing_key
from signing.statement import sign_completion
from tests.conftest import sample_data
from tests.integration.kit import create_topics, produce, read_all

DATA = sample_data()


def test_publish_folders_then_read_topics_back(
    kafka_bootstrap: str, prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    asyncio.run(create_topics(kafka_bootstrap, prefix, partitions=2))
    kafka = ["--bootstrap", kafka_bootstrap, "--topic-prefix", prefix, "--json", "--quiet"]

    assert main(["publish", "osv", *kafka, str(DATA / "osv/ghsa"), str(DATA / "osv/pypa")]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["sent"] == 8
    advisories = asyncio.run(read_all(kafka_bootstrap, f"{prefix}advisories", expect=8))
    assert len(advisories) == 8
    for record in advisories:
        assert record.key == json.loads(record.value)["id"].encode()
    assert {r.key.decode() for r in advisories} >= {"GHSA-vh95-rmgr-6w4m", "PYSEC-2019-217"}

    # a folder with bad files: the good ones are sent, the exit code is 1, the summary says so
    assert main(["publish", "sbom", *kafka, "--tenant", "acme", str(DATA / "sbom")]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["sent"] == 2
    assert len(report["rejected"]) >= 4
    inventory = asyncio.run(read_all(kafka_bootstrap, f"{prefix}inventory", expect=2))
    assert len(inventory) == 2
    for record in inventory:
        value = json.loads(record.value)
        assert record.key == f"acme/{value['image_digest']}".encode()
        assert value["schema"] == "scheduler.inventory@1"

    assert main(["publish", "vex", *kafka[:-2], "--quiet", str(DATA / "vex/openvex")]) == 0
    out = capsys.readouterr().out
    assert f"{prefix}vex: 12" in out
    vex = asyncio.run(read_all(kafka_bootstrap, f"{prefix}vex", expect=12))
    assert len(vex) == 12
    assert all(r.key == json.loads(r.value)["vulnerability"].encode() for r in vex)


def test_publish_to_missing_topics_is_an_infrastructure_error(
    kafka_bootstrap: str, prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = [
        "publish",
        "osv",
        "--bootstrap",
        kafka_bootstrap,
        "--topic-prefix",
        prefix,
        str(DATA / "osv/ghsa"),
    ]
    assert main(argv) == 3
    err = capsys.readouterr().err
    assert f"{prefix}advisories" in err
    assert "agents.topology_admin" in err


def test_unreachable_kafka_exits_3_with_instructions(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["publish", "osv", "--bootstrap", "127.0.0.1:1", str(DATA / "osv/ghsa")]
    assert main(argv) == 3
    err = capsys.readouterr().err
    assert "make up" in err
    assert "KAFKA_BOOTSTRAP" in err


def test_verify_topic_reads_signed_events(
    kafka_bootstrap: str, prefix: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from datetime import UTC, datetime

    from schemas.messages import JobResult

    asyncio.run(create_topics(kafka_bootstrap, prefix, partitions=2))
    assert main(["keys", "generate", "--out", str(tmp_path), "--name", "s"]) == 0
    capsys.readouterr()
    key = load_signing_key(tmp_path / "s.key")
    items = []
    for i in range(3):
        result = JobResult(
            job_id=f"{i:064d}",
            run_id="run-1",
            tenant="acme",
            image_digest="sha256:" + f"{i:02d}" * 32,
            priority="normal",
            status="completed",
            finished_at=datetime(2025, 1, 1, tzinfo=UTC),
        )
        _, env = sign_completion(result, [key])
        items.append((b"acme/x", env.model_dump_json().encode()))
    items.append((b"acme/x", b"garbage"))  # same key: one partition, so --max 2 is deterministic
    asyncio.run(produce(kafka_bootstrap, f"{prefix}events.signed", items))
    argv = [
        "verify",
        "--topic",
        "--from-beginning",
        "--timeout",
        "3",
        "--public-keys",
        str(tmp_path),
        "--bootstrap",
        kafka_bootstrap,
        "--topic-prefix",
        prefix,
        "--json",
    ]
    assert main(argv) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["checked"] == 4
    assert report["failed"] == 1
    assert [e["error"] for e in report["events"] if not e["ok"]] == ["malformed"]
    assert main([*argv, "--max", "2"]) == 0
    assert json.loads(capsys.readouterr().out)["checked"] == 2


def test_deadletter_list_show_replay(
    kafka_bootstrap: str, prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from datetime import UTC, datetime

    from schemas.codec import Rejected, dead_letter, encode

    asyncio.run(create_topics(kafka_bootstrap, prefix, partitions=2))
    original = b'{"schema": "scheduler.advisory@1", "id": "X"}'
    rejected = Rejected("advisories", "validate", "modified: required", "scheduler.advisory@1")
    letter = dead_letter(
        rejected, f"{prefix}advisories", 1, 7, b"X", original, datetime(2025, 1, 1, tzinfo=UTC)
    )
    asyncio.run(produce(kafka_bootstrap, f"{prefix}deadletter", [(b"advisories", encode(letter))]))
    kafka = ["--bootstrap", kafka_bootstrap, "--topic-prefix", prefix]

    assert main(["deadletter", "list", *kafka, "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 1
    assert rows[0]["reason"] == "validate"
    position = rows[0]["position"]
    assert main(["deadletter", "show", position, *kafka]) == 0
    assert json.loads(capsys.readouterr().out)["value_text"] == original.decode()
    assert main(["deadletter", "replay", position, "--yes", *kafka]) == 0
    capsys.readouterr()
    replayed = asyncio.run(read_all(kafka_bootstrap, f"{prefix}advisories", expect=1))
    assert [(r.key, r.value) for r in replayed] == [(b"X", original)]
    assert main(["deadletter", "show", "9:9", *kafka]) == 1


def test_a_message_the_broker_refuses_is_reported_per_file_and_the_run_goes_on(
    kafka_bootstrap: str,
    prefix: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Issue 14 #8: a 2.9 MB inventory message made the real run die with a traceback after sending some
    files and print no summary. With the default limit --dry-run refuses it; with a limit raised past the
    broker's, the real run reports the refused file, sends the others and prints the summary."""
    from tests.unit.test_cli_publish_limits import sbom

    asyncio.run(create_topics(kafka_bootstrap, prefix, partitions=2))
    folder = tmp_path / "sboms"
    folder.mkdir()
    (folder / "a.json").write_bytes(sbom(3, "a"))
    (folder / "b-big.json").write_bytes(sbom(40_000, "b"))
    (folder / "c.json").write_bytes(sbom(3, "c"))
    argv = ["publish", "sbom", "--tenant", "acme", "--bootstrap", kafka_bootstrap, "--topic-prefix", prefix]

    assert main([*argv, "--dry-run", "--json", "--quiet", str(folder)]) == 1
    report = json.loads(capsys.readouterr().out)
    assert [Path(r["source"]).name for r in report["rejected"]] == ["b-big.json"]

    monkeypatch.setenv("STELLA_MAX_MESSAGE_BYTES", str(8 * 1024 * 1024))  # past the broker's own limit
    assert main([*argv, "--quiet", str(folder)]) == 1
    captured = capsys.readouterr()
    assert "Traceback" not in captured.err
    assert "messages sent: 2" in captured.out
    assert "not sent (broker refused): 1" in captured.out
    assert "b-big.json: $: not acknowledged: MessageSizeTooLargeError" in captured.out
    inventory = asyncio.run(read_all(kafka_bootstrap, f"{prefix}inventory", expect=2))
    assert sorted(json.loads(r.value)["image_digest"][7:8] for r in inventory) == ["a", "c"]


def test_a_dead_letter_kept_by_reference_replays_the_original_from_its_position(
    kafka_bootstrap: str, prefix: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Issue 14 #3: a record too large to copy into its dead letter is replayed from its source position
    (checked against the recorded sha256); before, the replay would have produced a null value."""
    from datetime import UTC, datetime

    from schemas.codec import Rejected, dead_letter, encode

    asyncio.run(create_topics(kafka_bootstrap, prefix, partitions=2))
    original = b'{"schema": "scheduler.advisory@1", "id": "BIG", "summary": "' + b"x" * 900_000 + b'"}'
    source = f"{prefix}advisories"
    asyncio.run(produce(kafka_bootstrap, source, [(b"BIG", original)]))
    (stored,) = asyncio.run(read_all(kafka_bootstrap, source, expect=1))
    rejected = Rejected("advisories", "oversized", "too large", "scheduler.advisory@1")
    at = datetime(2025, 1, 1, tzinfo=UTC)
    letter = dead_letter(rejected, source, stored.partition, stored.offset, b"BIG", original, at)
    assert letter.value_b64 is None
    assert letter.original is not None
    asyncio.run(produce(kafka_bootstrap, f"{prefix}deadletter", [(b"advisories", encode(letter))]))
    kafka = ["--bootstrap", kafka_bootstrap, "--topic-prefix", prefix]

    assert main(["deadletter", "list", *kafka, "--json"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert main(["deadletter", "replay", row["position"], "--yes", *kafka]) == 0
    capsys.readouterr()
    records = asyncio.run(read_all(kafka_bootstrap, source, expect=2))
    assert [(r.key, r.value) for r in records] == [(b"BIG", original), (b"BIG", original)]
