"""DSSE envelopes signed with Ed25519 (docs/architecture.md §7).

The signature covers PAE(payloadType, payload), never the envelope's JSON, so re-encoding an envelope cannot
change what was signed. The keyid in a signature is a hint: it picks the key to try first, but a signature
only counts when a *trusted* key verifies it, whatever keyid it claims.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import orjson
from nacl.exceptions import BadSignatureError
from nacl.signing import SigningKey as _NaclSigningKey
from nacl.signing import VerifyKey

from schemas.messages import Signature, SignedEnvelope
from signing.keys import SigningKey, keyid_of

PAYLOAD_TYPE_INTOTO = "application/vnd.in-toto+json"

Failure = Literal["bad-signature", "unknown-keyid", "malformed", "payload-type"]


def pae(payload_type: str, body: bytes) -> bytes:
    """Pre-Authentication Encoding: ``DSSEv1 SP LEN(type) SP type SP LEN(body) SP body``."""
    type_bytes = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(type_bytes), type_bytes, len(body), body)


@dataclass(frozen=True, slots=True)
class VerifyResult:
    ok: bool
    keyid: str | None = None
    statement: Any = None
    payload_type: str | None = None
    error: Failure | None = None
    detail: str = ""


def sign(payload_type: str, body: bytes, keys: Sequence[SigningKey | _NaclSigningKey]) -> SignedEnvelope:
    """One envelope with a signature per key, in the order given (so replays are byte-identical)."""
    if not keys:
        raise ValueError("sign() needs at least one key")
    message = pae(payload_type, body)
    signatures = []
    for key in keys:
        wrapped = key if isinstance(key, SigningKey) else SigningKey(key)
        sig = base64.b64encode(wrapped.sign_bytes(message)).decode("ascii")
        signatures.append(Signature(keyid=wrapped.keyid, sig=sig))
    return SignedEnvelope(
        payloadType=payload_type, payload=base64.b64encode(body).decode("ascii"), signatures=signatures
    )


def _b64decode(text: str) -> bytes:
    # Signing always emits standard base64; verifiers also accept the URL-safe alphabet the DSSE spec allows.
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return base64.b64decode(text, altchars=b"-_", validate=True)


def _check(key: VerifyKey, message: bytes, sig: bytes) -> bool:
    try:
        key.verify(message, sig)
    except (BadSignatureError, ValueError):
        return False
    return True


def verify(
    envelope: SignedEnvelope | Mapping[str, Any],
    trusted: Mapping[str, VerifyKey],
    *,
    payload_type: str | None = PAYLOAD_TYPE_INTOTO,
) -> VerifyResult:
    """Check ``envelope`` against ``trusted`` keys (keyid -> key); decode the payload as JSON once verified.

    Failures, most specific wins: ``malformed`` (not an envelope, bad base64, no signatures, payload not
    JSON), ``payload-type`` (not the expected type; pass ``payload_type=None`` to accept any),
    ``bad-signature`` (a trusted key with the claimed keyid exists but no trusted key verifies),
    ``unknown-keyid`` (no claimed keyid is trusted and no trusted key verifies).
    """
    try:
        env = envelope if isinstance(envelope, SignedEnvelope) else SignedEnvelope.model_validate(envelope)
    except ValueError as exc:
        return VerifyResult(ok=False, error="malformed", detail=f"not a DSSE envelope: {type(exc).__name__}")
    if payload_type is not None and env.payloadType != payload_type:
        return VerifyResult(
            ok=False,
            error="payload-type",
            payload_type=env.payloadType,
            detail=f"expected {payload_type!r}, got {env.payloadType!r}",
        )
    if not env.signatures:
        return VerifyResult(ok=False, error="malformed", payload_type=env.payloadType, detail="no signatures")
    try:
        body = _b64decode(env.payload)
    except (binascii.Error, ValueError):
        return VerifyResult(
            ok=False, error="malformed", payload_type=env.payloadType, detail="payload base64"
        )
    message = pae(env.payloadType, body)

    claimed_known = False
    verified_by: str | None = None
    for signature in env.signatures:
        hinted = trusted.get(signature.keyid)
        claimed_known = claimed_known or hinted is not None
        try:
            sig = _b64decode(signature.sig)
        except (binascii.Error, ValueError):
            continue
        if hinted is not None and _check(hinted, message, sig):
            verified_by = keyid_of(hinted)
            break
        # The keyid is only a hint (it may be stale, re-derived differently, or absent), so fall back to
        # every trusted key; trust comes from the key that verifies, never from the claim.
        for candidate in trusted.values():
            if candidate is not hinted and _check(candidate, message, sig):
                verified_by = keyid_of(candidate)
                break
        if verified_by is not None:
            break
    if verified_by is None:
        error: Failure = "bad-signature" if claimed_known else "unknown-keyid"
        return VerifyResult(
            ok=False, error=error, payload_type=env.payloadType, detail="no trusted key verifies"
        )
    try:
        statement = orjson.loads(body)
    except orjson.JSONDecodeError:
        return VerifyResult(
            ok=False,
            keyid=verified_by,
            error="malformed",
            payload_type=env.payloadType,
            detail="payload JSON",
        )
    return VerifyResult(ok=True, keyid=verified_by, statement=statement, payload_type=env.payloadType)
