"""Audit export: one self-contained JSON-lines file a regulator verifies offline.

Format ``x1332-audit-export/1`` (also in ``docs/audit-export.md``), one JSON object per line:

1. ``manifest``: origin, creation time, filters, tree size, entry count, the included sequence
   numbers as inclusive ranges, ``entries_sha256`` (SHA-256 over each included entry's 8-byte
   big-endian seq and leaf hash), and ``signature``: a signed note by the log key whose text
   is ``x1332-audit-export/1`` and the SHA-256 of the canonical manifest without the signature.
   Because the manifest is signed, a dropped, duplicated, reordered or inserted entry is caught
   even when filters leave gaps, and a dropped entry is named by its seq.
2. ``public_key``: the log's verifier key (C2SP note format).
3. ``checkpoint``: the signed checkpoint every proof is against.
4. optionally ``previous_checkpoint`` and ``consistency_proof`` (from ``--from-checkpoint``).
5. ``entry`` lines: ``seq``, the ``entry`` object (its RFC 8785 form is the hashed leaf) and
   ``proof`` (the inclusion proof against the checkpoint: one base64 string of the
   concatenated 32-byte hashes, leaf level first; the consistency proof is encoded alike).
6. ``end``: the number of entries and the SHA-256 of every byte before this line.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from sqlalchemy import select
from sqlmodel import Session

from broker.audit.bundle import (
    FORMAT,
    encode_proof,
    entries_digest,
    manifest_statement,
    seq_ranges,
)
from broker.audit.log import ENTRY, AuditLog, AuditLogError
from broker.audit.merkle import MemoryTree, ProofError, leaf_hash, verify_consistency
from broker.audit.note import NoteError, NoteVerifier, parse_checkpoint
from broker.kit.clock import to_rfc3339, to_us

_MEMORY_TREE_FROM = 256  # entries; fewer are proven one by one from stored nodes


@dataclass(frozen=True)
class ExportFilters:
    since: datetime | None = None
    until: datetime | None = None
    types: tuple[str, ...] = ()

    def as_json(self) -> dict[str, Any]:
        return {
            "since": to_rfc3339(self.since) if self.since else None,
            "until": to_rfc3339(self.until) if self.until else None,
            "types": list(self.types),
        }


@dataclass(frozen=True)
class ExportSummary:
    path: Path
    entries: int
    tree_size: int
    root: bytes
    previous_size: int | None


def _select(filters: ExportFilters, size: int) -> Any:
    query = select(ENTRY.c.seq, ENTRY.c.body).where(ENTRY.c.seq < size)
    if filters.since is not None:
        query = query.where(ENTRY.c.at_us >= to_us(filters.since))
    if filters.until is not None:
        query = query.where(ENTRY.c.at_us < to_us(filters.until))
    if filters.types:
        query = query.where(ENTRY.c.event_type.in_(filters.types))
    return query.order_by(ENTRY.c.seq)


class _Prover:
    """Inclusion proofs for many entries: from an in-memory tree when there are many."""

    def __init__(self, session: Session, log: AuditLog, size: int, count: int) -> None:
        self._session, self._log, self._size = session, log, size
        self._tree: MemoryTree | None = None
        if count >= _MEMORY_TREE_FROM:
            query = select(ENTRY.c.body).where(ENTRY.c.seq < size).order_by(ENTRY.c.seq)
            bodies = session.execute(query).scalars()
            self._tree = MemoryTree([leaf_hash(body.encode("utf-8")) for body in bodies])

    def inclusion(self, seq: int) -> list[bytes]:
        if self._tree is not None:
            return self._tree.inclusion_proof(seq)
        return self._log.inclusion_proof(self._session, seq, self._size)


def _previous(
    session: Session, log: AuditLog, note: str, size: int, root: bytes
) -> tuple[int, list[bytes]]:
    verifier = NoteVerifier.from_vkey(log.signer.verifier_key())
    try:
        earlier = parse_checkpoint(verifier.verify(note))
    except NoteError as exc:
        raise AuditLogError(f"--from-checkpoint: {exc}") from exc
    if earlier.size > size:
        raise AuditLogError(f"--from-checkpoint is newer ({earlier.size}) than the log ({size})")
    proof = log.consistency_proof(session, earlier.size, size) if earlier.size else []
    try:
        verify_consistency(earlier.size, size, earlier.root, root, proof)
    except ProofError as exc:
        raise AuditLogError(f"the log is not consistent with --from-checkpoint: {exc}") from exc
    return earlier.size, proof


def _write(out: IO[bytes], digest: Any, record: dict[str, Any]) -> None:
    line = json.dumps(record, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"
    digest.update(line)
    out.write(line)


def _entry_lines(session: Session, filters: ExportFilters, size: int) -> Iterator[Any]:
    yield from session.execute(_select(filters, size))


def export_bundle(
    session: Session,
    log: AuditLog,
    out: Path,
    filters: ExportFilters,
    from_checkpoint: str | None = None,
) -> ExportSummary:
    """Write the export atomically (a temporary file renamed into place)."""
    checkpoint = log.checkpoint(session)
    size, root = checkpoint.size, checkpoint.root
    rows = list(_entry_lines(session, filters, size))
    previous = _previous(session, log, from_checkpoint, size, root) if from_checkpoint else None
    manifest: dict[str, Any] = {
        "type": "manifest",
        "format": FORMAT,
        "origin": log.origin,
        "created": to_rfc3339(log.clock_now()),
        "filters": filters.as_json(),
        "tree_size": size,
        "entry_count": len(rows),
        "ranges": seq_ranges([r.seq for r in rows]),
        "entries_sha256": entries_digest([(r.seq, leaf_hash(r.body.encode())) for r in rows]),
    }
    manifest["signature"] = log.signer.sign(manifest_statement(manifest))
    prover = _Prover(session, log, size, len(rows))
    tmp = out.with_name(f".{out.name}.partial")
    digest = hashlib.sha256()
    try:
        with tmp.open("wb") as fh:
            _write(fh, digest, manifest)
            _write(fh, digest, {"type": "public_key", "vkey": log.signer.verifier_key()})
            _write(fh, digest, {"type": "checkpoint", "note": checkpoint.note})
            if previous is not None:
                _write(fh, digest, {"type": "previous_checkpoint", "note": from_checkpoint})
                _write(
                    fh,
                    digest,
                    {
                        "type": "consistency_proof",
                        "from": previous[0],
                        "to": size,
                        "proof": encode_proof(previous[1]),
                    },
                )
            for row in rows:  # the stored body is already canonical JSON: no parse, no dump
                proof = encode_proof(prover.inclusion(row.seq))
                line = f'{{"type":"entry","seq":{row.seq},"entry":{row.body},"proof":"{proof}"}}\n'
                data = line.encode("utf-8")
                digest.update(data)
                fh.write(data)
            end = {"type": "end", "entries": len(rows), "sha256": digest.hexdigest()}
            fh.write(json.dumps(end, separators=(",", ":")).encode() + b"\n")
            fh.flush()
            os.fsync(fh.fileno())
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
    return ExportSummary(out, len(rows), size, root, previous[0] if previous else None)
