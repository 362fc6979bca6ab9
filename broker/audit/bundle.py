"""What the export writer and the offline verifier share about the bundle format.

Pure code (no database), so ``broker audit verify`` runs anywhere.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from typing import Any

from broker.kit.canonical import canonical_json

FORMAT = "x1332-audit-export/1"


def seq_ranges(seqs: list[int]) -> list[list[int]]:
    """Sorted sequence numbers as inclusive ``[first, last]`` runs."""
    runs: list[list[int]] = []
    for seq in seqs:
        if runs and runs[-1][1] == seq - 1:
            runs[-1][1] = seq
        else:
            runs.append([seq, seq])
    return runs


def entries_digest(pairs: list[tuple[int, bytes]]) -> str:
    """SHA-256 over each entry's 8-byte big-endian seq and leaf hash, in order."""
    digest = hashlib.sha256()
    for seq, leaf in pairs:
        digest.update(seq.to_bytes(8, "big") + leaf)
    return digest.hexdigest()


def manifest_statement(manifest: dict[str, Any]) -> str:
    """The text the log key signs for a manifest (everything but its signature)."""
    body = {k: v for k, v in manifest.items() if k != "signature"}
    return f"{FORMAT}\n{hashlib.sha256(canonical_json(body)).hexdigest()}\n"


def encode_proof(proof: list[bytes]) -> str:
    """A proof as one base64 string of its concatenated 32-byte hashes."""
    return base64.b64encode(b"".join(proof)).decode("ascii")


def decode_proof(value: object) -> list[bytes]:
    """The hashes of an encoded proof; ``ValueError`` when it is not one."""
    if not isinstance(value, str):
        raise ValueError("proof is not a base64 string")
    try:
        raw = base64.b64decode(value, validate=True)
    except binascii.Error as exc:
        raise ValueError("proof is not valid base64") from exc
    if len(raw) % 32:
        raise ValueError("proof length is not a multiple of 32 bytes")
    return [raw[i : i + 32] for i in range(0, len(raw), 32)]
