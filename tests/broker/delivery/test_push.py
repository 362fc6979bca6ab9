"""Push delivery and withdrawal propagation through a real webhook over mutual TLS (X.1332
C3.2, R3.4, C2.2, T7): signed pages, receipts, retries with backoff, dead letters, deletion
requests with signed acknowledgements, overdue deletions, erasure that crypto-shreds."""

from __future__ import annotations

import dataclasses
import json
import time
from datetime import timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from joserfc.jwk import ECKey
from sqlalchemy import text
from sqlmodel import select

from broker.delivery import deletion
from broker.delivery.errors import AlreadyAcknowledged, BadAcknowledgement, NotRedrivable
from broker.delivery.models import DeletionRequest, Delivery
from broker.delivery.service import PushLoop, RoundReport
from broker.errors import NotFound
from broker.recipients.service import Recipients
from broker.regulator.service import metrics
from broker.release.errors import FeedStopped, InvalidFeed
from broker.release.feeds import FeedSpec
from broker.runtime.wiring import erase_customer, open_consents, open_deletions
from demo.receiver import sign_as_recipient
from tests.broker.delivery.conftest import CLOSED_PORT, Hooked
from tests.broker.release.conftest import CUSTOMER, DAY0, set_purposes

SUBJECT = FeedSpec("personalised_service", ("consumption",), "hourly", "subject",
                   subject=CUSTOMER, period_from=DAY0, delivery="push")  # fmt: skip


def _deliveries(h: Hooked) -> list[Delivery]:
    with h.b.rt.db.transaction() as session:
        return list(h.push.outbox.deliveries(session, "acme"))


def _audit_types(h: Hooked) -> list[str]:
    with h.b.rt.db.transaction() as session:
        rows = session.execute(text("SELECT event_type FROM audit_entry")).all()
    return [row[0] for row in rows]


def _subscribe(h: Hooked) -> str:
    h.b.consent()
    return str(h.feeds.subscribe("acme", SUBJECT)["feed_id"])


def test_C3_2_push_feed_pages_arrive_signed_with_a_signed_receipt(hooked: Hooked) -> None:
    feed_id = _subscribe(hooked)
    assert hooked.round() == {"delivered": 2, "retrying": 0, "dead": 0}
    assert hooked.round() == {"delivered": 0, "retrying": 0, "dead": 0}  # both ended days sent
    assert len(hooked.receiver.held) == 2 and not hooked.receiver.rejected
    page = json.loads(next(iter(hooked.receiver.held.values())))
    assert page["release"]["feed_id"] == feed_id and len(page["rows"]) == 24
    rows = _deliveries(hooked)
    assert {r.status for r in rows} == {"delivered"} and all(r.receipt for r in rows)
    assert {r.release_id for r in rows} == set(hooked.receiver.held)
    assert _audit_types(hooked).count("delivery.delivered") == 2
    with pytest.raises(FeedStopped):  # a pushed feed is not also pulled
        hooked.feeds.page("acme", feed_id)


def test_T7_failed_pushes_are_retried_with_growing_jittered_delays(hooked: Hooked) -> None:
    hooked.receiver.fail_first = 2
    _subscribe(hooked)
    assert hooked.round()["retrying"] == 2
    (first, *_) = _deliveries(hooked)
    delay_1 = first.next_attempt_us - int(hooked.b.clock.now().timestamp() * 1e6)
    assert 0.5e6 <= delay_1 <= 1e6  # base 1 s: uniform in [ceiling/2, ceiling]
    assert hooked.round() == {"delivered": 0, "retrying": 0, "dead": 0}  # not due yet
    hooked.b.clock.advance(timedelta(seconds=61))
    assert hooked.round() == {"delivered": 2, "retrying": 0, "dead": 0}
    assert hooked.receiver.answered_503 == 2
    assert sorted(r.attempts for r in _deliveries(hooked)) == [2, 2]


def test_T7_out_of_attempts_is_a_dead_letter_and_can_be_redriven(hooked: Hooked) -> None:
    _subscribe(hooked)
    with hooked.b.rt.db.transaction() as session:  # the webhook moved away: nobody listens
        Recipients(hooked.b.rt.audit, hooked.b.clock, egress=hooked.egress).set_webhook(
            session, "acme", f"https://127.0.0.1:{CLOSED_PORT}/hook", "test"
        )
    hooked.push.push_feeds(RoundReport())
    for _ in range(4):
        hooked.round()
        hooked.b.clock.advance(timedelta(seconds=61))
    rows = _deliveries(hooked)
    assert {r.status for r in rows} == {"dead"} and {r.attempts for r in rows} == {4}
    assert all("Error" in (r.last_error or "") for r in rows)
    assert _audit_types(hooked).count("delivery.dead_lettered") == 2
    hooked.push.outbox.redrive(rows[0].delivery_id, "cli:operator")
    with pytest.raises(NotRedrivable):
        hooked.push.outbox.redrive(rows[0].delivery_id, "cli:operator")


