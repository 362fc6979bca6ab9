"""Reading and writing ``consent_event`` through the driver, on SQLite and PostgreSQL alike.

Appends are serialised: on PostgreSQL by a transaction-scoped advisory lock taken before the
head is read (held until commit, so the next writer reads the head this one wrote); on SQLite
by the writer lock every transaction takes at ``BEGIN IMMEDIATE``. Rows go in by binary COPY
(PostgreSQL) or ``executemany`` (SQLite), as the audit log's do: the ORM's per-row work would
cost more than the rest of an append.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from sqlmodel import Session

from broker.kit.clock import to_us
from broker.storage.raw import Raw
from consent_ledger import ConsentEvent, ConsentTerms
from consent_ledger.events import from_body

CONSENT_LOCK = 0x434E5354  # "CNST": the advisory lock that serialises consent appends
_COLUMNS = ("seq", "consent_id", "kind", "customer_ref", "recipient", "at_us", "body")
_TYPES = ("int8", "text", "text", "text", "text", "int8", "text", "bytea", "bytea")
_CHAIN = "body, prev_hash, hash"
StoredRow = tuple[int, str, str, str, str, int, str, bytes, bytes]
"""A row as stored: seq, consent_id, kind, customer_ref, recipient, at_us, body, prev, hash."""


def lock_head(session: Session) -> None:
    """Serialise appenders until this transaction ends (SQLite: its writer lock does it)."""
    raw = Raw(session)
    if raw.postgres:
        raw.execute("SELECT pg_advisory_xact_lock(?)", [CONSENT_LOCK])


def insert(session: Session, entries: Sequence[tuple[ConsentEvent, ConsentTerms]]) -> None:
    Raw(session).copy_in("consent_event", [*_COLUMNS, "prev_hash", "hash"], _TYPES, _rows(entries))


def _rows(entries: Sequence[tuple[ConsentEvent, ConsentTerms]]) -> Iterator[tuple[Any, ...]]:
    last_at, at_us = None, 0  # a group's events share one time: converted once
    for event, terms in entries:
        if event.at is not last_at:
            last_at, at_us = event.at, to_us(event.at)
        yield (
            event.seq,
            event.consent_id,
            event.kind.value,
            terms.customer,
            terms.recipient,
            at_us,
            event.body.decode("utf-8"),
            event.prev_hash,
            event.hash,
        )


def events_after(session: Session, seq: int) -> list[ConsentEvent]:
    """Events with a sequence number above ``seq``, in order."""
    query = f"SELECT {_CHAIN} FROM consent_event WHERE seq > ? ORDER BY seq"  # noqa: S608
    return [_event(row) for row in Raw(session).query(query, [seq])]


def events_of(session: Session, consent_id: str) -> list[ConsentEvent]:
    query = f"SELECT {_CHAIN} FROM consent_event WHERE consent_id = ? ORDER BY seq"  # noqa: S608
    return [_event(row) for row in Raw(session).query(query, [consent_id])]


def stored_rows(session: Session, chunk: int = 10_000) -> Iterator[StoredRow]:
    """Every row in sequence order, read ``chunk`` rows at a time (memory stays bounded)."""
    raw, last = Raw(session), 0
    columns = ", ".join([*_COLUMNS, "prev_hash", "hash"])
    query = f"SELECT {columns} FROM consent_event WHERE seq > ? ORDER BY seq LIMIT ?"  # noqa: S608
    while rows := raw.query(query, [last, chunk]):
        for row in rows:
            yield _stored(row)
        last = rows[-1][0]


def _event(row: Sequence[Any]) -> ConsentEvent:
    body, prev_hash, hashed = row
    return from_body(body.encode("utf-8"), bytes(prev_hash), bytes(hashed))


def _stored(row: Sequence[Any]) -> StoredRow:
    seq, consent_id, kind, customer, recipient, at_us, body, prev_hash, hashed = row
    return (
        seq,
        consent_id,
        kind,
        customer,
        recipient,
        at_us,
        body,
        bytes(prev_hash),
        bytes(hashed),
    )
