"""Who was in a release, provably: the member set as a sorted RFC 9162 Merkle tree.

A release that holds many customers records its members as their keyed hashes (``hs1:…``, never
the customer reference). The leaves are those hashes as UTF-8, distinct and in ascending order,
each hashed as an RFC 9162 leaf (``broker.audit.merkle``, the audit log's hashing), and the root
goes into the release's audit entry. Two proofs follow:

- **membership**: the member's leaf index and its inclusion proof, as the audit log proves an
  entry;
- **absence**: because the leaves are sorted and distinct, a customer is not in the release when
  two adjacent leaves enclose their hash (or the first leaf is greater, or the last smaller),
  each neighbour shown with its inclusion proof. An empty release has the empty root.

Verification needs only the root, the hash and the proof: ``verify_member`` and
``verify_absent`` raise ``ProofError`` for anything that does not prove what it claims.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from broker.audit.merkle import EMPTY_ROOT, MemoryTree, ProofError, leaf_hash, verify_inclusion


class NotAMember(ValueError):
    """The hash asked about is not in the set (ask for an absence proof instead)."""


class IsAMember(ValueError):
    """The hash asked about is in the set: its absence cannot be proven."""


@dataclass(frozen=True)
class Neighbour:
    """A leaf beside the place the hash would take, with its inclusion proof."""

    member: str
    index: int
    proof: tuple[bytes, ...]

    def as_json(self) -> dict[str, Any]:
        return {"member": self.member, "index": self.index, "proof": [p.hex() for p in self.proof]}


@dataclass(frozen=True)
class Membership:
    size: int
    leaf: Neighbour

    def as_json(self) -> dict[str, Any]:
        return {"size": self.size, "leaf": self.leaf.as_json()}


@dataclass(frozen=True)
class Absence:
    """``left`` is the greatest member below the hash, ``right`` the least above (None at an
    edge, and both None for an empty set)."""

    size: int
    left: Neighbour | None
    right: Neighbour | None

    def as_json(self) -> dict[str, Any]:
        return {
            "size": self.size,
            "left": None if self.left is None else self.left.as_json(),
            "right": None if self.right is None else self.right.as_json(),
        }


class MemberSet:
    def __init__(self, members: Iterable[str]) -> None:
        self.members: tuple[str, ...] = tuple(sorted(set(members), key=_key))
        self._keys = [_key(m) for m in self.members]
        self._tree = MemoryTree([leaf_hash(k) for k in self._keys])

    @property
    def size(self) -> int:
        return len(self.members)

    def root(self) -> bytes:
        return self._tree.root()

    def _neighbour(self, index: int) -> Neighbour:
        proof = tuple(self._tree.inclusion_proof(index))
        return Neighbour(self.members[index], index, proof)

    def membership(self, member: str) -> Membership:
        index = bisect.bisect_left(self._keys, _key(member))
        if index == self.size or self.members[index] != member:
            raise NotAMember(f"{member} is not a member of this release")
        return Membership(self.size, self._neighbour(index))

    def absence(self, member: str) -> Absence:
        index = bisect.bisect_left(self._keys, _key(member))
        if index < self.size and self.members[index] == member:
            raise IsAMember(f"{member} is a member of this release")
        left = self._neighbour(index - 1) if index > 0 else None
        right = self._neighbour(index) if index < self.size else None
        return Absence(self.size, left, right)


def _key(member: str) -> bytes:
    return member.encode()


def _verify(leaf: Neighbour, size: int, root: bytes) -> None:
    verify_inclusion(leaf.index, size, leaf_hash(_key(leaf.member)), leaf.proof, root)


def verify_member(member: str, proof: Membership, root: bytes) -> None:
    """``member`` is a leaf of the tree of ``root``; ``ProofError`` otherwise."""
    if proof.leaf.member != member:
        raise ProofError("the proof is for another member")
    _verify(proof.leaf, proof.size, root)


def verify_absent(member: str, proof: Absence, root: bytes) -> None:
    """No leaf of the sorted tree of ``root`` is ``member``; ``ProofError`` otherwise."""
    left, right, size = proof.left, proof.right, proof.size
    if size == 0:
        if left is not None or right is not None or root != EMPTY_ROOT:
            raise ProofError("an empty release has the empty root and no neighbours")
        return
    key = _key(member)
    if left is None and right is None:
        raise ProofError("an absence proof in a non-empty release names a neighbour")
    if left is not None:
        if not _key(left.member) < key:
            raise ProofError("the left neighbour does not sort before the member")
        _verify(left, size, root)
    if right is not None:
        if not key < _key(right.member):
            raise ProofError("the right neighbour does not sort after the member")
        _verify(right, size, root)
    if left is None and right is not None and right.index != 0:
        raise ProofError("without a left neighbour the right one must be the first leaf")
    if right is None and left is not None and left.index != size - 1:
        raise ProofError("without a right neighbour the left one must be the last leaf")
    if left is not None and right is not None and right.index != left.index + 1:
        raise ProofError("the neighbours are not adjacent leaves")
