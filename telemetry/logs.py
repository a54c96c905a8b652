"""Structured JSON logs (docs/architecture.md §9): one object per line, with tenant, run and job ids when
given.

    log.info("job emitted", extra={"tenant": t, "run_id": r, "job_id": j, "topic": "jobs", "partition": 3})

gives ``{"ts":"2025-01-02T03:04:05.678Z","level":"INFO","logger":"agents.jobs","msg":"job emitted",
"tenant":"t",...}``. Other extras pass through as well; keys are written in a fixed order (the known fields
first, then the rest sorted) so logs diff cleanly.

Key material must never reach a log line. ``RedactingFilter`` (installed on the handler, so it also covers
third-party loggers that propagate to the root) masks extras whose *name* looks secret (key, secret, token,
password, ...) and message fragments that look like credentials: ``password=...`` pairs, bearer tokens,
PEM private keys, URL user-info, and base64 / hex blobs of 32 or 64 bytes following "seed" or "private"
(how Ed25519 seeds and private keys get printed).
"""

from __future__ import annotations

import logging
import os
import re
import sys
import traceback
from datetime import UTC, datetime
from typing import Any, TextIO

import orjson

MASK = "***"

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_RECORD_ATTRS = frozenset(
    vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None)).keys() | {"message", "asctime"}
)
CONTEXT_FIELDS = ("tenant", "run_id", "job_id", "topic", "partition", "offset")

_SECRET_NAME = re.compile(
    r"key|secret|token|passw|passphrase|credential|authorization|cookie|seed|private", re.IGNORECASE
)
# Names that match _SECRET_NAME but carry no secret and are needed to follow a message through Kafka.
_SAFE_NAMES = frozenset({"key_b64_len", "keyid", "kafka_key", "partition_key", "public_key", "public_keys"})

_B64_32_64 = r"(?:[A-Za-z0-9+/_-]{43}=?|[A-Za-z0-9+/_-]{86}(?:==)?)(?![A-Za-z0-9+/_=-])"
_HEX_32_64 = r"(?:[0-9a-fA-F]{128}|[0-9a-fA-F]{64})(?![0-9a-fA-F])"
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    (
        re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(?:-----END [A-Z ]*PRIVATE KEY-----|$)", re.DOTALL),
        MASK,
    ),
    # "seed: <b64>", "private key=<hex>", "signing_seed b'...'": up to 24 non-alphanumerics or words
    # like "key"/"bytes" may sit between the word and the blob.
    (
        re.compile(
            r"((?:seed|private)(?:[\s\w'\"=:,()\[\]{}-]{0,24}?))(?<![A-Za-z0-9+/])("
            + _B64_32_64
            + "|"
            + _HEX_32_64
            + ")",
            re.IGNORECASE,
        ),
        r"\1" + MASK,
    ),
    (re.compile(r"(\bbearer\s+)[A-Za-z0-9._~+/=-]+", re.IGNORECASE), r"\1" + MASK),
    # mongodb://user:pass@host: the password lives in the URL.
    (re.compile(r"(\b[a-z][a-z0-9+.-]*://[^/\s:@]+:)[^@\s/]+(@)", re.IGNORECASE), r"\1" + MASK + r"\2"),
)


_ASSIGNMENT = re.compile(
    r"(?P<name>\b[\w.-]*(?:key|secret|token|passw(?:or)?d|passphrase|credential)s?[\w.-]*)\b"
    r"(?P<sep>[\"']?\s*[=:]\s*[\"']?)(?P<value>[^\s\"',;&}]+)",
    re.IGNORECASE,
)


def _mask_assignment(match: re.Match[str]) -> str:
    if match["name"].lower() in _SAFE_NAMES or match["value"] == MASK:
        return match[0]
    return f"{match['name']}{match['sep']}{MASK}"


def redact_text(text: str) -> str:
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return _ASSIGNMENT.sub(_mask_assignment, text)


