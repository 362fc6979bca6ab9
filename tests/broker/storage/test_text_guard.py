"""No statement sends text with a control character, on SQLite and PostgreSQL (T7, C1.8):
PostgreSQL answered NUL with a driver error (a 500) and SQLite stored it silently. Whatever the
path (ORM, a lookup, Core), the guard refuses it with a clear error and nothing is stored; the
database stays usable."""

from __future__ import annotations

import pytest
from sqlalchemy import insert, select
from sqlmodel import col

from broker.recipients.models import Recipient
from broker.storage.db import Database
from broker.storage.guard import MAX_SEQ, UnstorableNumber, UnstorableText


def _row(recipient_id: str, display_name: str, created_us: int = 0) -> Recipient:
    return Recipient(
        recipient_id=recipient_id,
        display_name=display_name,
        kind="third_party",
        purposes="[]",
        webhook_url=None,
        status="active",
        created_us=created_us,
        updated_us=0,
    )


@pytest.mark.parametrize("bad", ["Acme\x00", "Acme\x1b[2J", "\x07"])
def test_T7_text_with_a_control_character_is_never_stored(database: Database, bad: str) -> None:
    refused = pytest.raises(UnstorableText, match=r"control character U\+00")
    with refused, database.transaction() as session:
        session.add(_row("acme", bad))
    with pytest.raises(UnstorableText), database.transaction() as session:
        session.get(Recipient, bad)
    table = Recipient.__table__  # type: ignore[attr-defined]
    with pytest.raises(UnstorableText), database.transaction() as session:
        session.execute(insert(table).values(**_row("acme", bad).model_dump()))
    with database.transaction() as session:
        assert list(session.execute(select(col(Recipient.recipient_id)))) == []
        session.add(_row("acme", "Acme\tMulti\r\nline"))  # tab and line breaks are allowed
    with database.transaction() as session:
        stored = session.get(Recipient, "acme")
        assert stored is not None and stored.display_name == "Acme\tMulti\r\nline"


@pytest.mark.parametrize("bad", [MAX_SEQ + 1, -MAX_SEQ - 2, 89482238066410353852416])
def test_T7_a_number_past_64_bits_is_a_clear_error_not_a_driver_crash(
    database: Database, bad: int
) -> None:
    """SQLite's driver raised OverflowError (a 500) for a sequence number a fuzzer sent."""
    with pytest.raises(UnstorableNumber, match="64-bit"), database.transaction() as session:
        session.add(_row("acme", "Acme", bad))
    with database.transaction() as session:
        session.add(_row("acme", "Acme", MAX_SEQ))
    with database.transaction() as session:
        stored = session.get(Recipient, "acme")
        assert stored is not None and stored.created_us == MAX_SEQ
