"""Merkle tree hashes and inclusion proofs in the manner of RFC 6962 / RFC 9162 §2.1.

Leaves and interior nodes are hashed with different one-byte prefixes (0x00, 0x01), so a leaf can never
be passed off as an interior node (second-preimage resistance). A tree of n leaves splits at the largest
power of two below n, which handles every count, odd ones included, without duplicating a leaf.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

LEAF = b"\x00"
NODE = b"\x01"


def leaf_hash(data: bytes) -> bytes:
    return hashlib.sha256(LEAF + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(NODE + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two strictly smaller than n (n >= 2)."""
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def root(leaves: Sequence[bytes]) -> bytes:
    """The Merkle tree hash of already-hashed leaves; the empty tree hashes to sha256('')."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return leaves[0]
    k = _split(len(leaves))
    return node_hash(root(leaves[:k]), root(leaves[k:]))


def inclusion_proof(leaves: Sequence[bytes], index: int) -> list[bytes]:
    """The audit path of leaf ``index`` (RFC 6962 §2.1.1 PATH), bottom-up."""
    if not 0 <= index < len(leaves):
        raise IndexError(f"leaf {index} is outside a tree of {len(leaves)} leaves")
    if len(leaves) == 1:
        return []
    k = _split(len(leaves))
    if index < k:
        return [*inclusion_proof(leaves[:k], index), root(leaves[k:])]
    return [*inclusion_proof(leaves[k:], index - k), root(leaves[:k])]


def root_from_proof(leaf: bytes, index: int, size: int, proof: Sequence[bytes]) -> bytes | None:
    """The root a proof leads to (RFC 9162 §2.1.3.2), or None when the proof's length does not fit."""
    if not 0 <= index < size:
        return None
    fn, sn = index, size - 1
    current = leaf
    for sibling in proof:
        if sn == 0:
            return None
        if fn & 1 or fn == sn:
            current = node_hash(sibling, current)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            current = node_hash(current, sibling)
        fn >>= 1
        sn >>= 1
    return current if sn == 0 else None


def verify_inclusion(
    leaf: bytes, index: int, size: int, proof: Sequence[bytes], expected_root: bytes
) -> bool:
    return root_from_proof(leaf, index, size, proof) == expected_root
