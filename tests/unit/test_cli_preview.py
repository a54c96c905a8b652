"""`preview` on the real sample data: impacted images, job ids, explanations; exit codes."""

from __future__ import annotations

import json

import pytest

from cli.main import main
from tests.conftest import sample_data

DATA = sample_data()
SBOM = str(DATA / "sbom/cyclonedx/cern-lhc-vdm-editor.json")
GHSA = str(DATA / "osv/ghsa")
DIGEST = "sha256:" + "cd" * 32


def test_preview_text_names_affected_packages_and_jobs(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["preview", "--sbom", SBOM, "--image-digest", DIGEST, "--advisory", GHSA]) == 0
    out = capsys.readouterr().out
    assert f"image default/{DIGEST}" in out
    assert "GHSA-vh95-rmgr-6w4m" in out
    assert "npm/minimist@0.0.8" in out
    assert "affected" in out
    assert "not_affected" in out
    assert "priority=" in out
    assert "kind=" in out
    assert "job " in out


def test_preview_json_is_canonical_and_consistent(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["preview", "--sbom", SBOM, "--image-digest", DIGEST, "--advisory", GHSA, "--tenant", "acme"]
    assert main([*argv, "--json"]) == 0
    raw = capsys.readouterr().out
    report = json.loads(raw)
    key = f"acme/{DIGEST}"
    assert report["impacted_images"] == [key]
    image = report["images"][key]
    assert "GHSA-vh95-rmgr-6w4m" in image["affected"]
    assert report["jobs"] == len(image["jobs"]) > 0
    assert all(len(job["job_id"]) == 64 for job in image["jobs"])
    statuses = {(e["advisory"], e["package"], e["status"]) for e in image["explanations"]}
    assert ("GHSA-vh95-rmgr-6w4m", "npm/minimist", "affected") in statuses
    assert ("GHSA-pc5p-h8pf-mvwp", "npm/https-proxy-agent", "not_affected") in statuses
    # deterministic: the same inputs give byte-identical output
    assert main([*argv, "--json"]) == 0
    assert capsys.readouterr().out == raw


def test_preview_with_no_impact_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["preview", "--sbom", SBOM, "--image-digest", DIGEST, "--advisory", str(DATA / "osv/pypa")]
    assert main(argv) == 0
    assert "nothing would be re-evaluated" in capsys.readouterr().out


def test_preview_without_digest_is_rejected_with_a_hint(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["preview", "--sbom", SBOM, "--advisory", GHSA]) == 1
    err = capsys.readouterr().err
    assert "cern-lhc-vdm-editor.json: metadata.component" in err
    assert "--image-digest" in err


def test_preview_rejects_bad_advisory(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["preview", "--sbom", SBOM, "--image-digest", DIGEST, "--advisory", str(DATA / "osv/invalid")]
    assert main(argv) == 1
    assert "nointroduced-CVE-2023-41045.json: affected[0]" in capsys.readouterr().err
