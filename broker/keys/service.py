"""Data keys per subject (C1.6, C1.7): created on first use, wrapped by the KEK, rotated,
re-wrapped when the KEK rotates, and destroyed to erase a subject (crypto-shredding).

A subject is named here only by its keyed hash. Destroying its keys makes every block sealed
under them unreadable for good, while the audit log, which holds only the hash, still verifies.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import func, update
from sqlmodel import Session, col, select

from broker.audit.events import AuditEvent, AuditSink
from broker.errors import KeyError_
from broker.keys.models import DataKey
from broker.kit.clock import Clock, to_us
from broker.kit.envelope import KeyProvider, KeyRing, UnknownKeyError, WrappedKey, new_data_key
from broker.kit.ids import SubjectHasher, new_id
from broker.storage.raw import Raw


class KeyDestroyed(KeyError_):
    """The subject's data keys were destroyed (erased); its data cannot be read any more."""

    status_code = 410


@dataclass(frozen=True)
class RewrapReport:
    rewrapped: int
    to_kek: str
    from_keks: dict[str, int]


def _context(key_ref: str, subject_hash: str, version: int) -> bytes:
    """What a data key's wrap is bound to: its reference, its subject, its version."""
    return f"{key_ref}|{subject_hash}|{version}".encode()


def _wrap_context(row: DataKey) -> bytes:
    return _context(row.key_ref, row.subject_hash, row.version)