def is_secret_name(name: str) -> bool:
    return name.lower() not in _SAFE_NAMES and _SECRET_NAME.search(name) is not None


def redact_value(value: Any) -> Any:
    """Recursively mask secret-named keys and secret-looking strings in an extra's value."""
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, bytes):
        return redact_text(value.decode("utf-8", "replace"))
    if isinstance(value, dict):
        return {k: MASK if is_secret_name(str(k)) else redact_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [redact_value(v) for v in value]
    if isinstance(value, int | float | bool) or value is None:
        return value
    return redact_text(str(value))


class RedactingFilter(logging.Filter):
    """Mask secrets in the rendered message, its extras and its exception text. Never drops a record:
    a log line with a masked value is more useful than a missing one."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string must not lose the record (or its secrets)
            message = f"{record.msg!s} {record.args!r}"
        record.msg = redact_text(message)
        record.args = None
        for name in list(vars(record)):
            if name in _RECORD_ATTRS:
                continue
            setattr(record, name, MASK if is_secret_name(name) else redact_value(getattr(record, name)))
        if record.exc_info and record.exc_info[0] is not None:
            record.exc_text = redact_text("".join(traceback.format_exception(*record.exc_info)).rstrip())
            # Formatters (ours and others') re-render exc_info when present; keep only the redacted text.
            record.exc_info = None
        elif record.exc_text:
            record.exc_text = redact_text(record.exc_text)
        if record.stack_info:
            record.stack_info = redact_text(record.stack_info)
        return True


def _timestamp(created: float) -> str:
    moment = datetime.fromtimestamp(created, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ts, level, logger, msg, then context fields, then other extras."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": _timestamp(record.created),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        extras = {k: v for k, v in vars(record).items() if k not in _RECORD_ATTRS}
        for name in CONTEXT_FIELDS:
            if extras.get(name) is not None:
                doc[name] = extras.pop(name)
        for name in sorted(extras):
            if not name.startswith("_"):
                doc[name] = extras[name]
        if record.exc_info and record.exc_info[0] is not None:
            doc["exc"] = redact_text(self.formatException(record.exc_info))
        elif record.exc_text:
            doc["exc"] = record.exc_text
        if record.stack_info:
            doc["stack"] = record.stack_info
        return orjson.dumps(doc, default=str).decode()


class _StellaHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Marks the handler configure_logging installed, so calling it again replaces it."""


def is_stella_handler(handler: logging.Handler) -> bool:
    """True for handlers this module installed (callers that manage logging drop the others)."""
    return isinstance(handler, _StellaHandler)


def json_handler(stream: TextIO | None = None) -> logging.Handler:
    """A handler with the JSON formatter and the redaction filter, for code that manages its own logging
    (faust's Worker takes ``loghandlers=[json_handler()]``)."""
    handler = _StellaHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RedactingFilter())
    return handler


def resolve_level(level: str | None = None) -> int:
    name = (level or os.environ.get("STELLA_LOG_LEVEL") or "INFO").strip().upper()
    value = logging.getLevelName(name)
    if not isinstance(value, int):
        raise SystemExit(f"configuration error: STELLA_LOG_LEVEL={name!r} is not a logging level")
    return value


def configure_logging(level: str | None = None, stream: TextIO | None = None) -> logging.Logger:
    """Send every log record to ``stream`` (stderr) as JSON. ``level`` defaults to STELLA_LOG_LEVEL, then
    INFO. Idempotent: a second call replaces the handler it installed and leaves others alone."""
    root = logging.getLogger()
    for handler in list(root.handlers):
        if isinstance(handler, _StellaHandler):
            root.removeHandler(handler)
    # First in line, so the redaction filter runs before any handler installed earlier sees the record.
    root.handlers.insert(0, json_handler(stream))
    root.setLevel(resolve_level(level))
    logging.captureWarnings(True)
    return root
