"""schemas.codec: the one decode path (and its encoder and dead-letter builder)."""

from __future__ import annotations

import base64
from datetime import UTC, datetime

import orjson
import pytest

from ingest.osv import parse_osv
from schemas.codec import TOPIC_MODELS, Decoded, Rejected, dead_letter, decode, encode, expected_schema
from schemas.messages import SOURCE_MODELS, AdvisoryDelta, DeadLetter, Inventory, SignedEnvelope
from tests.conftest import sample_data

T = datetime(2024, 6, 1, tzinfo=UTC)
INVENTORY = Inventory.model_validate(
    {
        "tenant": "t1",
        "image_digest": "sha256:aa",
        "components": [{"purl": "pkg:npm/a@1", "package": "npm/a", "version": "1"}],
        "observed_at": T,
    }
)


def test_topics_cover_sources_and_internal() -> None:
    assert set(SOURCE_MODELS) <= set(TOPIC_MODELS)
    assert {"impacts", "jobs", "job-results", "run-events", "deadletter"} <= set(TOPIC_MODELS)
    assert expected_schema("advisories") == "scheduler.advisory@1"
    assert expected_schema("events.signed") == "dsse.envelope@1"


def test_roundtrip_real_advisory() -> None:
    data = (sample_data() / "osv/ghsa/GHSA-vh95-rmgr-6w4m.json").read_bytes()
    [adv] = parse_osv(data, "x").messages
    value = encode(adv)
    assert value == encode(adv)  # canonical: same model, same bytes
    decoded = decode("advisories", b"GHSA-vh95-rmgr-6w4m", value, 1 << 20)
    assert isinstance(decoded, Decoded)
    assert decoded.model == adv
    assert isinstance(decoded.model, AdvisoryDelta)
    assert b'"schema":"scheduler.advisory@1"' in value


def test_inventory_tombstone() -> None:
    decoded = decode("inventory", b"t1/sha256:aa", None, 100)
    assert decoded == Decoded("inventory", b"t1/sha256:aa", None)
    rejected = decode("advisories", b"k", None, 100)
    assert isinstance(rejected, Rejected)
    assert rejected.reason == "decode"


@pytest.mark.parametrize(
    ("topic", "value", "reason", "fragment"),
    [
        ("inventory", b"x" * 101, "oversized", "limit is 100"),
        ("inventory", b"{not json", "decode", "not JSON"),
        ("inventory", b"[1]", "decode", "not an object"),
        ("inventory", b'{"tenant": "t"}', "schema-unknown", "no 'schema' field"),
        ("inventory", b'{"schema": "scheduler.inventory@2"}', "schema-unknown", "scheduler.inventory@2"),
        ("inventory", b'{"schema": "scheduler.inventory@1", "tenant": "t"}', "validate", "image_digest"),
        ("nope", b"{}", "schema-unknown", "no message model"),
    ],
)
def test_rejections(topic: str, value: bytes, reason: str, fragment: str) -> None:
    rejected = decode(topic, None, value, 100)
    assert isinstance(rejected, Rejected)
    assert rejected.reason == reason
    assert fragment in rejected.message
    assert rejected.expected_schema == ("" if topic == "nope" else "scheduler.inventory@1")


def test_validate_message_names_paths() -> None:
    bad = orjson.loads(encode(INVENTORY))
    bad["components"][0]["version"] = 5
    bad["observed_at"] = "2024-06-01T00:00:00"
    rejected = decode("inventory", None, orjson.dumps(bad), 10_000)
    assert isinstance(rejected, Rejected)
    assert "components[0].version" in rejected.message
    assert "observed_at" in rejected.message


def test_signed_envelope_has_no_schema_field() -> None:
    env = SignedEnvelope(payloadType="application/vnd.in-toto+json", payload="e30=", signatures=[])
    decoded = decode("events.signed", b"k", encode(env), 1000)
    assert isinstance(decoded, Decoded)
    assert decoded.model == env


def test_dead_letter_keeps_original_bytes() -> None:
    value = b'{"schema": "scheduler.inventory@9"}'
    rejected = decode("inventory", b"key", value, 1000)
    assert isinstance(rejected, Rejected)
    dl = dead_letter(rejected, "inventory", 3, 42, b"key", value, T)
    assert isinstance(dl, DeadLetter)
    assert base64.b64decode(dl.value_b64 or "") == value
    assert base64.b64decode(dl.key_b64 or "") == b"key"
    assert (dl.reason, dl.expected_schema, dl.partition, dl.offset) == (
        "schema-unknown",
        "scheduler.inventory@1",
        3,
        42,
    )
    again = decode("deadletter", b"inventory", encode(dl), 10_000)
    assert isinstance(again, Decoded)
    assert again.model == dl
    tomb = dead_letter(Rejected("advisories", "decode", "", ""), "advisories", 0, 1, None, None, T)
    assert tomb.value_b64 is None
    assert tomb.error == "decode"
