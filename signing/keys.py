"""Ed25519 key handling for the signer and for verifiers (docs/architecture.md §7).

Private keys live in a JSON file written with mode 0600 (atomically, so a crash never leaves a half key) or
in the ``STELLA_SIGNING_KEY`` environment variable as a base64 seed. Public keys are published as JSON
documents; a verifier loads a set of them (a file or a folder) so that several keys can be active during a
rotation. Key material never appears in a repr, an exception message or a log line.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from nacl.signing import SigningKey as _NaclSigningKey
from nacl.signing import VerifyKey

ENV_VAR = "STELLA_SIGNING_KEY"
ALGORITHM = "ed25519"

__all__ = [
    "ALGORITHM",
    "ENV_VAR",
    "KeyFileError",
    "SigningKey",
    "VerifyKey",
    "generate_keypair",
    "keyid_of",
    "load_public_keys",
    "load_signing_key",
    "public_key_document",
]


class KeyFileError(ValueError):
    """A key file, folder or variable cannot be used. The message never contains key material."""


def keyid_of(verify_key: VerifyKey) -> str:
    """Hex sha256 of the raw 32-byte public key: stable, public, and only a hint for verifiers."""
    return hashlib.sha256(bytes(verify_key)).hexdigest()


class SigningKey:
    """An Ed25519 private key with its keyid. ``repr`` and ``str`` redact the secret."""

    __slots__ = ("_key", "keyid")

    def __init__(self, key: _NaclSigningKey) -> None:
        self._key = key
        self.keyid = keyid_of(key.verify_key)

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(_NaclSigningKey.generate())

    @classmethod
    def from_seed(cls, seed: bytes) -> SigningKey:
        if len(seed) != 32:
            raise KeyFileError(f"an Ed25519 seed is 32 bytes, got {len(seed)}")
        return cls(_NaclSigningKey(seed))

    @property
    def verify_key(self) -> VerifyKey:
        return self._key.verify_key

    def sign_bytes(self, message: bytes) -> bytes:
        """The detached 64-byte signature."""
        return bytes(self._key.sign(message).signature)

    def seed_b64(self) -> str:
        """The secret seed, base64. Only for writing the private key file."""
        return base64.b64encode(bytes(self._key)).decode("ascii")

    def __repr__(self) -> str:
        return f"SigningKey(keyid={self.keyid!r}, secret=<redacted>)"

    __str__ = __repr__

    def __reduce__(self) -> Any:
        # Pickling would copy the secret into places (queues, caches) nobody audits.
        raise TypeError("SigningKey is not picklable")


def public_key_document(verify_key: VerifyKey) -> dict[str, str]:
    """What the API and the public key file publish for one key."""
    return {
        "algorithm": ALGORITHM,
        "keyid": keyid_of(verify_key),
        "public_key": base64.b64encode(bytes(verify_key)).decode("ascii"),
    }


def _atomic_write(path: Path, data: bytes, mode: int) -> None:
    # mkstemp creates the file 0600 from the start, so the secret is never readable by others, not even
    # for the moment between create and chmod; os.replace makes the final name appear complete or not at all.
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def generate_keypair(private_path: str | os.PathLike[str], public_path: str | os.PathLike[str]) -> SigningKey:
    """Create a new key, write the private file (0600) and the public file (0644); return the key."""
    key = SigningKey.generate()
    private_doc = {"algorithm": ALGORITHM, "keyid": key.keyid, "seed": key.seed_b64()}
    _atomic_write(Path(private_path), json.dumps(private_doc, sort_keys=True).encode() + b"\n", 0o600)
    public_doc = public_key_document(key.verify_key)
    _atomic_write(Path(public_path), json.dumps(public_doc, sort_keys=True).encode() + b"\n", 0o644)
    return key


def _b64(text: object, what: str, size: int) -> bytes:
    if not isinstance(text, str):
        raise KeyFileError(f"{what} must be a base64 string")
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise KeyFileError(f"{what} is not valid base64") from None
    if len(raw) != size:
        raise KeyFileError(f"{what} must decode to {size} bytes, got {len(raw)}")
    return raw


def load_signing_key(
    path: str | os.PathLike[str] | None = None, *, env: Mapping[str, str] | None = None
) -> SigningKey:
    """The signer's key: from ``path`` if given, else from ``$STELLA_SIGNING_KEY`` (base64 seed)."""
    if path is not None:
        file = Path(path)
        try:
            doc = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise KeyFileError(f"cannot read private key file {file}: {type(exc).__name__}") from None
        if not isinstance(doc, dict) or doc.get("algorithm", ALGORITHM) != ALGORITHM:
            raise KeyFileError(f"{file} is not an {ALGORITHM} private key file")
        key = SigningKey.from_seed(_b64(doc.get("seed"), f"seed in {file}", 32))
        if "keyid" in doc and doc["keyid"] != key.keyid:
            raise KeyFileError(f"{file}: keyid does not match the key")
        return key
    environ = os.environ if env is None else env
    seed = environ.get(ENV_VAR)
    if not seed:
        raise KeyFileError(f"no signing key: pass a key file or set {ENV_VAR}")
    return SigningKey.from_seed(_b64(seed, ENV_VAR, 32))


def _public_docs(doc: Any, origin: str) -> list[Mapping[str, Any]]:
    if isinstance(doc, list):
        items: list[Any] = doc
    elif isinstance(doc, dict) and isinstance(doc.get("keys"), list):
        items = doc["keys"]
    elif isinstance(doc, dict):
        items = [doc]
    else:
        raise KeyFileError(f"{origin}: expected a key object, a list of them, or {{'keys': [...]}}")
    if not all(isinstance(item, dict) for item in items):
        raise KeyFileError(f"{origin}: every key entry must be an object")
    return items


def _verify_key_from(doc: Mapping[str, Any], origin: str) -> VerifyKey:
    if "seed" in doc:
        # A private key in a trust folder is a deployment mistake worth stopping for, not working around.
        raise KeyFileError(f"{origin}: contains a private key; publish only public key files")
    if doc.get("algorithm", ALGORITHM) != ALGORITHM:
        raise KeyFileError(f"{origin}: unsupported algorithm")
    verify_key = VerifyKey(_b64(doc.get("public_key"), f"public_key in {origin}", 32))
    if "keyid" in doc and doc["keyid"] != keyid_of(verify_key):
        raise KeyFileError(f"{origin}: keyid does not match the public key")
    return verify_key


def load_public_keys(path: str | os.PathLike[str]) -> dict[str, VerifyKey]:
    """Trusted keys by keyid from a JSON file or from every ``*.json`` file in a folder (sorted)."""
    root = Path(path)
    files = sorted(root.glob("*.json")) if root.is_dir() else [root]
    keys: dict[str, VerifyKey] = {}
    for file in files:
        try:
            doc = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise KeyFileError(f"cannot read public key file {file}: {type(exc).__name__}") from None
        for item in _public_docs(doc, str(file)):
            verify_key = _verify_key_from(item, str(file))
            keys[keyid_of(verify_key)] = verify_key
    return keys
