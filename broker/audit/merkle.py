"""RFC 9162 Merkle tree hashing, proofs and their verification (section 2.1).

Pure functions with no database: the offline verifier (``broker audit verify``) uses them, and
the log computes its proofs through them from whichever node hashes it has stored. Written here
rather than taken from a library because no maintained Python package implements RFC 9162
verification of both proof kinds; it is tested against the transparency-dev/merkle vectors in
``../shared/conformance/merkle`` and against a plain recursive reference implementation.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence

HASH_LEN = 32
_sha256 = hashlib.sha256


class ProofError(ValueError):
    """A proof does not verify, or is malformed."""


def leaf_hash(entry: bytes) -> bytes:
    return _sha256(b"\x00" + entry).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    return _sha256(b"\x01" + left + right).digest()


EMPTY_ROOT = _sha256(b"").digest()


def _split(n: int) -> int:
    """The largest power of two smaller than n (n > 1)."""
    return 1 << ((n - 1).bit_length() - 1)


def root_from_leaves(leaves: Sequence[bytes]) -> bytes:
    """MTH(D[n]) of RFC 9162 section 2.1.1 over leaf hashes, iteratively."""
    if not leaves:
        return EMPTY_ROOT
    level = list(leaves)
    while len(level) > 1:
        nxt = [
            _sha256(b"\x01" + level[i] + level[i + 1]).digest() for i in range(0, len(level) - 1, 2)
        ]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]


# ---- proof planning: which subtree ranges a proof consists of ------------------------------

Range = tuple[int, int]  # [start, end) of leaf indices


def inclusion_ranges(index: int, size: int) -> list[Range]:
    """The subtree ranges whose hashes form the inclusion proof PATH(index, D[size]), leaf first."""
    if not 0 <= index < size:
        raise ProofError(f"leaf index {index} is outside a tree of size {size}")
    out: list[Range] = []
    start, end = 0, size
    while end - start > 1:
        k = _split(end - start)
        if index - start < k:
            out.append((start + k, end))
            end = start + k
        else:
            out.append((start, start + k))
            start += k
    out.reverse()
    return out


def consistency_ranges(size1: int, size2: int) -> list[Range]:
    """The subtree ranges of the consistency proof PROOF(size1, D[size2]) (RFC 9162 2.1.4.1)."""
    if not 0 < size1 <= size2:
        raise ProofError(f"no consistency proof from size {size1} to {size2}")
    if size1 == size2:
        return []
    out: list[Range] = []
    _subproof(size1, 0, size2, True, out)
    return out


def _subproof(m: int, start: int, end: int, complete: bool, out: list[Range]) -> None:
    n = end - start
    if m == n:
        if not complete:
            out.append((start, end))
        return
    k = _split(n)
    if m <= k:
        _subproof(m, start, start + k, complete, out)
        out.append((start + k, end))
    else:
        _subproof(m - k, start + k, end, False, out)
        out.append((start, start + k))


def full_nodes(start: int, end: int) -> list[tuple[int, int]]:
    """Decompose a proof range [start, end) into full subtrees (level, index), left to right.

    The range's hash is their right fold: ``h = last; for node in reversed(rest): h = H(node, h)``.
    """
    out: list[tuple[int, int]] = []
    while start < end:
        n = end - start
        size = n if n & (n - 1) == 0 else _split(n)
        level = size.bit_length() - 1
        if start % size:
            raise ProofError(f"range [{start}, {end}) is not a subtree of an RFC 9162 tree")
        out.append((level, start >> level))
        start += size
    return out


def fold_range(hashes: Sequence[bytes]) -> bytes:
    """The hash of a range from the hashes of its full subtrees, left to right."""
    acc = hashes[-1]
    for left in reversed(hashes[:-1]):
        acc = node_hash(left, acc)
    return acc


def proof_from_source(ranges: Sequence[Range], node: Callable[[int, int], bytes]) -> list[bytes]:
    """Hashes of ``ranges`` from a source of full-subtree hashes ``node(level, index)``."""
    return [fold_range([node(lv, ix) for lv, ix in full_nodes(a, b)]) for a, b in ranges]


# ---- verification (RFC 9162 2.1.3.2 and 2.1.4.2) ------------------------------------------


def _check_hash(value: bytes, what: str) -> None:
    if len(value) != HASH_LEN:
        raise ProofError(f"{what} is {len(value)} bytes, not {HASH_LEN}")


def root_from_inclusion(index: int, size: int, leaf: bytes, proof: Sequence[bytes]) -> bytes:
    """The root that ``proof`` commits ``leaf`` at ``index`` to, in a tree of ``size``.

    RFC 9162 section 2.1.3.2, with the hashing inlined: exports verify one proof per entry.
    """
    if not 0 <= index < size:
        raise ProofError(f"leaf index {index} is outside a tree of size {size}")
    _check_hash(leaf, "leaf hash")
    if any(len(p) != HASH_LEN for p in proof):
        raise ProofError(f"a proof hash is not {HASH_LEN} bytes")
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            raise ProofError("inclusion proof is longer than the tree is deep")
        if fn & 1 or fn == sn:
            r = _sha256(b"\x01" + p + r).digest()
            while not fn & 1 and fn:
                fn, sn = fn >> 1, sn >> 1
        else:
            r = _sha256(b"\x01" + r + p).digest()
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise ProofError("inclusion proof is too short")
    return r


def verify_inclusion(
    index: int, size: int, leaf: bytes, proof: Sequence[bytes], root: bytes
) -> None:
    _check_hash(root, "root")
    if root_from_inclusion(index, size, leaf, proof) != root:
        raise ProofError(
            f"inclusion proof of leaf {index} does not lead to the root of size {size}"
        )


def verify_consistency(
    size1: int, size2: int, root1: bytes, root2: bytes, proof: Sequence[bytes]
) -> None:
    """RFC 9162 2.1.4.2: ``root2`` extends ``root1``; raises ``ProofError`` otherwise."""
    if not 0 <= size1 <= size2:
        raise ProofError(f"size {size1} is larger than size {size2}: the log was rolled back")
    if size1 == 0:
        raise ProofError("no consistency proof from an empty tree")
    if size1 == size2:
        if proof:
            raise ProofError("a consistency proof between equal sizes must be empty")
        if root1 != root2:
            raise ProofError("two different roots for the same tree size")
        return
    _check_hash(root1, "first root")
    _check_hash(root2, "second root")
    for p in proof:
        _check_hash(p, "proof hash")
    path = list(proof)
    if size1 & (size1 - 1) == 0:  # a power of two: the first root is the first proof node
        path.insert(0, root1)
    if not path:
        raise ProofError("consistency proof is empty")
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn, sn = fn >> 1, sn >> 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError("consistency proof is too long")
        if fn & 1 or fn == sn:
            fr, sr = node_hash(c, fr), node_hash(c, sr)
            while not fn & 1 and fn:
                fn, sn = fn >> 1, sn >> 1
        else:
            sr = node_hash(sr, c)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise ProofError("consistency proof is too short")
    if fr != root1:
        raise ProofError(f"consistency proof does not lead to the root of size {size1}")
    if sr != root2:
        raise ProofError(f"consistency proof does not lead to the root of size {size2}")


class MemoryTree:
    """All full-subtree hashes of a tree held in memory, for many proofs at once (exports).

    ``levels[L][i]`` is the hash of the full subtree of height L with index i; ``ragged[L]`` is
    the hash of the incomplete subtree to their right at level L (None when there is none), so
    an inclusion proof is one sibling lookup per level.
    """

    def __init__(self, leaves: Sequence[bytes]) -> None:
        self.size = len(leaves)
        self.levels: list[list[bytes]] = [list(leaves)]
        self.ragged: list[bytes | None] = [None]
        while len(self.levels[-1]) > 1 or self.ragged[-1] is not None:
            below, ragged = self.levels[-1], self.ragged[-1]
            pairs = [
                _sha256(b"\x01" + below[i] + below[i + 1]).digest()
                for i in range(0, len(below) - 1, 2)
            ]
            if len(below) % 2:
                ragged = below[-1] if ragged is None else node_hash(below[-1], ragged)
            self.levels.append(pairs)
            self.ragged.append(ragged)
            if not pairs:
                break

    def node(self, level: int, index: int) -> bytes:
        return self.levels[level][index]

    def root(self) -> bytes:
        if self.size == 0:
            return EMPTY_ROOT
        top = len(self.levels) - 1
        return self.levels[top][0] if self.levels[top] else self.ragged[top]  # type: ignore[return-value]

    def inclusion_proof(self, index: int) -> list[bytes]:
        if not 0 <= index < self.size:
            raise ProofError(f"leaf index {index} is outside a tree of size {self.size}")
        proof: list[bytes] = []
        for level in range(len(self.levels) - 1):
            sibling, full = index ^ 1, self.levels[level]
            if sibling < len(full):
                proof.append(full[sibling])
            elif sibling == len(full) and self.ragged[level] is not None:
                proof.append(self.ragged[level])  # type: ignore[arg-type]
            index >>= 1
        return proof

    def consistency_proof(self, size1: int) -> list[bytes]:
        return proof_from_source(consistency_ranges(size1, self.size), self.node)
