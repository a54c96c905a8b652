"""Issue 14 #8: ``publish --dry-run`` applies every check the real run applies, the record limit included."""

from __future__ import annotations

import json
from pathlib import Path

import orjson
import pytest

from cli.main import main


def sbom(components: int, tag: str) -> bytes:
    digest = "sha256:" + (tag * 64)[:64]
    return orjson.dumps(
        {
            "bomFormat": "CycloneDX",
            "specVersion": "1.5",
            "metadata": {
                "timestamp": "2026-01-01T00:00:00Z",
                "component": {"type": "container", "name": "app", "purl": f"pkg:oci/app@{digest}"},
            },
            "components": [
                {"type": "library", "name": f"p{i}", "version": "1.0.0", "purl": f"pkg:npm/p{i}@1.0.0"}
                for i in range(components)
            ],
        }
    )


def test_dry_run_refuses_a_message_over_the_record_limit(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STELLA_MAX_MESSAGE_BYTES", "20000")
    (tmp_path / "a.json").write_bytes(sbom(3, "a"))
    (tmp_path / "big.json").write_bytes(sbom(500, "b"))
    code = main(["publish", "sbom", "--tenant", "acme", "--dry-run", "--json", "--quiet", str(tmp_path)])
    assert code == 1
    report = json.loads(capsys.readouterr().out)
    assert report["messages"] == {"inventory": 1}
    (rejected,) = report["rejected"]
    assert Path(rejected["source"]).name == "big.json"
    assert "the record limit is 20000 (STELLA_MAX_MESSAGE_BYTES)" in rejected["message"]
    assert report["files_rejected"] == 1
