"""Queries over customers' sign-in sessions that other operations run in their own transaction."""

from __future__ import annotations

from typing import Any, cast

from sqlalchemy import CursorResult, delete
from sqlmodel import Session

from broker.customers.models import PortalSession

SESSIONS = PortalSession.metadata.tables["portal_session"]


def end_all(session: Session, customer: str) -> int:
    """End every session of ``customer`` (a password change, an erasure), in the caller's
    transaction; how many there were."""
    ended = session.execute(delete(SESSIONS).where(SESSIONS.c.customer_ref == customer))
    return int(cast("CursorResult[Any]", ended).rowcount or 0)
