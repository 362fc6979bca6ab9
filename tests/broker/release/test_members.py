"""A release's member set proves who was in it and who was not (X.1332 R3.4 accountability):
the root is RFC 9162's over the sorted leaves, every member's inclusion proof verifies, every
non-member's absence proof verifies, and no proof claims what is not so."""

from __future__ import annotations

import dataclasses
import hashlib

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.audit.merkle import EMPTY_ROOT, ProofError, leaf_hash, root_from_leaves
from broker.release.members import (
    Absence,
    IsAMember,
    MemberSet,
    Neighbour,
    NotAMember,
    verify_absent,
    verify_member,
)


def hs(n: int) -> str:
    return "hs1:" + hashlib.sha256(str(n).encode()).hexdigest()


MEMBERS = [hs(n) for n in range(0, 40, 2)]


def test_the_root_is_rfc_9162_over_the_sorted_distinct_leaves() -> None:
    tree = MemberSet([*reversed(MEMBERS), MEMBERS[3]])
    leaves = [leaf_hash(m.encode()) for m in sorted(MEMBERS)]
    assert tree.size == len(MEMBERS)
    assert tree.root() == root_from_leaves(leaves)


def test_R3_4_every_member_proves_membership_and_no_absence() -> None:
    tree = MemberSet(MEMBERS)
    for member in MEMBERS:
        verify_member(member, tree.membership(member), tree.root())
        with pytest.raises(IsAMember):
            tree.absence(member)


def test_R3_4_every_non_member_proves_absence_at_the_edges_and_between() -> None:
    tree = MemberSet(MEMBERS)
    ordered = sorted(MEMBERS)
    outsiders = [hs(n) for n in range(1, 40, 2)] + ["hs1:", "hs1:" + "f" * 64]
    assert any(o < ordered[0] for o in outsiders) and any(o > ordered[-1] for o in outsiders)
    for outsider in outsiders:
        proof = tree.absence(outsider)
        verify_absent(outsider, proof, tree.root())
        with pytest.raises(NotAMember):
            tree.membership(outsider)


def test_R3_4_absence_cannot_be_claimed_for_a_member() -> None:
    """Skipping the member's leaf: its neighbours are not adjacent, or do not enclose it."""
    tree = MemberSet(MEMBERS)
    ordered = list(tree.members)
    member = ordered[5]
    left, right = tree.membership(ordered[4]).leaf, tree.membership(ordered[6]).leaf
    with pytest.raises(ProofError, match="adjacent"):
        verify_absent(member, Absence(tree.size, left, right), tree.root())
    beside = tree.membership(ordered[5]).leaf
    with pytest.raises(ProofError, match="sort"):
        verify_absent(member, Absence(tree.size, left, beside), tree.root())
    first, last = tree.membership(ordered[0]).leaf, tree.membership(ordered[-1]).leaf
    with pytest.raises(ProofError, match="first leaf"):
        verify_absent("hs1:", Absence(tree.size, None, right), tree.root())
    assert first.index == 0 and last.index == tree.size - 1
    with pytest.raises(ProofError, match="last leaf"):
        verify_absent("hs1:" + "f" * 64, Absence(tree.size, left, None), tree.root())
    with pytest.raises(ProofError, match="names a neighbour"):
        verify_absent(member, Absence(tree.size, None, None), tree.root())


def test_R3_4_a_proof_against_another_root_or_with_a_changed_path_fails() -> None:
    tree, other = MemberSet(MEMBERS), MemberSet(MEMBERS[:-1])
    member = MEMBERS[7]
    proof = tree.membership(member)
    with pytest.raises(ProofError):
        verify_member(member, proof, other.root())
    path = list(proof.leaf.proof)
    path[0] = bytes(32)
    forged = dataclasses.replace(proof, leaf=dataclasses.replace(proof.leaf, proof=tuple(path)))
    with pytest.raises(ProofError):
        verify_member(member, forged, tree.root())
    with pytest.raises(ProofError, match="another member"):
        verify_member(MEMBERS[8], proof, tree.root())
    fake = Neighbour(hs(999), proof.leaf.index, proof.leaf.proof)
    with pytest.raises(ProofError):
        verify_absent(hs(1), Absence(tree.size, fake, None), tree.root())


def test_an_empty_release_has_the_empty_root_and_proves_every_absence() -> None:
    tree = MemberSet([])
    assert tree.root() == EMPTY_ROOT
    verify_absent(hs(1), tree.absence(hs(1)), EMPTY_ROOT)
    with pytest.raises(ProofError):
        verify_absent(hs(1), tree.absence(hs(1)), MemberSet([hs(2)]).root())


def test_the_proofs_serialise_as_hex_for_pages_and_exports() -> None:
    tree = MemberSet(MEMBERS)
    doc = tree.absence(hs(3)).as_json()
    assert doc["size"] == tree.size and doc["left"]["member"] < hs(3) < doc["right"]["member"]
    assert all(len(bytes.fromhex(p)) == 32 for p in doc["left"]["proof"])
    assert tree.membership(MEMBERS[0]).as_json()["leaf"]["member"] == MEMBERS[0]


@settings(max_examples=60, deadline=None)
@given(
    st.sets(st.integers(0, 300), max_size=70),
    st.integers(0, 300),
)
def test_every_hash_gets_exactly_the_proof_that_holds(members: set[int], probe: int) -> None:
    tree = MemberSet(hs(n) for n in members)
    root = tree.root()
    if probe in members:
        verify_member(hs(probe), tree.membership(hs(probe)), root)
        with pytest.raises(IsAMember):
            tree.absence(hs(probe))
    else:
        verify_absent(hs(probe), tree.absence(hs(probe)), root)
        with pytest.raises(NotAMember):
            tree.membership(hs(probe))
