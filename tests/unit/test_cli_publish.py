"""`publish --dry-run` on the real sample data: counts, keys, file+field errors, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cli.main import main
from cli.publish import collect_files, load_kev_ids, message_key, parse_files
from tests.conftest import sample_data

DATA = sample_data()
DIGEST = "sha256:" + "ab" * 32


def _json(capsys: pytest.CaptureFixture[str]) -> dict:  # type: ignore[type-arg]
    return json.loads(capsys.readouterr().out)


def test_folder_of_ghsa_advisories_all_valid(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["publish", "osv", "--dry-run", "--json", str(DATA / "osv/ghsa")]) == 0
    report = _json(capsys)
    assert report["files"] == 5  # INDEX.md is not an input file
    assert report["messages"] == {"advisories": 5}
    assert report["rejected"] == []
    assert report["sent"] == 0


def test_osv_tree_counts_good_and_names_file_and_field_of_bad(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["publish", "osv", "--dry-run", "--json", str(DATA / "osv")]) == 1
    report = _json(capsys)
    assert report["files"] == 18
    assert report["messages"] == {"advisories": 16}
    rejected = {(Path(r["source"]).name, r["field"]) for r in report["rejected"]}
    assert ("nointroduced-CVE-2023-41045.json", "affected[0].ranges[0].events") in rejected
    assert ("osv-schema.json", "id") in rejected
    assert report["warnings"] >= 1  # GHSA-9v2f's invalid version is kept as a warning


def test_text_summary_lists_rejections_and_says_nothing_was_sent(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["publish", "osv", "--dry-run", str(DATA / "osv/invalid"), str(DATA / "osv/ghsa")]) == 1
    captured = capsys.readouterr()
    assert "files read: 7" in captured.out
    assert "advisories: 6" in captured.out
    assert "nointroduced-CVE-2023-41045.json: affected[0].package:" in captured.out
    assert "dry run: nothing was sent" in captured.out
    assert "exit code 1" in captured.err


def test_sbom_folder_needs_tenant(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["publish", "sbom", "--dry-run", str(DATA / "sbom")]) == 2
    assert "--tenant" in capsys.readouterr().err


def test_sbom_folder_good_and_bad(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["publish", "sbom", "--dry-run", "--json", "--tenant", "acme", str(DATA / "sbom")]) == 1
    report = _json(capsys)
    assert report["files"] == 6
    assert report["messages"] == {"inventory": 2}  # the syft CycloneDX files carry their digest
    by_file = {Path(r["source"]).name: r for r in report["rejected"]}
    assert by_file["cern-lhc-vdm-editor.json"]["field"] == "metadata.component"
    assert "image_digest" in by_file["cern-lhc-vdm-editor.json"]["message"]
    assert "invalid-no-purls-examplemaven.spdx.json" in by_file


def test_single_sbom_with_digest_is_valid(capsys: pytest.CaptureFixture[str]) -> None:
    path = DATA / "sbom/cyclonedx/cern-lhc-vdm-editor.json"
    argv = ["publish", "sbom", "--dry-run", "--json", "--tenant", "acme", "--image-digest", DIGEST, str(path)]
    assert main(argv) == 0
    assert _json(capsys)["messages"] == {"inventory": 1}


def test_image_digest_with_many_sboms_is_refused(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["publish", "sbom", "--dry-run", "--tenant", "a", "--image-digest", DIGEST, str(DATA / "sbom")]
    assert main(argv) == 2
    assert "one by one" in capsys.readouterr().err


def test_vex_folder(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["publish", "vex", "--dry-run", "--json", "--topic-prefix", "x.", str(DATA / "vex")]) == 0
    report = _json(capsys)
    assert report["messages"] == {"x.vex": 12}
    assert report["files_without_messages"] == 4  # CycloneDX VEX refs to BOM-internal products
    assert report["warnings"] > 0


def test_policy_and_runtime_documents(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "p.yaml").write_text(
        "tenant: acme\npolicy_id: base\nrevision: 3\nactivated_at: 2025-01-01T00:00:00Z\n"
        "selector: {namespaces: [prod]}\n"
    )
    (tmp_path / "bad.json").write_text(json.dumps({"tenant": "acme", "policy_id": "p", "revision": "x"}))
    assert main(["publish", "policy", "--dry-run", "--json", str(tmp_path)]) == 1
    report = _json(capsys)
    assert report["messages"] == {"policy": 1}
    fields = {(Path(r["source"]).name, r["field"]) for r in report["rejected"]}
    assert ("bad.json", "revision") in fields
    assert ("bad.json", "activated_at") in fields

    runtime = tmp_path / "rt.json"
    runtime.write_text(
        json.dumps(
            [
                {
                    "tenant": "acme",
                    "image_digest": DIGEST,
                    "cluster": "c1",
                    "namespace": "prod",
                    "state": "running",
                    "observed_at": "2025-01-01T00:00:00Z",
                }
            ]
        )
    )
    assert main(["publish", "runtime", "--dry-run", "--json", str(runtime)]) == 0
    assert _json(capsys)["messages"] == {"runtime": 1}


def test_keys_follow_the_topology() -> None:
    batch, messages = parse_files(
        "osv",
        collect_files([str(DATA / "osv/ghsa")]),
        tenant=None,
        image_digest=None,
        repository=None,
        observed_at=None,
        kev_ids=frozenset(),
        quiet=True,
    )
    assert [k for _, k, _ in batch.records] == [m.id.encode() for m in messages]
    inv = parse_files(
        "sbom",
        [DATA / "sbom/cyclonedx/distroless-cyclonedx.json"],
        tenant="acme",
        image_digest=None,
        repository=None,
        observed_at=None,
        kev_ids=frozenset(),
        quiet=True,
    )[1][0]
    assert message_key("sbom", inv) == f"acme/{inv.image_digest}".encode()


def test_kev_file_marks_advisories(tmp_path: Path) -> None:
    kev = tmp_path / "kev.json"
    kev.write_text(json.dumps({"vulnerabilities": [{"cveID": "CVE-2020-7598"}]}))
    _, messages = parse_files(
        "osv",
        [DATA / "osv/ghsa/GHSA-vh95-rmgr-6w4m.json"],
        tenant=None,
        image_digest=None,
        repository=None,
        observed_at=None,
        kev_ids=load_kev_ids(str(kev)),
        quiet=True,
    )
    assert messages[0].kev is True


def test_folder_walk_is_recursive_sorted_and_filtered(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    for name in ("b/z.yml", "a.json", "b/c.yaml", "notes.md"):
        (tmp_path / name).write_text("{}")
    assert [p.relative_to(tmp_path).as_posix() for p in collect_files([str(tmp_path)])] == [
        "a.json",
        "b/c.yaml",
        "b/z.yml",
    ]


def test_kev_file_as_plain_lines(tmp_path: Path) -> None:
    kev = tmp_path / "kev.txt"
    kev.write_text("# CISA KEV\nCVE-1\n\nCVE-2\n")
    assert load_kev_ids(str(kev)) == frozenset({"CVE-1", "CVE-2"})
