"""Signed notes (C2SP signed-note, as golang.org/x/mod/sumdb/note) and checkpoints
(C2SP tlog-checkpoint), Ed25519 only.

Written here because no maintained Python package implements the format; it is small, and
``tests/broker/audit/test_note.py`` checks it byte for byte against the Go reference example.

A signed note is its text (UTF-8, ending in a newline), a blank line, and signature lines
``— <key name> <base64(4-byte key hash || 64-byte Ed25519 signature)>``. The key hash is the
first 4 bytes of SHA-256(name || "\\n" || 0x01 || public key); a verifier key is
``<name>+<8 hex digits of key hash>+<base64(0x01 || public key)>``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

ALG_ED25519 = 0x01
_DASH = "\u2014 "
_NAME = re.compile(r"^[^\s+]+$")


class NoteError(ValueError):
    """A note, signature or key is malformed, or a signature does not verify."""


def _key_hash(name: str, public: bytes) -> bytes:
    return hashlib.sha256(name.encode() + b"\n" + bytes([ALG_ED25519]) + public).digest()[:4]


def _check_name(name: str) -> None:
    if not _NAME.match(name):
        raise NoteError(f"invalid key name {name!r}: no spaces or '+' allowed")


def _check_text(text: str) -> None:
    if not text.endswith("\n"):
        raise NoteError("note text must end with a newline")
    if any(ord(c) < 0x20 and c != "\n" for c in text):
        raise NoteError("note text must not contain control characters")


class NoteSigner:
    def __init__(self, name: str, private_key: Ed25519PrivateKey) -> None:
        _check_name(name)
        self.name = name
        self._key = private_key
        self._public = private_key.public_key().public_bytes_raw()
        self.key_hash = _key_hash(name, self._public)

    @classmethod
    def from_skey(cls, skey: str) -> NoteSigner:
        """Parse a Go-format signer key ``PRIVATE+KEY+<name>+<hash>+<base64(0x01 || seed)>``."""
        parts = skey.split("+", 4)
        if len(parts) != 5 or parts[:2] != ["PRIVATE", "KEY"]:
            raise NoteError("malformed signer key")
        raw = _b64(parts[4], "signer key")
        if len(raw) != 33 or raw[0] != ALG_ED25519:
            raise NoteError("signer key is not an Ed25519 key")
        signer = cls(parts[2], Ed25519PrivateKey.from_private_bytes(raw[1:]))
        if signer.key_hash.hex() != parts[3]:
            raise NoteError("signer key hash does not match its key")
        return signer

    def verifier_key(self) -> str:
        encoded = base64.b64encode(bytes([ALG_ED25519]) + self._public).decode()
        return f"{self.name}+{self.key_hash.hex()}+{encoded}"

    def signature_line(self, text: str) -> str:
        signature = self._key.sign(text.encode("utf-8"))
        return f"{_DASH}{self.name} {base64.b64encode(self.key_hash + signature).decode()}\n"

    def sign(self, text: str) -> str:
        """The signed note: ``text``, a blank line and this key's signature line."""
        _check_text(text)
        return f"{text}\n{self.signature_line(text)}"


def _b64(value: str, what: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise NoteError(f"{what} is not valid base64") from exc


class NoteVerifier:
    def __init__(self, name: str, public: bytes) -> None:
        _check_name(name)
        self.name = name
        self._public = public
        self._key = Ed25519PublicKey.from_public_bytes(public)
        self.key_hash = _key_hash(name, public)
        self.key_id = self.key_hash.hex()

    @classmethod
    def from_vkey(cls, vkey: str) -> NoteVerifier:
        parts = vkey.strip().split("+", 2)
        if len(parts) != 3 or not re.fullmatch(r"[0-9a-f]{8}", parts[1]):
            raise NoteError(f"malformed verifier key {vkey.strip()[:80]!r}")
        raw = _b64(parts[2], "verifier key")
        if len(raw) != 33 or raw[0] != ALG_ED25519:
            raise NoteError("verifier key is not an Ed25519 key")
        verifier = cls(parts[0], raw[1:])
        if verifier.key_id != parts[1]:
            raise NoteError("verifier key hash does not match its key")
        return verifier

    def vkey(self) -> str:
        encoded = base64.b64encode(bytes([ALG_ED25519]) + self._public).decode()
        return f"{self.name}+{self.key_id}+{encoded}"

    def verify(self, note: str) -> str:
        """The note's text if it carries a valid signature by this key; ``NoteError`` otherwise."""
        text, lines = split_note(note)
        found = False
        for line in lines:
            name, blob = line[len(_DASH) :].split(" ", 1)
            raw = _b64(blob, "signature")
            if name != self.name or raw[:4] != self.key_hash:
                continue
            try:
                self._key.verify(raw[4:], text.encode("utf-8"))
            except InvalidSignature as exc:
                raise NoteError(
                    f"signature by {self.name} ({self.key_id}) does not verify"
                ) from exc
            found = True
        if not found:
            raise NoteError(f"note is not signed by the trusted key {self.name} ({self.key_id})")
        return text


def split_note(note: str) -> tuple[str, list[str]]:
    """The note's text and its signature lines; ``NoteError`` if malformed."""
    head, sep, sigs = note.rpartition("\n\n")
    if not sep or not sigs.endswith("\n"):
        raise NoteError("malformed note: no blank line before the signatures")
    text = head + "\n"
    _check_text(text)
    lines = sigs[:-1].split("\n")
    for line in lines:
        if not line.startswith(_DASH) or line.count(" ") != 2:
            raise NoteError(f"malformed signature line {line[:60]!r}")
    return text, lines


@dataclass(frozen=True)
class Checkpoint:
    origin: str
    size: int
    root: bytes


def format_checkpoint(origin: str, size: int, root: bytes) -> str:
    """The body of a C2SP tlog-checkpoint: origin, tree size, base64 root hash."""
    if not origin or "\n" in origin or size < 0 or len(root) != 32:
        raise NoteError("invalid checkpoint fields")
    return f"{origin}\n{size}\n{base64.b64encode(root).decode()}\n"


def parse_checkpoint(text: str) -> Checkpoint:
    lines = text.split("\n")
    if len(lines) < 4 or lines[-1] != "" or not lines[0]:
        raise NoteError("malformed checkpoint: expected origin, size and root lines")
    if not re.fullmatch(r"0|[1-9][0-9]*", lines[1]):
        raise NoteError(f"malformed checkpoint size {lines[1][:30]!r}")
    root = _b64(lines[2], "checkpoint root")
    if len(root) != 32:
        raise NoteError("checkpoint root is not 32 bytes")
    return Checkpoint(lines[0], int(lines[1]), root)
