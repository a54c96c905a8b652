"""`stella-sched audit` on export files: verify OK, then each kind of tampering is named; prove; help."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest

from cli.audit import FORMAT, main
from cli.main import main as top_main
from schemas.canonical import dumps
from signing.keys import generate_keypair
from streams.audit.ledger import SnapshotPolicy
from tests.unit.test_audit_ledger import build, records


def write_export(path: Path) -> list[bytes]:
    _, entries, snaps = build(list(range(0, 100, 7)), SnapshotPolicy(every=4, seconds=10_000), seal=True)
    recs = records(entries, snaps)  # signed with the test key of test_audit_ledger
    lines = [dumps({"format": FORMAT})]
    lines += [dumps({r.kind: r.doc}) for r in recs]
    path.write_bytes(b"\n".join(lines) + b"\n")
    return lines


@pytest.fixture
def pub(tmp_path: Path) -> Path:
    from signing.keys import public_key_document
    from tests.unit.test_audit_ledger import KEY

    path = tmp_path / "signer.pub.json"
    path.write_text(json.dumps(public_key_document(KEY.verify_key)))
    return path


def verify_json(path: Path, pub: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, dict]:  # type: ignore[type-arg]
    code = main(["verify", "--file", str(path), "--public-keys", str(pub), "--json"])
    return code, orjson.loads(capsys.readouterr().out)


def test_verify_ok_then_each_tampering_named(
    tmp_path: Path, pub: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    export = tmp_path / "audit.jsonl"
    lines = write_export(export)
    code, out = verify_json(export, pub, capsys)
    assert code == 0, out
    assert out["tenants"][0]["sealed_through"] == 15

    def tampered(new_lines: list[bytes]) -> dict:  # type: ignore[type-arg]
        export.write_bytes(b"\n".join(new_lines) + b"\n")
        code, out = verify_json(export, pub, capsys)
        assert code == 1
        return out["tenants"][0]["problem"]  # type: ignore[no-any-return]

    assert tampered(lines[:5] + lines[6:])["code"] == "deleted"  # line 6 holds seq 5
    doc = orjson.loads(lines[5])
    doc["entry"]["detail"] = "forged"
    problem = tampered([*lines[:5], dumps(doc), *lines[6:]])
    assert (problem["code"], problem["seq"], problem["location"]) == ("altered", 5, f"{export}:6")
    assert tampered([*lines[:5], lines[6], lines[5], *lines[7:]])["code"] == "reordered"
    problem = tampered(lines[:10] + [line for line in lines if b'"snapshot"' in line])
    assert (problem["code"], problem["seq"]) == ("truncated", 10)
    code = main(["verify", "--file", str(export), "--public-keys", str(pub)])
    assert code == 1
    assert "truncated" in capsys.readouterr().err


def test_prove_and_errors(tmp_path: Path, pub: Path, capsys: pytest.CaptureFixture[str]) -> None:
    export = tmp_path / "audit.jsonl"
    write_export(export)
    assert main(["prove", "--job", "job-3", "--file", str(export), "--public-keys", str(pub), "--json"]) == 0
    proofs = orjson.loads(capsys.readouterr().out)["proofs"]
    assert proofs
    assert all(p["verified"] for p in proofs)
    assert main(["prove", "--job", "nope", "--file", str(export), "--public-keys", str(pub)]) == 1
    assert "no audit entries" in capsys.readouterr().err
    other = tmp_path / "other"
    generate_keypair(other / "k.json", other / "k.pub.json")
    assert main(["verify", "--file", str(export), "--public-keys", str(other / "k.pub.json")]) == 1
    assert "bad-signature" in capsys.readouterr().err
    (tmp_path / "bad.jsonl").write_text('{"entry": {}}\nnot json\n')
    assert main(["verify", "--file", str(tmp_path / "bad.jsonl"), "--public-keys", str(pub)]) == 1
    assert "bad.jsonl:2: not JSON" in capsys.readouterr().err


def test_help_teaches(capsys: pytest.CaptureFixture[str]) -> None:
    assert top_main(["audit", "--help"]) == 0
    out = capsys.readouterr().out
    assert "audit export --out" in out
    assert "examples" in out
