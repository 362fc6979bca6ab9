"""The stored Merkle log on both backends agrees with a plain in-memory RFC 9162 tree."""

from __future__ import annotations

from typing import Any

import pytest
import rfc8785
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text

from broker.audit.events import AuditEvent
from broker.audit.log import AuditLog, AuditLogError, entry_body
from broker.audit.merkle import (
    MemoryTree,
    leaf_hash,
    root_from_leaves,
    verify_consistency,
    verify_inclusion,
)
from broker.audit.note import NoteVerifier, parse_checkpoint
from broker.kit.canonical import CanonicalJSONError
from broker.storage.db import Database


def _append(db: Database, log: AuditLog, batches: list[int]) -> list[bytes]:
    for n in batches:
        with db.transaction() as session:
            log.record(
                session, [AuditEvent("test.event", "tester", None, {"n": i}) for i in range(n)]
            )
    with db.transaction() as session:
        bodies = session.execute(text("SELECT body FROM audit_entry ORDER BY seq")).scalars()
        return [leaf_hash(body.encode()) for body in bodies]


def test_group_commit_returns_consecutive_sequence_numbers(
    database: Database, log: AuditLog
) -> None:
    with database.transaction() as session:
        assert log.record(session, [AuditEvent("a", "x"), AuditEvent("b", "x")]) == [0, 1]
        assert log.record(session, [AuditEvent("c", "x")]) == [2]
        assert log.record(session, []) == []


def test_a_rolled_back_transaction_appends_nothing(database: Database, log: AuditLog) -> None:
    try:
        with database.transaction() as session:
            log.record(session, [AuditEvent("a", "x")])
            raise RuntimeError("job failed")
    except RuntimeError:
        pass
    with database.transaction() as session:
        assert log.size(session) == 0
        assert log.record(session, [AuditEvent("b", "x")]) == [0]


def test_entry_holds_only_the_keyed_subject_hash(database: Database, log: AuditLog) -> None:
    with database.transaction() as session:
        log.record(
            session, [AuditEvent("key.destroyed", "cli:op", "hs1:ab", {"reason": "erasure"})]
        )
        body = session.execute(text("SELECT body FROM audit_entry")).scalar_one()
    assert body == (
        '{"actor":"cli:op","details":{"reason":"erasure"},"seq":0,"subject":"hs1:ab",'
        '"time":"2026-11-24T12:00:00.000000Z","type":"key.destroyed","v":1}'
    )


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    batches=st.lists(st.sampled_from([1, 2, 7, 255, 256, 257, 600]), min_size=1, max_size=6),
    data=st.data(),
)
def test_stored_roots_and_proofs_equal_the_reference(
    database: Database, log: AuditLog, batches: list[int], data: st.DataObject
) -> None:
    with database.transaction() as session:  # hypothesis reuses the fixture: start empty
        session.execute(text("DELETE FROM audit_entry"))
        session.execute(text("DELETE FROM audit_node"))
        session.execute(text("UPDATE audit_head SET size = 0"))
    leaves = _append(database, log, batches)
    size = len(leaves)
    with database.transaction() as session:
        for tree_size in {1, size, data.draw(st.integers(1, size))}:
            ref = MemoryTree(leaves[:tree_size])
            root = log.root(session, tree_size)
            assert root == root_from_leaves(leaves[:tree_size])
            index = data.draw(st.integers(0, tree_size - 1))
            proof = log.inclusion_proof(session, index, tree_size)
            assert proof == ref.inclusion_proof(index)
            verify_inclusion(index, tree_size, leaves[index], proof, root)
            older = data.draw(st.integers(1, tree_size))
            proof = log.consistency_proof(session, older, tree_size)
            assert proof == ref.consistency_proof(older)
            verify_consistency(older, tree_size, root_from_leaves(leaves[:older]), root, proof)


def test_checkpoint_is_signed_and_stored_once(database: Database, log: AuditLog) -> None:
    leaves = _append(database, log, [300])
    with database.transaction() as session:
        first = log.checkpoint(session)
        assert log.checkpoint(session) == first
    verifier = NoteVerifier.from_vkey(log.signer.verifier_key())
    parsed = parse_checkpoint(verifier.verify(first.note))
    assert (parsed.size, parsed.root) == (300, root_from_leaves(leaves))


_text = st.text(max_size=12)
_details = st.dictionaries(_text, st.none() | st.booleans() | st.integers() | _text, max_size=4)


@given(st.integers(0, 2**40), _text, _text, st.none() | _text, _details)
def test_entry_body_is_rfc8785(
    seq: int, kind: str, actor: str, subject: str | None, details: dict[str, object]
) -> None:
    event = AuditEvent(kind, actor, subject, details)
    expected: Any = {
        "v": 1,
        "seq": seq,
        "type": kind,
        "actor": actor,
        "subject": subject,
        "time": "2026-11-24T12:00:00.000000Z",
        "details": details,
    }
    try:
        want = rfc8785.dumps(expected).decode("utf-8")
    except rfc8785.CanonicalizationError:
        with pytest.raises(CanonicalJSONError):
            entry_body(seq, event, "2026-11-24T12:00:00.000000Z")
        return
    assert entry_body(seq, event, "2026-11-24T12:00:00.000000Z") == want


def test_event_that_is_not_valid_unicode_is_refused_and_nothing_lands(
    database: Database, log: AuditLog
) -> None:
    with pytest.raises(CanonicalJSONError, match="lone surrogate"), database.transaction() as s:
        log.record(s, [AuditEvent("ok", "x"), AuditEvent("bad", "x", None, {"v": "\ud800"})])
    with database.transaction() as session:
        assert log.size(session) == 0


def test_awkward_characters_are_stored_exactly(database: Database, log: AuditLog) -> None:
    awkward = 'tab\there\nnew\\line\r"quote" \x00 \u2028 é 🙂'
    event = AuditEvent("test.awkward_chars", awkward, awkward, {awkward: awkward})
    with database.transaction() as session:
        log.record(session, [event, event])
        bodies = list(session.execute(text("SELECT body FROM audit_entry ORDER BY seq")).scalars())
        kinds = list(session.execute(text("SELECT event_type FROM audit_entry")).scalars())
        root = log.root(session, 2)
    assert bodies == [entry_body(i, event, "2026-11-24T12:00:00.000000Z") for i in (0, 1)]
    assert kinds == [event.type, event.type]
    assert root == root_from_leaves([leaf_hash(b.encode()) for b in bodies])


@pytest.mark.parametrize("kind", ["", "Upper.case", "tab\there", "a..b", "x" * 65, "trailing."])
def test_malformed_event_types_are_refused(database: Database, log: AuditLog, kind: str) -> None:
    with (
        pytest.raises(AuditLogError, match="invalid audit event type"),
        database.transaction() as s,
    ):
        log.record(s, [AuditEvent(kind, "x")])
