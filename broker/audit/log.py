"""The audit log: an append-only RFC 9162 Merkle tree in the database, with signed checkpoints.

``record`` appends a group of events inside the caller's transaction (group commit: one
transaction, one lock of the head row, bulk inserts) and never commits. Only full subtrees of
height >= ``TILE_HEIGHT`` are stored (table ``audit_node``); lower hashes are recomputed from the
<= 64 leaf hashes of one tile, so an append writes about 1.03 rows per entry and a proof needs a
few indexed reads. On PostgreSQL rows stream into a binary COPY while they are built, so the
server stores them on the other core meanwhile; on SQLite they go in with executemany.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Table, select, update
from sqlmodel import Session

from broker.audit.events import AuditEvent
from broker.audit.merkle import (
    EMPTY_ROOT,
    MemoryTree,
    Range,
    consistency_ranges,
    fold_range,
    full_nodes,
    inclusion_ranges,
    leaf_hash,
    node_hash,
    root_from_leaves,
)
from broker.audit.models import AuditCheckpoint, AuditEntry, AuditHead, AuditNode
from broker.audit.note import NoteSigner, format_checkpoint
from broker.errors import BrokerError
from broker.kit.canonical import CanonicalJSONError, canonical_text
from broker.kit.clock import Clock, to_rfc3339, to_us

_string: Callable[[str], str] = json.encoder.encode_basestring
_sha256 = hashlib.sha256

TILE_HEIGHT = 6
TILE = 1 << TILE_HEIGHT
ENTRY_VERSION = 1

_COLUMNS = "seq, event_type, at_us, body"
_SQLITE_INSERT_ENTRY = f"INSERT INTO audit_entry ({_COLUMNS}) VALUES (?,?,?,?)"  # noqa: S608
_PG_COPY_ENTRY = f"COPY audit_entry ({_COLUMNS}) FROM STDIN (FORMAT BINARY)"
_PG_COPY_NODE = "COPY audit_node (level, idx, hash) FROM STDIN (FORMAT BINARY)"
_Row = tuple[int, str, int, str]
ENTRY: Table = AuditEntry.metadata.tables["audit_entry"]
NODE: Table = AuditNode.metadata.tables["audit_node"]
HEAD: Table = AuditHead.metadata.tables["audit_head"]


class AuditLogError(BrokerError):
    status_code = 500


@dataclass(frozen=True)
class StoredCheckpoint:
    size: int
    root: bytes
    note: str


def entry_body(seq: int, event: AuditEvent, time: str) -> str:
    """The canonical JSON (RFC 8785) text hashed into the tree for one entry."""
    return _entry(seq, event, f',"time":{_string(time)},"type":')[0]


def _entry(seq: int, event: AuditEvent, time_part: str) -> tuple[str, bytes]:
    """An entry's canonical text and leaf hash.

    The envelope's keys are fixed and already in RFC 8785 order, so only the values are encoded
    here and ``details`` goes through ``canonical_text``; ``test_entry_body_is_rfc8785`` checks
    the result against the full canonicaliser.
    """
    subject = "null" if event.subject is None else _string(event.subject)
    text = (
        f'{{"actor":{_string(event.actor)},"details":{canonical_text(event.details)},'
        f'"seq":{seq:d},"subject":{subject}{time_part}{_string(event.type)},"v":{ENTRY_VERSION}}}'
    )
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise CanonicalJSONError(f"audit entry {seq} holds a lone surrogate: {exc}") from exc
    return text, _sha256(b"\x00" + data).digest()


_EVENT_TYPE = re.compile(r"[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)*")


class AuditLog:
    def __init__(self, origin: str, signer: NoteSigner, clock: Clock) -> None:
        self.origin = origin
        self.signer = signer
        self._clock = clock
        self._known_types: set[str] = set()

    def _check_types(self, events: Sequence[AuditEvent]) -> None:
        """Event types are dotted lower-case names of at most 64 characters (checked once)."""
        for event in events:
            if event.type not in self._known_types:
                if len(event.type) > 64 or not _EVENT_TYPE.fullmatch(event.type):
                    raise AuditLogError(f"invalid audit event type {event.type[:80]!r}")
                self._known_types.add(event.type)

    # ---- appending ---------------------------------------------------------------------------

    def record(self, session: Session, events: Sequence[AuditEvent]) -> list[int]:
        """Append ``events`` in the caller's transaction; returns their sequence numbers."""
        if not events:
            return []
        self._check_types(events)
        size = self._lock_head(session)
        now = self._clock.now()
        time, at_us = to_rfc3339(now), to_us(now)
        time_part = f',"time":{_string(time)},"type":'
        leaves: list[bytes] = []

        def rows() -> Iterator[_Row]:
            for seq, event in enumerate(events, start=size):
                body, leaf = _entry(seq, event, time_part)
                leaves.append(leaf)
                yield seq, event.type, at_us, body

        # PostgreSQL takes the rows as they are built (COPY overlaps with the server's work);
        # sqlite3's executemany runs fastest over a ready list.
        postgres = session.connection().dialect.name == "postgresql"
        self._insert_entries(session, rows() if postgres else list(rows()))
        self._insert_nodes(session, self._completed_nodes(session, size, leaves))
        new_size = size + len(events)
        session.execute(update(HEAD).where(HEAD.c.id == 1).values(size=new_size))
        return list(range(size, new_size))

    def _lock_head(self, session: Session) -> int:
        query = select(HEAD.c.size).where(HEAD.c.id == 1).with_for_update()
        size = session.execute(query).scalar_one_or_none()
        if size is None:
            raise AuditLogError("the audit log is not initialised; run `broker db upgrade`")
        return int(size)

    def _completed_nodes(
        self, session: Session, old: int, leaves: list[bytes]
    ) -> list[tuple[int, int, bytes]]:
        """Full subtrees of height >= TILE_HEIGHT that the new leaves complete."""
        new = old + len(leaves)
        tile0 = old >> TILE_HEIGHT
        tail = self._leaf_hashes(session, tile0 * TILE, old) + leaves  # leaves from tile0 on
        known = self._compact_range(session, old)
        out: list[tuple[int, int, bytes]] = []
        for t in range(tile0, new >> TILE_HEIGHT):
            start = (t - tile0) * TILE
            known[(TILE_HEIGHT, t)] = root_from_leaves(tail[start : start + TILE])
            out.append((TILE_HEIGHT, t, known[(TILE_HEIGHT, t)]))
        level = TILE_HEIGHT + 1
        while (new >> level) > (old >> level):
            for i in range(old >> level, new >> level):
                h = node_hash(known[(level - 1, 2 * i)], known[(level - 1, 2 * i + 1)])
                known[(level, i)] = h
                out.append((level, i, h))
            level += 1
        return out

    def _compact_range(self, session: Session, size: int) -> dict[tuple[int, int], bytes]:
        """The stored full nodes (level >= TILE_HEIGHT) that make up the tree of ``size``."""
        keys = [
            (lv, (size >> lv) - 1)
            for lv in range(TILE_HEIGHT, size.bit_length())
            if (size >> lv) & 1
        ]
        return _fetch(session, keys, [])[0]

    def _insert_entries(self, session: Session, rows: Iterable[_Row]) -> None:
        """Write rows as ``rows`` yields them: on PostgreSQL the server stores the first rows
        (on the other core) while Python still builds the next ones."""
        conn = session.connection()
        raw = conn.connection.driver_connection
        assert raw is not None
        if conn.dialect.name != "postgresql":
            raw.executemany(_SQLITE_INSERT_ENTRY, rows)  # sqlite3: no per-row ORM work
            return
        with raw.cursor() as cur, cur.copy(_PG_COPY_ENTRY) as copy:
            copy.set_types(["int8", "text", "int8", "text"])  # binary: cheaper to parse
            for row in rows:
                copy.write_row(row)

    def _insert_nodes(self, session: Session, nodes: list[tuple[int, int, bytes]]) -> None:
        if not nodes:
            return
        conn = session.connection()
        raw = conn.connection.driver_connection
        assert raw is not None
        if conn.dialect.name != "postgresql":
            raw.executemany("INSERT INTO audit_node (level, idx, hash) VALUES (?,?,?)", nodes)
            return
        with raw.cursor() as cur, cur.copy(_PG_COPY_NODE) as copy:
            copy.set_types(["int2", "int8", "bytea"])
            for node in nodes:
                copy.write_row(node)

    def clock_now(self) -> datetime:
        return self._clock.now()

    # ---- reading -----------------------------------------------------------------------------

    def size(self, session: Session) -> int:
        return int(session.execute(select(HEAD.c.size).where(HEAD.c.id == 1)).scalar_one())

    def _leaf_hashes(self, session: Session, start: int, end: int) -> list[bytes]:
        if start >= end:
            return []
        query = (
            select(ENTRY.c.body)
            .where(ENTRY.c.seq >= start, ENTRY.c.seq < end)
            .order_by(ENTRY.c.seq)
        )
        found = [leaf_hash(body.encode("utf-8")) for body in session.execute(query).scalars()]
        if len(found) != end - start:
            raise AuditLogError(f"audit entries {start}..{end - 1} are missing from the database")
        return found

    def _hashes_of(self, session: Session, size: int, ranges: Sequence[Range]) -> list[bytes]:
        """Hashes of proof ranges from one query: the stored nodes they need and the leaf
        hashes of the (at most two) tiles their low nodes lie in."""
        plans = [full_nodes(a, b) for a, b in ranges]
        wanted = {n for plan in plans for n in plan}
        high = sorted(n for n in wanted if n[0] >= TILE_HEIGHT)
        tiles = sorted({(ix << lv) >> TILE_HEIGHT for lv, ix in wanted if lv < TILE_HEIGHT})
        spans = [(t * TILE, min(t * TILE + TILE, size)) for t in tiles]
        known, leaves = _fetch(session, high, spans)
        for tile, (first, end) in zip(tiles, spans, strict=True):
            tree = MemoryTree([leaves[seq] for seq in range(first, end)])
            for level, idx in wanted:
                if level < TILE_HEIGHT and (idx << level) >> TILE_HEIGHT == tile:
                    known[(level, idx)] = tree.node(level, idx - (tile << (TILE_HEIGHT - level)))
        return [fold_range([known[n] for n in plan]) for plan in plans]

    def root(self, session: Session, size: int) -> bytes:
        if size == 0:
            return EMPTY_ROOT
        return self._hashes_of(session, size, [(0, size)])[0]

    def inclusion_proof(self, session: Session, seq: int, size: int) -> list[bytes]:
        return self._hashes_of(session, size, inclusion_ranges(seq, size))

    def consistency_proof(self, session: Session, size1: int, size2: int) -> list[bytes]:
        return self._hashes_of(session, size2, consistency_ranges(size1, size2))

    # ---- checkpoints -------------------------------------------------------------------------

    def checkpoint(self, session: Session) -> StoredCheckpoint:
        """Sign the current tree head (or return the checkpoint already signed for it)."""
        size = self.size(session)
        stored = session.get(AuditCheckpoint, size)
        if stored is not None:
            return StoredCheckpoint(stored.size, stored.root, stored.note)
        root = self.root(session, size)
        note = self.signer.sign(format_checkpoint(self.origin, size, root))
        created = to_us(self._clock.now())
        session.add(AuditCheckpoint(size=size, root=root, note=note, created_us=created))
        session.flush()
        return StoredCheckpoint(size, root, note)