class DataKeys:
    def __init__(
        self, provider: KeyProvider, audit: AuditSink, clock: Clock, hasher: SubjectHasher
    ) -> None:
        self._provider = provider
        self._audit = audit
        self._clock = clock
        self._hash = hasher

    def _versions(self, session: Session, subject_hash: str) -> Sequence[DataKey]:
        query = select(DataKey).where(DataKey.subject_hash == subject_hash)
        return session.exec(query.order_by(col(DataKey.version))).all()

    def current_ref(self, session: Session, subject: str, actor: str = "system") -> str:
        """The key reference new data of ``subject`` is sealed under; created on first use."""
        ref = self.current_refs(session, [subject], actor)[subject]
        if ref is None:
            raise KeyDestroyed(f"the data keys of subject {self._hash(subject)} were destroyed")
        return ref

    def _create(self, session: Session, subject_hash: str, version: int, actor: str) -> str:
        row = DataKey(
            key_ref=new_id("dk"),
            subject_hash=subject_hash,
            version=version,
            created_us=to_us(self._clock.now()),
        )
        wrapped = self._provider.wrap(new_data_key(), _wrap_context(row))
        row.kek_id, row.wrapped = wrapped.kek_id, wrapped.blob
        session.add(row)
        session.flush()
        details = {"key_ref": row.key_ref, "version": version, "kek_id": wrapped.kek_id}
        self._audit.record(
            session, [AuditEvent("key.data_key_created", actor, subject_hash, details)]
        )
        return row.key_ref

    def current_refs(
        self, session: Session, subjects: Sequence[str], actor: str = "system"
    ) -> dict[str, str | None]:
        """``current_ref`` for many subjects in one query: the live key reference of each,
        created in bulk where a subject has none, and None where its keys were destroyed."""
        hashes = {subject: self._hash(subject) for subject in subjects}
        latest: dict[str, tuple[int, str, bool]] = {}
        statement = (
            "SELECT subject_hash, version, key_ref, destroyed_us IS NULL FROM data_key "
            "WHERE subject_hash IN {in}"
        )
        for subject_hash, version, key_ref, live in Raw(session).query_in(
            statement, sorted(set(hashes.values()))
        ):
            known = latest.get(subject_hash)
            if known is None or version > known[0]:
                latest[subject_hash] = (version, key_ref, bool(live))
        missing = sorted({h for h in hashes.values() if h not in latest})
        created = self._create_many(session, missing, actor)
        out: dict[str, str | None] = {}
        for subject, subject_hash in hashes.items():
            found = latest.get(subject_hash)
            if found is None:
                out[subject] = created[subject_hash]
            else:
                out[subject] = found[1] if found[2] else None
        return out

    def _create_many(
        self, session: Session, subject_hashes: list[str], actor: str
    ) -> dict[str, str]:
        if not subject_hashes:
            return {}
        now = to_us(self._clock.now())
        rows: list[tuple[str, str, int, str, bytes, int]] = []
        events = []
        for subject_hash in subject_hashes:
            key_ref = new_id("dk")
            wrapped = self._provider.wrap(new_data_key(), _context(key_ref, subject_hash, 1))
            rows.append((key_ref, subject_hash, 1, wrapped.kek_id, wrapped.blob, now))
            details = {"key_ref": key_ref, "version": 1, "kek_id": wrapped.kek_id}
            events.append(AuditEvent("key.data_key_created", actor, subject_hash, details))
        Raw(session).copy_in(
            "data_key",
            ("key_ref", "subject_hash", "version", "kek_id", "wrapped", "created_us"),
            ("text", "text", "int4", "text", "bytea", "int8"),
            rows,
        )
        self._audit.record(session, events)
        return {row[1]: row[0] for row in rows}

    def load_many(self, session: Session, key_refs: Sequence[str]) -> dict[str, bytes]:
        """Unwrapped data keys by reference; a destroyed or unknown key is left out."""
        out: dict[str, bytes] = {}
        statement = (
            "SELECT key_ref, subject_hash, version, kek_id, wrapped FROM data_key "
            "WHERE key_ref IN {in} AND wrapped IS NOT NULL"
        )
        for key_ref, subject_hash, version, kek_id, wrapped in Raw(session).query_in(
            statement, sorted(set(key_refs))
        ):
            wrapped_key = WrappedKey(kek_id, bytes(wrapped))
            out[key_ref] = self._provider.unwrap(
                wrapped_key, _context(key_ref, subject_hash, version)
            )
        return out

    def rotate_subject(self, session: Session, subject: str, actor: str) -> str:
        """Start a new data-key version for new data; old versions still open old blocks."""
        subject_hash = self._hash(subject)
        versions = self._versions(session, subject_hash)
        if versions and versions[-1].destroyed_us is not None:
            raise KeyDestroyed(f"the data keys of subject {subject_hash} were destroyed")
        return self._create(
            session, subject_hash, (versions[-1].version + 1) if versions else 1, actor
        )

    def load(self, session: Session, key_ref: str) -> bytes:
        row = session.get(DataKey, key_ref)
        if row is None:
            raise UnknownKeyError(f"no data key {key_ref}")
        if row.wrapped is None or row.kek_id is None:
            raise KeyDestroyed(f"data key {key_ref} was destroyed")
        return self._provider.unwrap(WrappedKey(row.kek_id, row.wrapped), _wrap_context(row))

    def keyring(self, session: Session) -> KeyRing:
        """A key ring that unwraps data keys from this session's database on first use."""
        return KeyRing(lambda key_ref: self.load(session, key_ref))

    def destroy(self, session: Session, subject: str, actor: str, reason: str) -> int:
        """Crypto-shred: drop every wrapped key of ``subject``; returns how many were destroyed."""
        subject_hash = self._hash(subject)
        live = [row for row in self._versions(session, subject_hash) if row.wrapped is not None]
        now = to_us(self._clock.now())
        for row in live:
            row.wrapped, row.kek_id, row.destroyed_us = None, None, now
            session.add(row)
        session.flush()
        details = {"keys_destroyed": len(live), "reason": reason}
        self._audit.record(
            session, [AuditEvent("key.data_key_destroyed", actor, subject_hash, details)]
        )
        return len(live)

    def rewrap_all(self, session: Session, actor: str) -> RewrapReport:
        """Re-wrap every live data key under the current KEK (no data is re-encrypted)."""
        to_kek = self._provider.current_kek_id()
        query = select(DataKey).where(col(DataKey.wrapped).is_not(None), DataKey.kek_id != to_kek)
        from_keks: Counter[str] = Counter()
        params = []
        for row in session.exec(query):
            assert row.kek_id is not None and row.wrapped is not None
            key = self._provider.unwrap(WrappedKey(row.kek_id, row.wrapped), _wrap_context(row))
            wrapped = self._provider.wrap(key, _wrap_context(row))
            from_keks[row.kek_id] += 1
            params.append({"key_ref": row.key_ref, "kek_id": to_kek, "wrapped": wrapped.blob})
        if params:
            session.execute(update(DataKey), params)
        report = RewrapReport(len(params), to_kek, dict(from_keks))
        details = {"to_kek": to_kek, "rewrapped": report.rewrapped, "from": report.from_keks}
        self._audit.record(session, [AuditEvent("key.kek_rotated", actor, None, details)])
        return report

    def usage_by_kek(self, session: Session) -> dict[str, int]:
        query = select(DataKey.kek_id, func.count()).group_by(col(DataKey.kek_id))
        return {kek: n for kek, n in session.exec(query) if kek is not None}

    def counts(self, session: Session) -> dict[str, int]:
        total = session.exec(select(func.count()).select_from(DataKey)).one()
        destroyed = session.exec(
            select(func.count()).where(col(DataKey.destroyed_us).is_not(None))
        ).one()
        return {"data_keys": total, "destroyed": destroyed, "live": total - destroyed}
