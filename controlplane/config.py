"""The control plane's own settings and its access file (tokens and webhook secrets).

Access file (JSON or YAML), path from ``--tokens`` or ``$STELLA_API_TOKENS``::

    tokens:                       # bearer tokens; only their sha256 is stored
      - token_sha256: "<64 hex>"  # sha256 of the token text, e.g. `printf %s "$TOKEN" | sha256sum`
        tenant: acme
        scopes: [scheduler.runs.read, scheduler.runs.write, scheduler.runs.manage]
        name: ci                  # shows up in logs and as requested_by
    webhooks:                     # feed sources: HMAC-SHA256 secrets (optional)
      - source: osv-mirror
        secret: "<shared secret>" # or secret_env: NAME_OF_ENV_VAR
        kinds: [advisories, vex]  # default: both

``$STELLA_WEBHOOK_SECRET``, when set, adds a source named ``default`` allowed for both kinds.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from agents.settings import Settings, env_float, env_int

SCOPES = ("scheduler.runs.read", "scheduler.runs.write", "scheduler.runs.manage")
FEED_KINDS = ("advisories", "vex")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


class ConfigError(ValueError):
    """The access file or a setting is unusable. Messages never contain secrets."""


@dataclass(frozen=True, slots=True)
class TokenEntry:
    token_sha256: str
    tenant: str
    scopes: frozenset[str]
    name: str


@dataclass(frozen=True, slots=True)
class WebhookSource:
    source: str
    secret: bytes = field(repr=False)
    kinds: frozenset[str]


@dataclass(frozen=True, slots=True)
class AccessConfig:
    tokens: tuple[TokenEntry, ...] = ()
    webhooks: tuple[WebhookSource, ...] = ()


def _env_float(name: str, default: float) -> float:
    try:
        return env_float(name, default)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _env_int(name: str, default: int) -> int:
    try:
        return env_int(name, default)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


@dataclass(frozen=True)
class ApiConfig:
    tokens_path: str = ""
    webhook_secret: str = field(default="", repr=False)
    max_body_bytes: int = 1_048_576
    feed_rate_per_second: float = 5.0
    feed_burst: int = 10
    projector_group: str = "stella-sched-projector"
    min_position_timeout_seconds: float = 10.0
    # Every read-model call is bounded by this (client-side operation timeout and an asyncio bound), so a
    # stalled database answers 503 + Retry-After instead of hanging requests, readiness and shutdown.
    db_timeout_seconds: float = 5.0
    default_page_size: int = 100
    host: str = "127.0.0.1"
    port: int = 8080

    @classmethod
    def from_env(cls, settings: Settings, **overrides: Any) -> ApiConfig:
        values: dict[str, Any] = {
            "tokens_path": os.environ.get("STELLA_API_TOKENS", ""),
            "webhook_secret": os.environ.get("STELLA_WEBHOOK_SECRET", ""),
            "max_body_bytes": _env_int("STELLA_API_MAX_BODY_BYTES", cls.max_body_bytes),
            "feed_rate_per_second": _env_float("STELLA_FEED_RATE", cls.feed_rate_per_second),
            "feed_burst": _env_int("STELLA_FEED_BURST", cls.feed_burst),
            "projector_group": os.environ.get("STELLA_PROJECTOR_GROUP", "") or f"{settings.app_id}-projector",
            "min_position_timeout_seconds": _env_float(
                "STELLA_API_MIN_POSITION_TIMEOUT", cls.min_position_timeout_seconds
            ),
            "db_timeout_seconds": _env_float("STELLA_API_DB_TIMEOUT", cls.db_timeout_seconds),
            "host": os.environ.get("STELLA_API_HOST", cls.host),
            "port": _env_int("STELLA_API_PORT", cls.port),
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


def _text(item: Mapping[str, Any], key: str, where: str) -> str:
    value = item.get(key)
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}: {key!r} must be a non-empty string")
    return value


def parse_access(doc: Any, origin: str = "access file", env_secret: str = "") -> AccessConfig:
    if doc is None:
        doc = {}
    if not isinstance(doc, dict):
        raise ConfigError(f"{origin}: expected an object with 'tokens' (and optionally 'webhooks')")
    unknown = set(doc) - {"tokens", "webhooks"}
    if unknown:
        raise ConfigError(f"{origin}: unknown keys {sorted(unknown)}")
    tokens: list[TokenEntry] = []
    for i, item in enumerate(doc.get("tokens") or []):
        where = f"{origin}: tokens[{i}]"
        if not isinstance(item, dict):
            raise ConfigError(f"{where}: expected an object")
        if "token" in item:
            raise ConfigError(f"{where}: store token_sha256, never the token itself")
        digest = _text(item, "token_sha256", where).lower()
        if not _HEX64.match(digest):
            raise ConfigError(f"{where}: token_sha256 must be 64 hex characters")
        scopes = item.get("scopes") or []
        if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
            raise ConfigError(f"{where}: scopes must be a list of strings")
        bad = sorted(set(scopes) - set(SCOPES))
        if bad:
            raise ConfigError(f"{where}: unknown scopes {bad}; known: {list(SCOPES)}")
        name = item.get("name") or f"token-{i}"
        tokens.append(TokenEntry(digest, _text(item, "tenant", where), frozenset(scopes), str(name)))
    hooks: list[WebhookSource] = []
    for i, item in enumerate(doc.get("webhooks") or []):
        where = f"{origin}: webhooks[{i}]"
        if not isinstance(item, dict):
            raise ConfigError(f"{where}: expected an object")
        source = _text(item, "source", where)
        if "secret_env" in item:
            secret = os.environ.get(_text(item, "secret_env", where), "")
            if not secret:
                raise ConfigError(f"{where}: environment variable {item['secret_env']!r} is empty")
        else:
            secret = _text(item, "secret", where)
        kinds = item.get("kinds") or list(FEED_KINDS)
        if not isinstance(kinds, list) or set(kinds) - set(FEED_KINDS):
            raise ConfigError(f"{where}: kinds must be a subset of {list(FEED_KINDS)}")
        hooks.append(WebhookSource(source, secret.encode(), frozenset(kinds)))
    if env_secret:
        hooks.append(WebhookSource("default", env_secret.encode(), frozenset(FEED_KINDS)))
    names = [h.source for h in hooks]
    if len(names) != len(set(names)):
        raise ConfigError(f"{origin}: webhook source names must be unique")
    return AccessConfig(tuple(tokens), tuple(hooks))


def load_access(path: str, env_secret: str = "") -> AccessConfig:
    """The access file at ``path`` ("" → no tokens), plus the environment's webhook secret."""
    if not path:
        return parse_access({}, env_secret=env_secret)
    file = Path(path)
    try:
        doc = yaml.safe_load(file.read_text(encoding="utf-8"))  # JSON is YAML
    except OSError as exc:
        raise ConfigError(f"cannot read access file {file}: {type(exc).__name__}") from None
    except yaml.YAMLError:
        raise ConfigError(f"access file {file} is not valid JSON or YAML") from None
    return parse_access(doc, str(file), env_secret)