def _leaf_sql(mark: str) -> str:
    """PostgreSQL hashes the leaves itself (32 bytes back instead of a body); SQLite hands the
    body over as bytes for Python to hash."""
    if mark == "%s":
        return "sha256('\\x00'::bytea || convert_to(body, 'UTF8'))"
    return "CAST(body AS BLOB)"


def _fetch(
    session: Session, nodes: list[tuple[int, int]], spans: list[tuple[int, int]]
) -> tuple[dict[tuple[int, int], bytes], dict[int, bytes]]:
    """Stored nodes and leaf hashes of seq spans in one round trip, through the driver (the
    ORM's per-row work would cost more than the query on this hot path)."""
    conn = session.connection()
    mark = "%s" if conn.dialect.name == "postgresql" else "?"
    parts, params = [], []
    if spans:
        where = " OR ".join(f"(seq >= {mark} AND seq < {mark})" for _ in spans)
        parts.append(f"SELECT -1, seq, {_leaf_sql(mark)} FROM audit_entry WHERE {where}")  # noqa: S608
        params += [bound for span in spans for bound in span]
    if nodes:
        where = " OR ".join(f"(level = {mark} AND idx = {mark})" for _ in nodes)
        parts.append(f"SELECT level, idx, hash FROM audit_node WHERE {where}")  # noqa: S608
        params += [part for node in nodes for part in node]
    if not parts:
        return {}, {}
    raw = conn.connection.driver_connection
    assert raw is not None
    rows = raw.execute(" UNION ALL ".join(parts), params).fetchall()
    known = {(lv, ix): bytes(h) for lv, ix, h in rows if lv >= 0}
    hashed = conn.dialect.name == "postgresql"
    leaves = {ix: bytes(v) if hashed else leaf_hash(bytes(v)) for lv, ix, v in rows if lv < 0}
    if len(known) != len(nodes) or len(leaves) != sum(end - start for start, end in spans):
        raise AuditLogError("the audit log's stored entries or nodes are incomplete")
    return known, leaves
