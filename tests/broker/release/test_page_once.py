"""A feed's page is released once (X.1332 C3.2, R3.4, T4): a second release of the same (feed,
period) is refused by the database, whoever writes it; the same cursor asked again, or twice at
once, over the real HTTPS server gets one page and one clear 409 naming the release of record
and the next cursor; migration 0012 keeps pages released twice before it, the first as the page
of record."""

from __future__ import annotations

import datetime as dt
import json
import secrets
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import psycopg
import pytest
from sqlalchemy import Column, MetaData, Table, insert, text
from sqlalchemy.exc import IntegrityError

from broker.release.errors import PageAlreadyReleased
from broker.release.models import ReleaseRecord
from broker.release.once import is_page_conflict
from broker.release.service import ReleaseOptions, ReleasePipeline
from broker.schema import migrate
from broker.storage.db import Database
from tests.broker.release.conftest import CUSTOMER, DAY0, Broker
from tests.broker.release.test_feeds import BODY, Server, server  # noqa: F401 (the fixture)
from tests.conftest import PG_ADMIN_DSN

RELEASES = ReleaseRecord.metadata.tables["release"]
DAY_US = 86_400_000_000
DAY = dt.timedelta(days=1)


def _release_row(release_id: str, feed_id: str | None, start_us: int) -> dict[str, object]:
    return {"release_id": release_id, "recipient": "acme", "purpose": "personalised_service",
            "decision_id": f"dc_{release_id}", "revision": "r1", "consent_ids": "[]",
            "tier": "raw", "manifest_json": "{}", "manifest_digest": "0" * 64, "rows": 24,
            "feed_id": feed_id, "at_us": start_us + DAY_US, "period_from_us": start_us,
            "period_to_us": start_us + DAY_US}  # fmt: skip


def test_C3_2_a_second_release_row_of_one_feed_period_is_refused(database: Database) -> None:
    """The unique (feed_id, period_from_us) index refuses a second page; releases outside a feed
    (no feed id) are not pages and may repeat a period."""
    start = int(DAY0.timestamp()) * 1_000_000
    with database.transaction() as session:
        session.execute(insert(RELEASES).values(**_release_row("rl_1", "fd_1", start)))
        session.execute(insert(RELEASES).values(**_release_row("rl_2", "fd_1", start + DAY_US)))
        session.execute(insert(RELEASES).values(**_release_row("rl_3", None, start)))
        session.execute(insert(RELEASES).values(**_release_row("rl_4", None, start)))
    with pytest.raises(IntegrityError) as refused, database.transaction() as session:
        session.execute(insert(RELEASES).values(**_release_row("rl_5", "fd_1", start)))
    assert is_page_conflict(refused.value)
    with database.transaction() as session:
        assert session.execute(text('SELECT COUNT(*) FROM "release"')).scalar_one() == 4


def _count(b: Broker, sql: str) -> int:
    with b.rt.db.transaction() as session:
        return int(session.execute(text(sql)).scalar_one())


def _feed_release(b: Broker, pipeline: ReleasePipeline) -> str:
    with b.rt.db.transaction() as session:
        request = pipeline.request_for(session, "acme", "personalised_service", ("consumption",),
                                       "hourly", DAY0, DAY0 + DAY, CUSTOMER)  # fmt: skip
    return pipeline.run(b.rt.db, request, ReleaseOptions(feed_id="fd_x")).release_id


def test_C3_2_the_pipeline_refuses_a_second_release_of_a_page_and_keeps_nothing_of_it(
    broker: Broker,
) -> None:
    """A writer that lost the race (its own check saw nothing yet) ends as "already released":
    a 409, its decision record, audit entry and release rolled back whole."""
    broker.consent()
    pipeline = broker.pipeline()
    first = _feed_release(broker, pipeline)
    before = [_count(broker, 'SELECT COUNT(*) FROM "release"'),
              _count(broker, "SELECT COUNT(*) FROM audit_entry"),
              _count(broker, "SELECT COUNT(*) FROM policy_decision")]  # fmt: skip
    with pytest.raises(PageAlreadyReleased) as again:
        _feed_release(broker, pipeline)
    assert again.value.status_code == 409 and "fd_x" in again.value.message
    after = [_count(broker, 'SELECT COUNT(*) FROM "release"'),
             _count(broker, "SELECT COUNT(*) FROM audit_entry"),
             _count(broker, "SELECT COUNT(*) FROM policy_decision")]  # fmt: skip
    assert after == before
    with broker.rt.db.transaction() as session:
        kept = session.execute(text("SELECT release_id FROM \"release\" WHERE feed_id = 'fd_x'"))
        assert [row[0] for row in kept] == [first]


def _feed_releases(b: Broker, feed_id: str) -> int:
    return _count(b, f"SELECT COUNT(*) FROM \"release\" WHERE feed_id = '{feed_id}'")


