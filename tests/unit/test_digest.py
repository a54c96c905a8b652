"""Issue 14 #2: one digest rule (schemas.digest), applied by the Kafka decoder, the file adapters and the CLI,
so a 200 KB "digest" is refused at the edge instead of making every downstream record too large."""

from __future__ import annotations

import re

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cli.main import main
from ingest.detect import parse_file
from schemas.codec import Decoded, Rejected, decode
from schemas.digest import DIGEST_HEX_LENGTHS, digest_problem, is_digest

GOOD = "sha256:" + "ab" * 32
HUGE = "sha256:" + "a" * 200_000
RULE = re.compile(r"(sha256:[0-9a-f]{64}|sha384:[0-9a-f]{96}|sha512:[0-9a-f]{128})")


@given(st.text(max_size=140))
def test_the_rule_is_algorithm_and_exact_lower_hex(text: str) -> None:
    assert is_digest(text) == bool(RULE.fullmatch(text))


@given(st.sampled_from(sorted(DIGEST_HEX_LENGTHS)), st.data())
def test_every_documented_algorithm_is_accepted(algorithm: str, data: st.DataObject) -> None:
    hexpart = data.draw(
        st.text(
            "0123456789abcdef", min_size=DIGEST_HEX_LENGTHS[algorithm], max_size=DIGEST_HEX_LENGTHS[algorithm]
        )
    )
    assert digest_problem(f"{algorithm}:{hexpart}") is None


def test_a_huge_digest_gets_a_short_message() -> None:
    problem = digest_problem(HUGE)
    assert problem is not None
    assert len(problem) < 300
    assert "200007 characters" in problem
    assert digest_problem("SHA256:" + "A" * 64) is not None
    assert digest_problem(12) is not None


def runtime(digest: str) -> bytes:
    return orjson.dumps(
        {
            "schema": "scheduler.runtime@1",
            "tenant": "acme",
            "image_digest": digest,
            "cluster": "c",
            "namespace": "n",
            "state": "running",
            "observed_at": "2026-01-01T00:00:00Z",
        }
    )


def test_the_decoder_rejects_a_source_record_with_a_bad_digest() -> None:
    assert isinstance(decode("runtime", b"k", runtime(GOOD), 1_048_576), Decoded)
    bad = decode("runtime", b"k", runtime(HUGE), 1_048_576)
    assert isinstance(bad, Rejected)
    assert bad.reason == "validate"
    assert "image_digest" in bad.message
    recheck = {
        "schema": "scheduler.recheck@1",
        "tenant": "acme",
        "recheck_id": "r",
        "requested_at": "2026-01-01T00:00:00Z",
        "selector": {"digests": [GOOD, "sha256:zz"]},
    }
    bad = decode("rechecks", b"acme", orjson.dumps(recheck), 1_048_576)
    assert isinstance(bad, Rejected)
    assert "selector.digests[1]" in bad.message


def test_the_sbom_adapter_refuses_a_bad_digest_by_field() -> None:
    bom = orjson.dumps(
        {
            "bomFormat": "CycloneDX",
            "specVersion": "1.5",
            "metadata": {"timestamp": "2026-01-01T00:00:00Z"},
            "components": [{"type": "library", "name": "a", "version": "1", "purl": "pkg:npm/a@1"}],
        }
    )
    result = parse_file("sbom", bom, "bom.json", tenant="acme", image_digest=HUGE)
    assert not result.messages
    assert [e.field for e in result.errors if e.level == "error"] == ["image_digest"]
    good = parse_file("sbom", bom, "bom.json", tenant="acme", image_digest=GOOD)
    assert len(good.messages) == 1


def test_the_cli_refuses_a_bad_image_digest_as_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["publish", "sbom", "--tenant", "acme", "--image-digest", "sha256:abc", "x.json"]) == 2
    assert "sha256 needs exactly 64 lower-case hex digits" in capsys.readouterr().err
    assert main(["preview", "--sbom", "x", "--advisory", "y", "--image-digest", HUGE]) == 2
    assert len(capsys.readouterr().err) < 2000
