"""Signed notes and checkpoints against the Go reference (golang.org/x/mod/sumdb/note)."""

from __future__ import annotations

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from broker.audit.note import (
    NoteError,
    NoteSigner,
    NoteVerifier,
    format_checkpoint,
    parse_checkpoint,
)

# The example key and note of golang.org/x/mod/sumdb/note's documentation and tests.
GO_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
GO_NOTE = (
    GO_TEXT + "\n— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZ"
    "SNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
)


def test_signer_reproduces_the_go_reference_note_byte_for_byte() -> None:
    signer = NoteSigner.from_skey(GO_SKEY)
    assert signer.verifier_key() == GO_VKEY
    assert signer.sign(GO_TEXT) == GO_NOTE


def test_verifier_accepts_the_go_reference_note() -> None:
    verifier = NoteVerifier.from_vkey(GO_VKEY)
    assert verifier.key_id == "c74f20a3"
    assert verifier.verify(GO_NOTE) == GO_TEXT


@pytest.mark.parametrize(
    "note",
    [
        GO_NOTE.replace("problem,", "problem;"),  # changed text
        GO_NOTE.replace("x08go", "x08gp"),  # changed signature
        GO_TEXT,  # no signature
        GO_NOTE.replace("\n\n", "\n"),  # no blank line
        GO_NOTE.replace("— ", "- "),  # not an em dash
    ],
)
def test_tampered_notes_are_rejected(note: str) -> None:
    with pytest.raises(NoteError):
        NoteVerifier.from_vkey(GO_VKEY).verify(note)


def test_note_signed_by_another_key_is_rejected() -> None:
    other = NoteSigner("PeterNeumann", Ed25519PrivateKey.generate())
    with pytest.raises(NoteError, match="not signed by the trusted key"):
        NoteVerifier.from_vkey(GO_VKEY).verify(other.sign(GO_TEXT))


@pytest.mark.parametrize(
    "vkey", ["PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW", "nonsense", ""]
)
def test_malformed_verifier_keys_are_rejected(vkey: str) -> None:
    with pytest.raises(NoteError):
        NoteVerifier.from_vkey(vkey)


def test_checkpoint_round_trips() -> None:
    text = format_checkpoint("example.com/log", 12, bytes(range(32)))
    assert text == "example.com/log\n12\nAAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=\n"
    parsed = parse_checkpoint(text)
    assert (parsed.origin, parsed.size, parsed.root) == ("example.com/log", 12, bytes(range(32)))


@pytest.mark.parametrize("text", ["o\n-1\nAA==\n", "o\n01\nAA==\n", "o\n1\n", "o\n1\nAAEC\n"])
def test_malformed_checkpoints_are_rejected(text: str) -> None:
    with pytest.raises(NoteError):
        parse_checkpoint(text)
