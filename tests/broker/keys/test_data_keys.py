"""Data keys per subject on both backends: envelope encryption, KEK rotation by re-wrapping,
and crypto-shredding recorded in the audit log (C1.6, C1.7)."""

from __future__ import annotations

import secrets
from pathlib import Path

import pytest
from sqlmodel import select

from broker.keys.models import DataKey
from broker.keys.provider import FileKeyProvider
from broker.keys.service import DataKeys, KeyDestroyed
from broker.kit.clock import SystemClock
from broker.kit.ids import SubjectHasher
from broker.storage.db import Database
from tests.broker.fakes import RecordingAuditSink, settings_for


@pytest.fixture
def provider(tmp_path: Path) -> FileKeyProvider:
    return FileKeyProvider.create(settings_for(tmp_path / "data"))


@pytest.fixture
def audit() -> RecordingAuditSink:
    return RecordingAuditSink()


@pytest.fixture
def keys(provider: FileKeyProvider, audit: RecordingAuditSink) -> DataKeys:
    return DataKeys(provider, audit, SystemClock(), SubjectHasher(secrets.token_bytes(32)))


def _seal(db: Database, keys: DataKeys, subject: str, data: bytes) -> bytes:
    with db.transaction() as session:
        ref = keys.current_ref(session, subject)
        return keys.keyring(session).seal(ref, data, subject.encode())


def _open(db: Database, keys: DataKeys, sealed: bytes, subject: str) -> bytes:
    with db.transaction() as session:
        return keys.keyring(session).open(sealed, subject.encode())


def test_C1_7_data_key_is_stored_only_wrapped(database: Database, keys: DataKeys) -> None:
    sealed = _seal(database, keys, "customer-1", b"usage")
    assert _open(database, keys, sealed, "customer-1") == b"usage"
    with database.transaction() as session:
        row = session.exec(select(DataKey)).one()
        plain = keys.load(session, row.key_ref)
    assert row.wrapped is not None and plain not in row.wrapped
    assert "customer-1" not in row.subject_hash


def test_each_subject_gets_its_own_key(database: Database, keys: DataKeys) -> None:
    with database.transaction() as session:
        assert keys.current_ref(session, "a") != keys.current_ref(session, "b")
        assert keys.current_ref(session, "a") == keys.current_ref(session, "a")


def test_C1_6_kek_rotation_rewraps_without_reencrypting(
    database: Database, keys: DataKeys, provider: FileKeyProvider, audit: RecordingAuditSink
) -> None:
    sealed = [_seal(database, keys, f"c{i}", b"usage") for i in range(3)]
    provider.add_version()
    with database.transaction() as session:
        report = keys.rewrap_all(session, "test")
        assert keys.usage_by_kek(session) == {"file:v2": 3}
    assert report.rewrapped == 3 and report.from_keks == {"file:v1": 3}
    provider.retire("file:v1")
    assert [_open(database, keys, s, f"c{i}") for i, s in enumerate(sealed)] == [b"usage"] * 3
    assert "key.kek_rotated" in audit.types()


def test_C1_6_rotated_subject_key_still_opens_old_blocks(
    database: Database, keys: DataKeys
) -> None:
    old = _seal(database, keys, "c", b"old")
    with database.transaction() as session:
        new_ref = keys.rotate_subject(session, "c", "test")
        assert keys.current_ref(session, "c") == new_ref
    new = _seal(database, keys, "c", b"new")
    assert (_open(database, keys, old, "c"), _open(database, keys, new, "c")) == (b"old", b"new")


def test_C1_7_destroyed_key_makes_data_unreadable_and_is_audited(
    database: Database, keys: DataKeys, audit: RecordingAuditSink
) -> None:
    sealed = _seal(database, keys, "leaving-customer", b"usage")
    with database.transaction() as session:
        assert keys.destroy(session, "leaving-customer", "test", "erasure request") == 1
    with pytest.raises(KeyDestroyed):
        _open(database, keys, sealed, "leaving-customer")
    with pytest.raises(KeyDestroyed), database.transaction() as session:
        keys.current_ref(session, "leaving-customer")
    shred = [e for e in audit.events if e.type == "key.data_key_destroyed"]
    assert len(shred) == 1 and shred[0].subject is not None
    assert "leaving-customer" not in str(shred[0])


def test_failed_transaction_leaves_no_key_behind(database: Database, keys: DataKeys) -> None:
    with pytest.raises(RuntimeError), database.transaction() as session:
        keys.current_ref(session, "c")
        raise RuntimeError("the job failed after creating the key")
    with database.transaction() as session:
        assert session.exec(select(DataKey)).all() == []
