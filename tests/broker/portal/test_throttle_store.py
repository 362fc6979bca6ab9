"""The sign-in throttle's state in the database, on SQLite and PostgreSQL (X.1332 T7): counts
and waits per account and per address, cleared by a right password (the account's only),
forgotten after a day; and concurrent attempts at the end of a wait, of which only one gets its
password checked (the claim is a conditional update under the row's lock)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import delete, select, text
from sqlmodel import Session

from broker.customers.errors import SignInFailed
from broker.errors import BrokerError, Throttled
from broker.kit.clock import FixedClock
from broker.kit.ids import SubjectHasher
from broker.portal.throttle import ACCOUNT_WAIT, FAILURES, SOURCE_WAIT, Throttle
from broker.settings import Mode
from broker.storage.db import Database
from tests.broker.fakes import settings_for

pytestmark = pytest.mark.timeout(60)
HOME, AWAY = "192.0.2.1", "198.51.100.7"


def _throttle(tmp_path: Path, clock: FixedClock, **portal: object) -> Throttle:
    settings = settings_for(tmp_path / "var", Mode.production, **portal)
    return Throttle(settings, clock, SubjectHasher(b"k" * 32))


def _wrong(_session: Session) -> str:
    raise SignInFailed("wrong username or password")


def _right(_session: Session) -> str:
    return "CUST-0000001"


def _waits(attempt: Callable[[], str], says: str) -> int:
    with pytest.raises(Throttled) as waited:
        attempt()
    assert waited.value.message == says
    return waited.value.retry_after_s


def test_T7_counts_and_waits_per_account_and_address(database: Database, tmp_path: Path) -> None:
    clock = FixedClock(datetime.now(UTC))
    throttle = _throttle(
        tmp_path,
        clock,
        portal_signin_free_failures=2,
        portal_signin_source_free_failures=4,
        portal_signin_delay_s=1.0,
        portal_signin_max_delay_s=4.0,
    )

    def sign_in(check: Callable[[Session], str], user: str = "alice", at: str = HOME) -> str:
        return throttle.guarded(database.transaction, user, at, check)

    for _ in range(2):
        with pytest.raises(SignInFailed):
            sign_in(_wrong)
    assert _waits(lambda: sign_in(_right), ACCOUNT_WAIT) == 1
    clock.advance(timedelta(seconds=1))
    with pytest.raises(SignInFailed):
        sign_in(_wrong)
    assert _waits(lambda: sign_in(_right), ACCOUNT_WAIT) == 2
    clock.advance(timedelta(seconds=2))
    assert sign_in(_right) == "CUST-0000001"  # the account's count is cleared
    with pytest.raises(SignInFailed):
        sign_in(_wrong, "bob")  # the address's fourth: its next attempt waits
    assert _waits(lambda: sign_in(_right, "carol"), SOURCE_WAIT) == 1
    assert sign_in(_right, "carol", AWAY) == "CUST-0000001"
    clock.advance(timedelta(days=1, seconds=1))  # a day on, every count is forgotten
    with pytest.raises(SignInFailed):
        sign_in(_wrong, "bob")
    with database.transaction() as session:
        assert [row.failures for row in session.execute(select(FAILURES))] == [1, 1]


def _blocked_on_a_lock(db: Database) -> bool:
    with db.engine.connect() as conn:
        waiting = conn.execute(
            text(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
        ).scalar_one()
    return bool(waiting)


def test_T7_of_attempts_at_the_end_of_a_wait_one_is_checked_the_others_wait(
    pg_url: str, tmp_path: Path
) -> None:
    """PostgreSQL, where transactions run side by side: the first attempt after a wait claims
    the next wait before its password is checked; a second one, arriving while the first is
    being checked, blocks on the claim's row lock and then waits (429) unchecked. (SQLite runs
    one writing transaction at a time, ``BEGIN IMMEDIATE``.)"""
    db = Database.from_url(pg_url)
    clock = FixedClock(datetime.now(UTC))
    throttle = _throttle(tmp_path, clock, portal_signin_free_failures=1, portal_signin_delay_s=1.0)
    entered, release = threading.Event(), threading.Event()
    checked: list[str] = []
    outcomes: dict[str, object] = {}

    def slow_wrong(_session: Session) -> str:
        checked.append("first")
        entered.set()
        assert release.wait(20)
        raise SignInFailed("wrong username or password")

    def second(_session: Session) -> str:
        checked.append("second")
        return "CUST-0000001"

    def run(name: str, check: Callable[[Session], str], source: str) -> None:
        try:
            outcomes[name] = throttle.guarded(db.transaction, "alice", source, check)
        except BrokerError as exc:
            outcomes[name] = exc

    try:
        with pytest.raises(SignInFailed):
            throttle.guarded(db.transaction, "alice", HOME, _wrong)
        clock.advance(timedelta(seconds=1))
        first = threading.Thread(target=run, args=("first", slow_wrong, HOME))
        first.start()
        assert entered.wait(20)
        later = threading.Thread(target=run, args=("second", second, AWAY))
        later.start()
        deadline = time.monotonic() + 20
        while later.is_alive() and not _blocked_on_a_lock(db):
            assert time.monotonic() < deadline, "the second attempt neither ended nor blocked"
            time.sleep(0.01)  # polling the condition above
        release.set()
        first.join(20)
        later.join(20)
    finally:
        release.set()
        with db.transaction() as session:
            session.execute(delete(FAILURES))
        db.dispose()
    assert checked == ["first"]
    assert isinstance(outcomes["first"], SignInFailed)
    waited = outcomes["second"]
    assert isinstance(waited, Throttled) and waited.message == ACCOUNT_WAIT
    assert waited.retry_after_s == 2
