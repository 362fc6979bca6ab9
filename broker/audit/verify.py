"""Offline verification of an audit export (``broker audit verify``): no database, no network.

It checks, in file order, and stops at the first thing that does not hold, naming it: JSON
syntax (by line), the manifest's signature, the checkpoint's signature and size, a previous
checkpoint and its consistency proof (a rolled-back log), every entry against the signed list
of sequence numbers (dropped, duplicated, reordered, inserted) and its inclusion proof (any
changed byte), and finally the end record (a truncated file). ``trusted_key`` pins the log key;
without it the key in the file is used, which proves only that the file is consistent with
whatever key it carries (anyone can make such a file): the report then starts ``UNPINNED:`` and
says authenticity was not checked, never ``OK:``, and ``broker audit verify`` fails unless
``--allow-unpinned`` asks for the integrity check alone.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from broker.audit.bundle import FORMAT, decode_proof, entries_digest, manifest_statement
from broker.audit.merkle import ProofError, leaf_hash, verify_consistency, verify_inclusion
from broker.audit.note import Checkpoint, NoteError, NoteVerifier, parse_checkpoint
from broker.errors import BrokerError
from broker.kit.canonical import CanonicalJSONError, canonical_json


class VerificationFailed(BrokerError):
    """The export does not verify; the message names the first failure."""

    exit_code = 1


@dataclass
class VerifyReport:
    entries: int
    tree_size: int
    root: bytes
    key_id: str
    key_pinned: bool
    previous_size: int | None = None
    warnings: list[str] = field(default_factory=list)

    def summary(self) -> str:
        """One line: ``OK:`` only when the key was pinned; ``UNPINNED:`` otherwise."""
        prev = f", consistent with checkpoint {self.previous_size}" if self.previous_size else ""
        head = (
            f"{self.entries} entries verified against checkpoint of size {self.tree_size} "
            f"(root {self.root.hex()[:16]}…)"
        )
        if self.key_pinned:
            return f"OK: {head}, signed by key {self.key_id} (pinned key){prev}"
        return (
            f"UNPINNED: {head}{prev}, signed by key {self.key_id} taken from the file itself: "
            "authenticity NOT checked (anyone can sign such a file; pass --trusted-key)"
        )


def _fail(message: str) -> VerificationFailed:
    return VerificationFailed(message)


def _lines(path: Path) -> Iterator[tuple[int, bytes]]:
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise _fail(f"cannot read {path}: {exc.strerror}") from exc
    with handle:
        yield from enumerate(handle, start=1)


def _parse(number: int, line: bytes) -> dict[str, Any]:
    try:
        record = json.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise _fail(f"line {number}: not valid JSON ({exc}); the file was changed") from exc
    if not isinstance(record, dict) or not isinstance(record.get("type"), str):
        raise _fail(f"line {number}: not a record of an audit export")
    return record


def _proof(value: Any, where: str) -> list[bytes]:
    try:
        return decode_proof(value)
    except ValueError as exc:
        raise _fail(f"{where}: {exc}") from exc


def _expected_seqs(manifest: dict[str, Any]) -> Iterator[int]:
    for first, last in manifest["ranges"]:
        yield from range(first, last + 1)


class _Verifier:
    def __init__(self, trusted_key: str | None) -> None:
        self.trusted = NoteVerifier.from_vkey(trusted_key) if trusted_key else None
        self.key: NoteVerifier | None = self.trusted
        self.manifest: dict[str, Any] = {}
        self.checkpoint: Checkpoint | None = None
        self.previous: Checkpoint | None = None
        self.expected: Iterator[int] = iter(())
        self.next_seq: int | None = None
        self.pairs: list[tuple[int, bytes]] = []
        self.report: VerifyReport | None = None

    def manifest_line(self, record: dict[str, Any]) -> None:
        if record.get("type") != "manifest" or record.get("format") != FORMAT:
            raise _fail(f"line 1: not an audit export of format {FORMAT}")
        for name in ("ranges", "tree_size", "entry_count", "entries_sha256", "signature", "origin"):
            if name not in record:
                raise _fail(f"manifest: field {name!r} is missing")
        self.manifest = record
        self.expected = _expected_seqs(record)
        self.next_seq = next(self.expected, None)

    def public_key(self, record: dict[str, Any]) -> None:
        try:
            in_file = NoteVerifier.from_vkey(str(record.get("vkey", "")))
        except NoteError as exc:
            raise _fail(f"public key: {exc}") from exc
        if self.trusted is not None and in_file.vkey() != self.trusted.vkey():
            raise _fail(
                f"the export is signed by key {in_file.name}+{in_file.key_id}, not by the "
                f"trusted key {self.trusted.name}+{self.trusted.key_id}"
            )
        self.key = in_file
        try:
            signed_text = in_file.verify(self.manifest["signature"])
        except NoteError as exc:
            raise _fail(f"manifest signature: {exc}") from exc
        if signed_text != manifest_statement(self.manifest):
            raise _fail("manifest was changed after it was signed")

    def _checkpoint(self, record: dict[str, Any], what: str) -> Checkpoint:
        assert self.key is not None
        try:
            checkpoint = parse_checkpoint(self.key.verify(str(record.get("note", ""))))
        except NoteError as exc:
            raise _fail(f"{what}: {exc}") from exc
        if checkpoint.origin != self.manifest["origin"]:
            raise _fail(f"{what} is of log {checkpoint.origin!r}, not {self.manifest['origin']!r}")
        return checkpoint

    def checkpoint_line(self, record: dict[str, Any]) -> None:
        self.checkpoint = self._checkpoint(record, "checkpoint")
        if self.checkpoint.size != self.manifest["tree_size"]:
            raise _fail(
                f"checkpoint size {self.checkpoint.size} differs from the manifest's "
                f"{self.manifest['tree_size']}: the checkpoint was replaced (rolled back?)"
            )

    def previous_line(self, record: dict[str, Any]) -> None:
        self.previous = self._checkpoint(record, "previous checkpoint")
        assert self.checkpoint is not None
        if self.previous.size > self.checkpoint.size:
            raise _fail(
                f"rolled back: the checkpoint (size {self.checkpoint.size}) is older than the "
                f"previous checkpoint (size {self.previous.size})"
            )

    def consistency_line(self, record: dict[str, Any]) -> None:
        if self.previous is None or self.checkpoint is None:
            raise _fail("consistency proof without a previous checkpoint")
        proof = _proof(record.get("proof"), "consistency proof")
        try:
            verify_consistency(
                self.previous.size,
                self.checkpoint.size,
                self.previous.root,
                self.checkpoint.root,
                proof,
            )
        except ProofError as exc:
            raise _fail(f"consistency proof from size {self.previous.size}: {exc}") from exc

    def entry_line(self, number: int, record: dict[str, Any]) -> None:
        assert self.checkpoint is not None
        seq, entry = record.get("seq"), record.get("entry")
        if not isinstance(seq, int) or not isinstance(entry, dict):
            raise _fail(f"line {number}: entry record without seq or entry")
        self._check_order(seq)
        if entry.get("seq") != seq:
            raise _fail(f"entry seq {seq}: its body says seq {entry.get('seq')}; moved entry")
        if seq >= self.checkpoint.size:
            raise _fail(f"entry seq {seq} is beyond the checkpoint (size {self.checkpoint.size})")
        try:
            leaf = leaf_hash(canonical_json(entry))
        except CanonicalJSONError as exc:
            raise _fail(f"entry seq {seq}: {exc}") from exc
        try:
            verify_inclusion(
                seq,
                self.checkpoint.size,
                leaf,
                _proof(record.get("proof"), f"entry seq {seq}"),
                self.checkpoint.root,
            )
        except ProofError as exc:
            raise _fail(
                f"entry seq {seq} (line {number}) was changed or its proof is wrong: {exc}"
            ) from exc
        self.pairs.append((seq, leaf))

    def _check_order(self, seq: int) -> None:
        expected = self.next_seq
        if expected is None:
            raise _fail(f"entry seq {seq} is not listed in the signed manifest: inserted")
        if seq < expected:
            raise _fail(f"entry seq {seq} appears again or out of order (expected {expected})")
        if seq > expected:
            raise _fail(f"entry seq {expected} listed in the signed manifest is missing: dropped")
        self.next_seq = next(self.expected, None)

    def finish(self, end: dict[str, Any], digest: str) -> VerifyReport:
        if self.next_seq is not None:
            raise _fail(f"entry seq {self.next_seq} listed in the signed manifest is missing")
        if entries_digest(self.pairs) != self.manifest["entries_sha256"]:
            raise _fail("entries differ from the signed manifest")
        if end.get("entries") != len(self.pairs) or end.get("sha256") != digest:
            raise _fail("end record does not match the file: the file was changed or truncated")
        assert self.checkpoint is not None and self.key is not None
        return VerifyReport(
            len(self.pairs),
            self.checkpoint.size,
            self.checkpoint.root,
            self.key.key_id,
            self.trusted is not None,
            self.previous.size if self.previous else None,
        )


_ORDER = ("manifest", "public_key", "checkpoint")


def verify_bundle(path: Path, trusted_key: str | None = None) -> VerifyReport:
    """Verify an export offline; raises ``VerificationFailed`` naming the first failure."""
    try:
        state = _Verifier(trusted_key)
    except NoteError as exc:
        raise _fail(f"--trusted-key: {exc}") from exc
    digest = hashlib.sha256()
    seen = 0
    for number, raw in _lines(path):
        if not raw.endswith(b"\n"):
            raise _fail(f"line {number} is cut off: the file is truncated")
        record = _parse(number, raw)
        kind = record["type"]
        if number == 1 and kind != "manifest":
            raise _fail(f"line 1: not an audit export of format {FORMAT} (no manifest)")
        if number <= len(_ORDER) and kind != _ORDER[number - 1]:
            raise _fail(f"line {number}: expected a {_ORDER[number - 1]} record, found {kind!r}")
        if kind == "end":
            return state.finish(record, digest.hexdigest())
        _dispatch(state, number, kind, record)
        digest.update(raw)
        seen = number
    if seen == 0:
        raise _fail(f"{path} is empty: not an audit export")
    raise _fail(f"the file ends after line {seen} without its end record: it is truncated")


def _dispatch(state: _Verifier, number: int, kind: str, record: dict[str, Any]) -> None:
    handlers = {
        "manifest": lambda: state.manifest_line(record),
        "public_key": lambda: state.public_key(record),
        "checkpoint": lambda: state.checkpoint_line(record),
        "previous_checkpoint": lambda: state.previous_line(record),
        "consistency_proof": lambda: state.consistency_line(record),
        "entry": lambda: state.entry_line(number, record),
    }
    handler = handlers.get(kind)
    if handler is None or (kind == "manifest" and number != 1):
        raise _fail(f"line {number}: unexpected record type {kind!r}")
    handler()
