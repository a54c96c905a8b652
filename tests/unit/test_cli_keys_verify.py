"""`keys generate|show` and `verify --file` with envelopes signed in the test."""

from __future__ import annotations

import base64
import hashlib
import json
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest

from cli.main import main
from schemas.messages import JobResult, RunEvent
from signing.keys import load_signing_key
from signing.statement import sign_completion

DIGEST = "sha256:" + "ef" * 32


def _generate(tmp_path: Path, name: str, capsys: pytest.CaptureFixture[str]) -> dict[str, str]:
    assert main(["keys", "generate", "--out", str(tmp_path / "keys"), "--name", name, "--json"]) == 0
    doc: dict[str, str] = json.loads(capsys.readouterr().out)
    return doc


def _result() -> JobResult:
    return JobResult(
        job_id="j" * 64,
        run_id="run-1",
        tenant="acme",
        image_digest=DIGEST,
        priority="high",
        status="completed",
        finished_at=datetime(2025, 1, 1, tzinfo=UTC),
    )


def test_generate_writes_0600_private_key_and_never_prints_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["keys", "generate", "--out", str(tmp_path / "k"), "--name", "signer"]) == 0
    out = capsys.readouterr().out
    private, public = tmp_path / "k/signer.key", tmp_path / "k/signer.pub.json"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert public.exists()
    seed = json.loads(private.read_text())["seed"]
    assert seed not in out
    key = load_signing_key(private)
    assert key.keyid in out
    assert str(private) in out
    assert str(public) in out


def test_generate_refuses_to_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _generate(tmp_path, "a", capsys)
    assert main(["keys", "generate", "--out", str(tmp_path / "keys"), "--name", "a"]) == 1
    assert "--force" in capsys.readouterr().err


def test_show_lists_keyids_of_a_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    a = _generate(tmp_path, "a", capsys)["keyid"]
    b = _generate(tmp_path, "b", capsys)["keyid"]
    # the private key files live next to the public ones and must not break loading the folder
    assert main(["keys", "show", str(tmp_path / "keys"), "--json"]) == 0
    assert [k["keyid"] for k in json.loads(capsys.readouterr().out)["keys"]] == sorted([a, b])
    assert main(["keys", "show", str(tmp_path / "keys/a.pub.json")]) == 0
    assert a in capsys.readouterr().out


def test_show_refuses_a_private_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _generate(tmp_path, "a", capsys)
    assert main(["keys", "show", str(tmp_path / "keys/a.key")]) == 1
    assert "private key" in capsys.readouterr().err


def test_verify_file_good_and_tampered(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    info = _generate(tmp_path, "s", capsys)
    key = load_signing_key(info["private_key_file"])
    event_id, env = sign_completion(_result(), [key])
    good = env.model_dump()
    single = tmp_path / "one.json"
    single.write_text(json.dumps(good))
    assert main(["verify", "--file", str(single), "--public-keys", str(tmp_path / "keys"), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["failed"] == 0
    event = report["events"][0]
    assert event["event_id"] == event_id
    assert event["keyid"] == info["keyid"]
    assert event["subject"] == DIGEST
    assert event["predicate_type"].endswith("/job-completed/v1")

    _, run_env = sign_completion(
        RunEvent(run_id="run-1", tenant="acme", state="completed", at=datetime(2025, 1, 1, tzinfo=UTC)), [key]
    )
    tampered = dict(good, payload=good["payload"][:-4] + "AAA=")
    jsonl = tmp_path / "events.jsonl"
    jsonl.write_text(
        "\n".join(json.dumps(d) for d in (good, tampered, run_env.model_dump())) + "\n{not json\n"
    )
    assert main(["verify", "--file", str(jsonl), "--public-keys", str(tmp_path / "keys/s.pub.json")]) == 1
    out = capsys.readouterr().out
    assert "events.jsonl:2" in out
    assert "FAIL bad-signature" in out
    assert "events.jsonl:4" in out
    assert "FAIL malformed" in out
    assert "4 checked, 2 ok, 2 failed" in out
    assert "run-1" in out


def test_verify_list_with_untrusted_key(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _generate(tmp_path, "trusted", capsys)
    other = tmp_path / "other"
    assert main(["keys", "generate", "--out", str(other), "--name", "x"]) == 0
    capsys.readouterr()
    _, env = sign_completion(_result(), [load_signing_key(other / "x.key")])
    listing = tmp_path / "list.json"
    listing.write_text(json.dumps([env.model_dump()]))
    argv = ["verify", "--file", str(listing), "--public-keys", str(tmp_path / "keys"), "--json"]
    assert main(argv) == 1
    event = json.loads(capsys.readouterr().out)["events"][0]
    assert event["ok"] is False
    assert event["error"] == "unknown-keyid"
    assert event["location"].endswith("list.json[0]")
    payload = base64.b64decode(env.payload)
    assert event["event_id"] == hashlib.sha256(payload).hexdigest()
