"""Bearer tokens → (tenant, scopes), and HMAC-SHA256 for feed webhooks. Constant-time comparisons only."""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import threading
from dataclasses import dataclass

from controlplane.config import AccessConfig, ConfigError, WebhookSource, load_access

log = logging.getLogger("controlplane.auth")

SIGNATURE_HEADER = "X-Stella-Signature"


@dataclass(frozen=True, slots=True)
class Principal:
    tenant: str
    scopes: frozenset[str]
    name: str


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class AccessControl:
    """Holds the access file and re-reads it when its modification time changes (a broken new file is
    logged and the previous one stays in force)."""

    def __init__(self, path: str, env_secret: str = "", access: AccessConfig | None = None) -> None:
        self.path = path
        self.env_secret = env_secret
        self._lock = threading.Lock()
        self._mtime = self._stat()
        self._access = access if access is not None else load_access(path, env_secret)

    def _stat(self) -> float | None:
        if not self.path:
            return None
        try:
            return os.stat(self.path).st_mtime
        except OSError:
            return None

    @property
    def access(self) -> AccessConfig:
        mtime = self._stat()
        if mtime is not None and mtime != self._mtime:
            with self._lock:
                if mtime != self._mtime:
                    try:
                        self._access = load_access(self.path, self.env_secret)
                        log.info("reloaded access file %s", self.path)
                    except ConfigError as exc:
                        log.error("keeping the previous access file: %s", exc)
                    self._mtime = mtime
        return self._access

    def authenticate(self, token: str) -> Principal | None:
        """The principal for a bearer token. Every entry is compared (no early exit)."""
        presented = token_hash(token).encode("ascii")
        found: Principal | None = None
        for entry in self.access.tokens:
            if hmac.compare_digest(presented, entry.token_sha256.encode("ascii")) and found is None:
                found = Principal(entry.tenant, entry.scopes, entry.name)
        return found

    def webhook_source(self, kind: str, body: bytes, signature: str | None) -> WebhookSource | None:
        """The configured source whose secret signed ``body`` (``sha256=<hex>``), if any may post ``kind``."""
        if not signature:
            return None
        scheme, _, given = signature.strip().partition("=")
        if scheme.lower() != "sha256" or not given:
            return None
        presented = given.strip().lower().encode("ascii", "replace")
        found: WebhookSource | None = None
        for source in self.access.webhooks:
            expected = hmac.new(source.secret, body, hashlib.sha256).hexdigest().encode("ascii")
            if hmac.compare_digest(presented, expected) and found is None and kind in source.kinds:
                found = source
        return found


def sign_body(secret: bytes, body: bytes) -> str:
    """The header value a feed sender puts in ``X-Stella-Signature``."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()
