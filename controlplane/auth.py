"""Bearer tokens → (tenant, scopes), and HMAC-SHA256 for feed webhooks. Constant-time comparisons only."""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import threading
from dataclasses import dataclass

from controlplane import webhook_sig
from controlplane.config import AccessConfig, ConfigError, WebhookSource, load_access
from controlplane.ratelimit import RateLimiter

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
        self.nonces = webhook_sig.NonceCache()
        # Failed webhook signatures, per client address: guessing costs time (10 at once, then 1 a second).
        self.failed_signatures = RateLimiter(1.0, 10)

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

    def webhook_source(
        self, kind: str, body: bytes, signature: str | None, now: float
    ) -> tuple[WebhookSource | None, str]:
        """The configured source whose secret signed ``body`` for ``kind`` at a fresh time with an unused
        nonce (``controlplane.webhook_sig``), and else why not: ``signature`` | ``stale`` | ``replayed``."""
        parsed = webhook_sig.parse(signature)
        if parsed is None:
            return None, "signature"
        presented = parsed.digest.encode("ascii")
        found: WebhookSource | None = None
        for source in self.access.webhooks:
            expected = webhook_sig.digest(source.secret, parsed.timestamp, parsed.nonce, kind, body)
            if (
                hmac.compare_digest(presented, expected.encode("ascii"))
                and found is None
                and kind in source.kinds
            ):
                found = source
        if found is None:
            return None, "signature"
        if not webhook_sig.fresh(parsed, now):
            return None, "stale"
        if not self.nonces.first_use(found.source, parsed.nonce, now):
            return None, "replayed"
        return found, ""


def sign_body(secret: bytes, body: bytes, kind: str, at: float, nonce: str | None = None) -> str:
    """The header value a feed sender puts in ``X-Stella-Signature`` (see ``controlplane.webhook_sig``)."""
    return webhook_sig.sign(secret, kind, body, int(at), nonce)