def test_C3_2_a_push_the_recipient_refuses_is_dead_at_once(hooked: Hooked) -> None:
    hooked.receiver.broker_key = Ed25519PrivateKey.generate().public_key()  # cannot verify
    _subscribe(hooked)
    assert hooked.round() == {"delivered": 0, "retrying": 0, "dead": 2}
    assert {r.response_status for r in _deliveries(hooked)} == {401}
    assert len(hooked.receiver.rejected) == 2


def test_R3_4_withdrawal_sends_a_signed_deletion_request_and_takes_a_signed_ack(
    hooked: Hooked,
) -> None:
    consent_id = hooked.b.consent()
    hooked.feeds.subscribe("acme", SUBJECT)
    hooked.round()
    held = sorted(hooked.receiver.held)
    hooked.b.withdraw(consent_id)
    assert hooked.round()["delivered"] == 1
    (request,) = hooked.receiver.deletion_requests
    assert request["release_ids"] == held and request["consent_id"] == consent_id
    assert request["reason"] == "withdrawn"
    deletions = open_deletions(hooked.b.rt)
    ack = hooked.receiver.acknowledge(request)
    assert hooked.receiver.held == {}
    with hooked.b.rt.db.transaction() as session:
        with pytest.raises(NotFound):  # another recipient cannot acknowledge it
            deletions.acknowledge(session, "rival", request["deletion_id"], ack)
        done = deletions.acknowledge(session, "acme", request["deletion_id"], ack)
    assert done["status"] == "acknowledged"
    with hooked.b.rt.db.transaction() as session, pytest.raises(AlreadyAcknowledged):
        deletions.acknowledge(session, "acme", request["deletion_id"], ack)
    with hooked.b.rt.db.transaction() as session:
        counts = metrics(session, hooked.b.clock.now())["deletions"]
    assert counts["requested"] == 1 and counts["acknowledged"] == 1 and counts["overdue"] == 0


def _one_request(h: Hooked) -> dict[str, object]:
    consent_id = h.b.consent()
    h.feeds.subscribe("acme", SUBJECT)
    h.round()
    h.b.withdraw(consent_id)
    with h.b.rt.db.transaction() as session:
        (request,) = deletion.find(session, h.b.clock.now(), recipient="acme")
    return request


def test_R3_4_a_forged_or_wrong_acknowledgement_is_refused(hooked: Hooked) -> None:
    request = _one_request(hooked)
    deletion_id = str(request["deletion_id"])
    claims = {
        "deletion_id": deletion_id,
        "recipient": "acme",
        "release_ids": request["release_ids"],
        "deleted_at": "2026-11-22T02:00:00+00:00",
    }
    stranger = ECKey.generate_key("P-256", parameters={"kid": "acme-1"})
    cases = {
        "unregistered key": sign_as_recipient(stranger, claims, deletion.ACK_TYPE),
        "other releases": sign_as_recipient(
            hooked.key, claims | {"release_ids": ["rl_other"]}, deletion.ACK_TYPE
        ),
        "other request": sign_as_recipient(
            hooked.key, claims | {"deletion_id": "del_other"}, deletion.ACK_TYPE
        ),
        "wrong type": sign_as_recipient(hooked.key, claims, "x1332-delivery-receipt+jws"),
        "not a JWS": "not.a.jws",
    }
    deletions = open_deletions(hooked.b.rt)
    for what, ack in cases.items():
        with hooked.b.rt.db.transaction() as session, pytest.raises(BadAcknowledgement):
            deletions.acknowledge(session, "acme", deletion_id, ack)
            pytest.fail(f"accepted an acknowledgement with {what}")


def test_R3_4_an_unacknowledged_deletion_past_its_deadline_is_overdue(hooked: Hooked) -> None:
    request = _one_request(hooked)
    rt = hooked.b.rt
    with rt.db.transaction() as session:
        assert deletion.find(session, hooked.b.clock.now(), "overdue") == []
    hooked.b.clock.advance(timedelta(days=31))
    with rt.db.transaction() as session:
        (overdue,) = deletion.find(session, hooked.b.clock.now(), "overdue")
        counts = metrics(session, hooked.b.clock.now())["deletions"]
    assert overdue["deletion_id"] == request["deletion_id"] and overdue["status"] == "overdue"
    assert counts["overdue"] == 1 and counts["acknowledged"] == 0