def test_C3_2_the_same_cursor_again_over_mtls_is_409_naming_the_release_and_next_cursor(
    server: Server,  # noqa: F811
    broker: Broker,
) -> None:
    feed_id = server.acme.post(server.base, json=BODY).json()["feed_id"]
    first = server.acme.get(f"{server.base}/{feed_id}/data")
    assert first.status_code == 200, first.text[:300]
    again = server.acme.get(f"{server.base}/{feed_id}/data")  # no cursor: the first page again
    assert again.status_code == 409, again.text[:300]
    refused = again.json()
    assert refused["error"] == "PageAlreadyReleased"
    assert first.headers["X-Next-Cursor"] in refused["detail"]
    assert _feed_releases(broker, feed_id) == 1
    second = server.acme.get(
        f"{server.base}/{feed_id}/data", params={"cursor": first.headers["X-Next-Cursor"]}
    )
    assert second.status_code == 200, second.text[:300]
    assert _feed_releases(broker, feed_id) == 2


def test_C3_2_two_concurrent_gets_with_one_cursor_release_the_page_once(
    server: Server,  # noqa: F811
    broker: Broker,
) -> None:
    """Both requests are sent together; one gets the page, the other a 409 (never a 500), and
    one release and one ``release.made`` entry are written."""
    feed_id = server.acme.post(server.base, json=BODY).json()["feed_id"]
    start = threading.Barrier(2)
    answers: list[httpx.Response] = []

    def get() -> None:
        start.wait(timeout=30)
        answers.append(server.acme.get(f"{server.base}/{feed_id}/data"))

    threads = [threading.Thread(target=get) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert sorted(a.status_code for a in answers) == [200, 409], [a.text[:300] for a in answers]
    (refused,) = [a.json() for a in answers if a.status_code == 409]
    assert refused["error"] == "PageAlreadyReleased"
    assert _feed_releases(broker, feed_id) == 1
    made = _count(
        broker,
        f"SELECT COUNT(*) FROM audit_entry WHERE event_type = 'release.made' "
        f"AND body LIKE '%{feed_id}%'",
    )
    assert made == 1


@pytest.fixture(params=["sqlite", "postgres"])
def at_0011(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Database]:
    """An empty database migrated to 0011 (before this change)."""
    if request.param == "sqlite":
        db = Database.from_url(f"sqlite:///{tmp_path / 'old.db'}")
        migrate.upgrade(db.engine, "0011")
        yield db
        db.dispose()
        return
    request.getfixturevalue("pg_url")  # skips where no server answers
    name = f"broker_mig_{secrets.token_hex(4)}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = PG_ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://")
    db = Database.from_url(f"{base}/{name}")
    try:
        migrate.upgrade(db.engine, "0011")
        yield db
    finally:
        db.dispose()
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


OLD_RELEASES = Table(
    "release", MetaData(), *(Column(c.name) for c in RELEASES.columns if c.name[:7] != "period_")
)
"""The release table as 0011 has it (no period)."""


def _old_release(db: Database, release_id: str, feed_id: str | None, day: int, at: int) -> None:
    start_s = int(DAY0.timestamp()) + day * 86_400
    request = {"request": {"from_s": start_s, "to_s": start_s + 86_400}}
    row = _release_row(release_id, feed_id, 0)
    del row["period_from_us"], row["period_to_us"]
    row["at_us"] = at
    with db.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO policy_decision (decision_id, at_us, revision, engine, purpose, "
                "recipient, allow, tier, input_json, result_json) VALUES (:d, :at, 'r1', "
                "'regorus', 'personalised_service', 'acme', :allow, 'raw', :input, '{}')"
            ),
            {"d": row["decision_id"], "at": at, "allow": True, "input": json.dumps(request)},
        )
        conn.execute(insert(OLD_RELEASES).values(**row))


def test_T4_migration_0012_keeps_pages_released_twice_and_records_the_first(
    at_0011: Database,
) -> None:
    """Rows of a page released twice before 0012 are all kept (each was delivered, is in the
    audit log and in the recipient's deletion scope); the earliest is the page of record, the
    later copy keeps no period; the period of every other release comes from its decision."""
    db, d0 = at_0011, int(DAY0.timestamp()) * 1_000_000
    _old_release(db, "rl_a", "fd_1", 0, at=10)
    _old_release(db, "rl_b", "fd_1", 0, at=20)  # the same page again: the race this fixes
    _old_release(db, "rl_c", "fd_1", 1, at=30)
    _old_release(db, "rl_d", None, 0, at=40)
    migrate.upgrade(db.engine, "0012")
    with db.engine.begin() as conn:
        rows = conn.execute(
            text('SELECT release_id, period_from_us, period_to_us FROM "release" ORDER BY 1')
        ).all()
    assert [tuple(r) for r in rows] == [
        ("rl_a", d0, d0 + DAY_US),
        ("rl_b", None, None),
        ("rl_c", d0 + DAY_US, d0 + 2 * DAY_US),
        ("rl_d", d0, d0 + DAY_US),
    ]
    with pytest.raises(IntegrityError) as refused, db.engine.begin() as conn:
        conn.execute(insert(RELEASES).values(**_release_row("rl_e", "fd_1", d0)))
    assert is_page_conflict(refused.value)
