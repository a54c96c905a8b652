"""telemetry.logs: JSON lines with context fields, and key material never written."""

from __future__ import annotations

import base64
import io
import logging
from collections.abc import Iterator

import orjson
import pytest

from telemetry.logs import MASK, configure_logging, json_handler, redact_text, resolve_level

SEED = bytes(range(32))
PRIVATE = bytes(range(100, 164))
SEED_B64 = base64.b64encode(SEED).decode()
PRIVATE_B64 = base64.b64encode(PRIVATE).decode()
SEED_URLSAFE = base64.urlsafe_b64encode(bytes(range(200, 232))).decode().rstrip("=")
DIGEST = "sha256:" + "ab" * 32


@pytest.fixture
def stream() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    saved = (list(root.handlers), root.level)
    buf = io.StringIO()
    configure_logging("DEBUG", buf)
    try:
        yield buf
    finally:
        root.handlers[:] = saved[0]
        root.setLevel(saved[1])


def lines(buf: io.StringIO) -> list[dict[str, object]]:
    return [orjson.loads(line) for line in buf.getvalue().splitlines()]


def test_one_json_object_per_record_with_context(stream: io.StringIO) -> None:
    log = logging.getLogger("agents.jobs")
    log.info(
        "job %s emitted",
        "j1",
        extra={
            "tenant": "acme",
            "run_id": "r1",
            "job_id": "j1",
            "topic": "jobs",
            "partition": 3,
            "offset": 42,
            "image_digest": DIGEST,
        },
    )
    log.debug("plain")
    first, second = lines(stream)
    assert list(first)[:10] == [
        "ts",
        "level",
        "logger",
        "msg",
        "tenant",
        "run_id",
        "job_id",
        "topic",
        "partition",
        "offset",
    ]
    assert first["msg"] == "job j1 emitted"
    assert first["level"] == "INFO"
    assert first["logger"] == "agents.jobs"
    assert first["partition"] == 3
    assert first["offset"] == 42
    assert first["image_digest"] == DIGEST  # digests are identifiers, not secrets
    assert str(first["ts"]).endswith("Z")
    assert set(second) == {"ts", "level", "logger", "msg"}


def test_level_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STELLA_LOG_LEVEL", "warning")
    assert resolve_level() == logging.WARNING
    assert resolve_level("debug") == logging.DEBUG
    monkeypatch.setenv("STELLA_LOG_LEVEL", "LOUD")
    with pytest.raises(SystemExit, match="STELLA_LOG_LEVEL"):
        resolve_level()


def test_configure_twice_keeps_one_handler(stream: io.StringIO) -> None:
    other = io.StringIO()
    configure_logging("INFO", other)
    logging.getLogger("x").info("once")
    assert other.getvalue().count("once") == 1
    assert stream.getvalue() == ""


SECRET_MESSAGES = [
    f"loaded signing seed {SEED_B64}",
    f"seed={SEED.hex()}",
    f"private key: {PRIVATE_B64}",
    f"private_key b'{PRIVATE.hex()}'",
    f"Seed (urlsafe) {SEED_URLSAFE}",
    "password=hunter2-very-secret",
    "api_token: 'hunter2-very-secret'",
    'config {"client_secret": "hunter2-very-secret"}',
    "Authorization: Bearer hunter2-very-secret",
    "connecting to mongodb://admin:hunter2-very-secret@db:27017/stella",
    "-----BEGIN PRIVATE KEY-----\nhunter2-very-secret\n-----END PRIVATE KEY-----",
]
NEEDLES = [SEED_B64, SEED.hex(), PRIVATE_B64, PRIVATE.hex(), SEED_URLSAFE, "hunter2-very-secret"]


@pytest.mark.parametrize("message", SECRET_MESSAGES)
def test_secrets_in_messages_are_masked(stream: io.StringIO, message: str) -> None:
    logging.getLogger("signing").warning(message)
    logging.getLogger("signing").warning("again: %s", message)  # through %-args too
    out = stream.getvalue()
    assert MASK in out
    for needle in NEEDLES:
        assert needle not in out


def test_secret_named_extras_are_masked_at_any_depth(stream: io.StringIO) -> None:
    logging.getLogger("x").info(
        "settings",
        extra={
            "signing_key": SEED_B64,
            "api_token": "hunter2-very-secret",
            "settings": {"mongo_url": "mongodb://u:hunter2-very-secret@h/", "nested": [{"password": "p4ss"}]},
            "keyid": "ab12",
        },
    )
    (doc,) = lines(stream)
    assert doc["signing_key"] == MASK
    assert doc["api_token"] == MASK
    assert doc["keyid"] == "ab12"  # a key *id* is a public hint
    out = stream.getvalue()
    for needle in [*NEEDLES, "p4ss"]:
        assert needle not in out


def test_secrets_in_exceptions_are_masked(stream: io.StringIO) -> None:
    try:
        raise ValueError(f"cannot parse seed {SEED_B64}")
    except ValueError:
        logging.getLogger("x").exception("key file unreadable")
    (doc,) = lines(stream)
    assert "ValueError" in str(doc["exc"])
    assert SEED_B64 not in stream.getvalue()


def test_other_handlers_see_redacted_records_too() -> None:
    # The filter sits on our handler; a record passing through it is redacted in place, so a second
    # handler later in the chain cannot print the secret either.
    buf, plain = io.StringIO(), io.StringIO()
    logger = logging.getLogger("test.chain")
    logger.propagate = False
    second = logging.StreamHandler(plain)
    logger.handlers[:] = [json_handler(buf), second]
    try:
        logger.error("seed %s", SEED_B64)
    finally:
        logger.handlers.clear()
        logger.propagate = True
    assert SEED_B64 not in buf.getvalue()
    assert SEED_B64 not in plain.getvalue()


def test_ordinary_text_is_left_alone() -> None:
    text = f"image {DIGEST} tenant acme run r-1 partition=3 offset=17 keyid=0a1b advisory GHSA-xxxx-yyyy"
    assert redact_text(text) == text