def test_R3_4_erasure_notifies_every_recipient_and_shreds_queued_pushes(hooked: Hooked) -> None:
    _subscribe(hooked)
    hooked.round()  # two days delivered
    hooked.b.clock.advance(timedelta(days=1))  # a third day ends; its page waits in the outbox
    hooked.push.push_feeds(RoundReport())
    summary = erase_customer(hooked.b.rt, CUSTOMER, "cli:dpo", "erasure request")
    assert summary["recipients_notified"] == ["acme"] and summary["data_keys_destroyed"] >= 1
    assert summary["consents_withdrawn"] == 1
    with hooked.b.rt.db.transaction() as session:
        rows = session.exec(select(DeletionRequest)).all()
        assert [r.reason for r in rows] == ["erasure"]  # one request, not one per withdrawal
        assert open_consents(hooked.b.rt).consents(session, CUSTOMER) == []
    hooked.round()
    by_kind = {(r.kind, r.status) for r in _deliveries(hooked)}
    assert ("release", "dead") in by_kind and ("deletion_request", "delivered") in by_kind
    dead = [r for r in _deliveries(hooked) if r.status == "dead"]
    assert all("crypto-shredded" in (r.last_error or "") for r in dead)
    (request,) = hooked.receiver.deletion_requests
    assert request["reason"] == "erasure" and len(request["release_ids"]) == 3


def test_C3_2_the_serve_loop_pushes_on_its_own_and_stops(hooked: Hooked) -> None:
    """What ``broker serve`` runs: the worker round on a thread, every poll interval."""
    _subscribe(hooked)
    loop = PushLoop(hooked.push, hooked.poster, poll_s=0.05).start()
    try:
        deadline = time.monotonic() + 60  # a bound on a hang, not on speed
        while len(hooked.receiver.held) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)  # the poll's pace; the loop checks the condition
    finally:
        loop.stop()
    assert len(hooked.receiver.held) == 2


def test_R3_4_expiry_propagates_like_a_withdrawal(hooked: Hooked) -> None:
    """The worker round appends the expiry when it comes: the push feed stops on its next page
    and the recipient is sent a deletion request for what it received."""
    feed_id = _subscribe(hooked)
    hooked.round()
    hooked.b.clock.advance(timedelta(days=91))  # the consent ran for 90 days
    report = hooked.push.round(hooked.poster)
    assert report.expired == 1 and report.stopped_feeds == 1
    (request,) = hooked.receiver.deletion_requests
    assert request["reason"] == "expired" and len(request["release_ids"]) == 2
    assert hooked.feeds.get("acme", feed_id)["status"] == "stopped"


def test_R3_5_a_push_feed_whose_purpose_leaves_the_registration_is_stopped(
    hooked: Hooked,
) -> None:
    """The worker checks the registration before every page, as a pull does: a purpose the
    operator took from the recipient stops its push feed, before any decision is made."""
    feed_id = _subscribe(hooked)
    set_purposes(hooked.b.rt, "acme", ("demand_response",))
    report = hooked.push.round(hooked.poster)
    assert report.stopped_feeds == 1 and report.pushed_pages == 0
    assert not hooked.receiver.held and _deliveries(hooked) == []
    feed = hooked.feeds.get("acme", feed_id)
    assert feed["status"] == "stopped" and "'personalised_service'" in feed["stop_reason"]
    with hooked.b.rt.db.transaction() as session:
        assert session.execute(text("SELECT count(*) FROM policy_decision")).scalar_one() == 0


def test_C3_2_a_push_feed_without_a_webhook_is_refused_clearly(hooked: Hooked) -> None:
    with pytest.raises(InvalidFeed, match="push feed needs a webhook_url"):
        hooked.feeds.subscribe("rival", SUBJECT)  # registered nowhere with a webhook
    with pytest.raises(InvalidFeed, match="delivery must be one of pull, push"):
        hooked.feeds.subscribe("acme", dataclasses.replace(SUBJECT, delivery="carrier-pigeon"))


def test_T7_a_claimed_delivery_is_not_claimed_again_until_its_round_could_have_ended(
    hooked: Hooked,
) -> None:
    """Two workers (two ``broker serve`` processes) do not post the same delivery at once: a
    claim leases it for longer than a whole round of timeouts."""
    _subscribe(hooked)
    hooked.push.push_feeds(RoundReport())
    first = hooked.push.outbox._claim()
    assert len(first) == 2 and hooked.push.outbox._claim() == []
    settings = hooked.push.outbox.settings
    hooked.b.clock.advance(timedelta(seconds=settings.timeout_s * 2 * settings.batch))
    assert hooked.push.outbox._claim() == []
    hooked.b.clock.advance(timedelta(seconds=settings.batch + 6))
    assert len(hooked.push.outbox._claim()) == 2  # the worker died: another one takes over
