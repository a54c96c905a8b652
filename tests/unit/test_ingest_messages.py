"""Issue 14 #12: file errors say what the file is and what was expected, with line/column for JSON."""

from __future__ import annotations

import orjson

from ingest.detect import parse_file

SBOM = orjson.dumps(
    {
        "bomFormat": "CycloneDX",
        "specVersion": "1.5",
        "metadata": {"timestamp": "2026-01-01T00:00:00Z"},
        "components": [{"type": "library", "name": "a", "version": "1", "purl": "pkg:npm/a@1"}],
    }
)


def only_error(kind: str, data: bytes, **options: str) -> str:
    result = parse_file(kind, data, "f.json", **options)  # type: ignore[arg-type]
    assert not result.messages
    errors = [e for e in result.errors if e.level == "error"]
    assert len(errors) == 1, errors
    return f"{errors[0].field}: {errors[0].message}"


def test_an_empty_advisory_file_says_it_is_empty() -> None:
    for data in (b"", b"  \n", b"# only a comment\n"):
        message = only_error("osv", data)
        assert "NoneType" not in message
        assert "empty" in message or "no document" in message


def test_truncated_json_gets_the_json_error_with_line_and_column() -> None:
    message = only_error("osv", b'{\n  "id": "GHSA-x",\n  "affected": [')
    assert message.startswith("$: not valid JSON: ")
    assert "line 3 column" in message
    assert "YAML" not in message


def test_an_sbom_given_as_an_advisory_says_it_is_an_sbom() -> None:
    message = only_error("osv", SBOM)
    assert message == "$: this file is a CycloneDX 1.5 SBOM, not an OSV advisory; publish it as 'sbom'"
    assert "SBOM" in only_error("vex", SBOM)


def test_the_right_kind_still_parses() -> None:
    result = parse_file("sbom", SBOM, "bom.json", tenant="t", image_digest="sha256:" + "a" * 64)
    assert len(result.messages) == 1
