"""Feed webhook signatures (issue 14 #10): the HMAC covers a timestamp, a nonce and the feed kind as well as
the raw body, so a captured request cannot be replayed (same nonce within the window), replayed later
(outside the window) or re-aimed at another kind.

Header: ``X-Stella-Signature: t=<unix seconds>,n=<nonce>,sha256=<hex hmac>`` where the HMAC-SHA256 key is
the source's secret and the message is ``b"<t>.<n>.<kind>." + body``. Pure, except the nonce cache's memory.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
from collections import OrderedDict
from dataclasses import dataclass

WINDOW_SECONDS = 300
_NONCE = re.compile(r"[A-Za-z0-9_-]{8,128}")
_HEX = re.compile(r"[0-9a-f]{64}")


@dataclass(frozen=True, slots=True)
class Signature:
    timestamp: int
    nonce: str
    digest: str


def message(timestamp: int, nonce: str, kind: str, body: bytes) -> bytes:
    return f"{timestamp}.{nonce}.{kind}.".encode("ascii") + body


def digest(secret: bytes, timestamp: int, nonce: str, kind: str, body: bytes) -> str:
    return hmac.new(secret, message(timestamp, nonce, kind, body), hashlib.sha256).hexdigest()


def sign(secret: bytes, kind: str, body: bytes, timestamp: int, nonce: str | None = None) -> str:
    """The header value a feed sender puts in ``X-Stella-Signature``."""
    nonce = nonce if nonce is not None else secrets.token_hex(16)
    return f"t={timestamp},n={nonce},sha256={digest(secret, timestamp, nonce, kind, body)}"


def parse(header: str | None) -> Signature | None:
    """The header's parts, or None when it is not exactly ``t=…,n=…,sha256=…`` with sane values."""
    if not header or len(header) > 400:
        return None
    parts: dict[str, str] = {}
    for item in header.strip().split(","):
        name, sep, value = item.strip().partition("=")
        if not sep or name in parts:
            return None
        parts[name.lower()] = value.strip()
    if set(parts) != {"t", "n", "sha256"}:
        return None
    if not parts["t"].isdigit() or len(parts["t"]) > 12:
        return None
    if not _NONCE.fullmatch(parts["n"]) or not _HEX.fullmatch(parts["sha256"].lower()):
        return None
    return Signature(int(parts["t"]), parts["n"], parts["sha256"].lower())


def fresh(signature: Signature, now: float, window: int = WINDOW_SECONDS) -> bool:
    return abs(now - signature.timestamp) <= window


class NonceCache:
    """Nonces seen within the window, per source (bounded: the oldest are forgotten first; a forgotten one
    is older than the window by then, or the cache is under a flood and the window check still holds)."""

    def __init__(self, capacity: int = 100_000, window: int = WINDOW_SECONDS) -> None:
        self.capacity = capacity
        self.window = window
        self._seen: OrderedDict[tuple[str, str], float] = OrderedDict()
        self._lock = threading.Lock()

    def first_use(self, source: str, nonce: str, now: float) -> bool:
        """True the first time (source, nonce) is presented within the window; False for a replay."""
        with self._lock:
            while self._seen:
                oldest_key, stamp = next(iter(self._seen.items()))
                if now - stamp <= 2 * self.window and len(self._seen) < self.capacity:
                    break
                self._seen.pop(oldest_key)
            if (source, nonce) in self._seen:
                return False
            self._seen[(source, nonce)] = now
            return True
