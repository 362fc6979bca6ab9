"""The consent and policy chapter of ``broker demo``.

A customer consents (a receipt they can verify with the broker's public key); the shipped,
signed policy decides with the covering consents from the ledger: the consented service gets
raw hourly data, an unconsented purpose is denied, the grid operator's request for a household
is denied while its feeder aggregate is allowed; the customer withdraws and the very next
decision is a denial. The privacy officer previews a change against the decisions just made
(``policy diff``) and tries to activate a bundle that calls ``http.send``: refused, the running
revision stays. Every decision is kept in the decision log.
"""

from __future__ import annotations

import json
import shutil
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlmodel import Session

from broker.policy.bundle import load_bundle, shipped_bundle_dir
from broker.policy.decision import DecisionLog, DecisionPoint, Facts, ReleaseRequest
from broker.policy.diff import diff
from broker.policy.facts import covering_consents
from broker.policy.service import activate_shipped_if_none, open_decision_point
from broker.policy.store import PolicyRejected, PolicyStore
from broker.recipients.models import Kind
from broker.recipients.service import Registration
from broker.runtime.core import Runtime, consent_receipt_public_key_path
from broker.runtime.wiring import open_consents, open_recipients
from consent_ledger import ConsentRequest, load_public_key, notice_hash, verify_receipt

APP = "energy-app"
EMS = "ems-grid"
NOTICE = b"energy-app may read your hourly consumption to give you energy advice, for 90 days."


def _describe(decision: Any) -> str:
    if decision.allow:
        return f"allow: tier {decision.tier}, {decision.granularity} ({decision.reasons[0].code})"
    return "deny: " + ", ".join(r.code for r in decision.reasons)


def _register_app(rt: Runtime, session: Session, actor: str) -> None:
    """The app registers before a customer can consent to it (a consent names a registered
    recipient); the service story later adds its key and redirect."""
    recipients = open_recipients(rt)
    if recipients.find(session, APP) is None:
        registration = Registration(APP, "Energy App", Kind.third_party, ("personalised_service",))
        recipients.register(session, registration, actor)


def consent_and_policy(rt: Runtime, customer: str, out: Path, actor: str) -> dict[str, Any]:
    revision = activate_shipped_if_none(rt.settings, rt.db.transaction, rt.audit, rt.clock, actor)
    point = open_decision_point(rt.settings, rt.audit, rt.clock, rt.hasher)
    consents = open_consents(rt)
    now = rt.clock.now()
    request = ConsentRequest(
        customer=customer,
        recipient=APP,
        purposes=("personalised_service",),
        categories=("consumption",),
        granularity="hourly",
        expires_at=now + timedelta(days=90),
        notice_hash=notice_hash(NOTICE),
        collection_method="demo",
        controller="utility.example",
        history_days=30,
        identified=True,
        explicit=True,
    )
    with rt.db.transaction() as session:
        _register_app(rt, session, actor)
        given = consents.give(session, request, actor)
    public_key = load_public_key(consent_receipt_public_key_path(rt.settings).read_bytes())
    claims = verify_receipt(given.receipt or "", public_key)
    week = (now - timedelta(days=7), now)

    def decide(
        recipient: str, kind: str, purpose: str, granularity: str, subject: str | None
    ) -> str:
        req = ReleaseRequest(
            recipient, kind, purpose, ("consumption",), granularity, *week, subject
        )
        with rt.db.transaction() as session:
            state = consents.refresh(session)
            decision = point.decide(
                Facts(req, covering_consents(state, req, rt.clock.now()), rt.clock.now())
            )
            point.flush(session)
        return _describe(decision)

    decisions = {
        "energy-app, personalised service, hourly (consented)": decide(
            APP, "third_party", "personalised_service", "hourly", customer
        ),
        "energy-app, marketing (not consented)": decide(
            APP, "third_party", "marketing", "monthly", customer
        ),
        "EMS asks for the household (R4.4)": decide(
            EMS, "ems", "grid_operations", "15min", customer
        ),
        "EMS asks for the feeder aggregate": decide(EMS, "ems", "grid_operations", "15min", None),
    }
    with rt.db.transaction() as session:
        consents.withdraw(session, given.event.consent_id, actor)
    decisions["energy-app right after the withdrawal"] = decide(
        APP, "third_party", "personalised_service", "hourly", customer
    )
    return {
        "policy_revision": revision
        or PolicyStore(rt.settings, rt.audit, rt.clock).active_revision(),
        "consent": {
            "id": given.event.consent_id,
            "receipt_verified": claims["consent_id"] == given.event.consent_id,
        },
        "decisions": decisions,
        "officer": _officer(rt, point, out, actor),
    }


def _officer(rt: Runtime, point: DecisionPoint, out: Path, actor: str) -> dict[str, Any]:
    """Preview a change against the decisions made, then try to activate a bad bundle."""
    candidate = out / "candidate-policy"
    if candidate.exists():
        shutil.rmtree(candidate)
    shutil.copytree(
        shipped_bundle_dir(), candidate, ignore=shutil.ignore_patterns("*.md", "*.yaml")
    )
    catalogue_path = candidate / "broker/catalogue/data.json"
    catalogue = json.loads(catalogue_path.read_text())
    catalogue["purposes"]["personalised_service"]["default_tier"] = "pseudonymised"
    catalogue_path.write_text(json.dumps(catalogue, indent=2) + "\n")
    with rt.db.transaction() as session:
        rows = DecisionLog.read(session)
    report = diff(rows, load_bundle(candidate))
    changes = {kind: n for kind, n in report.as_json()["by_kind"].items() if n}
    policy = candidate / "broker/release/policy.rego"
    policy.write_text(
        policy.read_text()
        + '\nphone_home := http.send({"method": "get", "url": "https://example.org"})\n'
    )
    store = PolicyStore(rt.settings, rt.audit, rt.clock)
    try:
        with rt.db.transaction() as session:
            store.activate(candidate, session, actor)
        verdict = "ACTIVATED (should not happen)"
    except PolicyRejected as exc:
        verdict = "refused: " + exc.message.split(": ", 1)[-1][:120]
    return {
        "preview": f"{report.changed} of {report.replayed} decisions would change {changes}",
        "bad_bundle": verdict,
        "active_revision": store.active_revision(),
        "decisions_logged": len(rows),
        "engine": point.engine.name,
    }
