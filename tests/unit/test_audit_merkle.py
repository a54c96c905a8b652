"""Merkle trees: RFC 6962 hashing, odd counts, one leaf, inclusion proofs."""

from __future__ import annotations

import hashlib

from hypothesis import given, settings
from hypothesis import strategies as st

from streams.audit.merkle import (
    inclusion_proof,
    leaf_hash,
    node_hash,
    root,
    root_from_proof,
    verify_inclusion,
)

leaves = st.lists(st.binary(max_size=16).map(leaf_hash), min_size=1, max_size=70)


def test_known_shapes() -> None:
    a, b, c = (leaf_hash(x) for x in (b"a", b"b", b"c"))
    assert root([]) == hashlib.sha256(b"").digest()
    assert root([a]) == a
    assert root([a, b]) == node_hash(a, b)
    assert root([a, b, c]) == node_hash(node_hash(a, b), c)  # odd: split at 2, no duplicated leaf
    assert leaf_hash(b"") != hashlib.sha256(b"").digest()  # domain separation


def test_leaf_cannot_pose_as_node() -> None:
    a, b = leaf_hash(b"a"), leaf_hash(b"b")
    assert root([a, b]) != root([leaf_hash(a + b)])


@settings(deadline=None)
@given(leaves, st.data())
def test_every_inclusion_proof_verifies(tree: list[bytes], data: st.DataObject) -> None:
    index = data.draw(st.integers(min_value=0, max_value=len(tree) - 1))
    proof = inclusion_proof(tree, index)
    assert verify_inclusion(tree[index], index, len(tree), proof, root(tree))
    assert len(proof) <= max(1, (len(tree) - 1).bit_length())


@settings(deadline=None)
@given(leaves, st.data())
def test_a_proof_does_not_verify_another_leaf_or_position(tree: list[bytes], data: st.DataObject) -> None:
    index = data.draw(st.integers(min_value=0, max_value=len(tree) - 1))
    proof = inclusion_proof(tree, index)
    expected = root(tree)
    assert not verify_inclusion(leaf_hash(b"not in the tree \xff"), index, len(tree), proof, expected)
    other = data.draw(st.integers(min_value=0, max_value=len(tree) - 1))
    if tree[other] != tree[index]:
        assert not verify_inclusion(tree[other], index, len(tree), proof, expected)


def test_one_leaf_and_out_of_range() -> None:
    a = leaf_hash(b"a")
    assert inclusion_proof([a], 0) == []
    assert verify_inclusion(a, 0, 1, [], a)
    assert root_from_proof(a, 1, 1, []) is None
    assert root_from_proof(a, 0, 1, [a]) is None  # a path too long for the size
