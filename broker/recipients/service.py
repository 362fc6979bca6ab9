"""Onboarding and cutting off recipients (C3.2, R3.3): register, certify, suspend, revoke.

An operator registers a recipient for purposes of the purpose catalogue (the active policy
bundle's, ``open_recipients``; the shipped bundle's when none is given); the recipient submits a
CSR and gets a client certificate of the CA whose role follows its kind, valid for at most
``CertificateRules.max_days``. A recipient holds at most ``max_live`` live certificates: issuing
one more revokes the oldest (reason ``superseded``, into the CRL), so a renewal retires the
certificate it replaces once the overlap is used up. Suspension is a status the token endpoint
and every token check read, so it bites on the next request; revocation also revokes the
recipient's certificates in the CA, so the CRL refuses them at the handshake. Every change is
audited. Services add and flush; the caller's transaction commits.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Any

from joserfc.errors import JoseError
from joserfc.jwk import ECKey, OKPKey, RSAKey, import_key
from sqlmodel import Session, col, select

from broker.audit.events import AuditEvent, AuditSink
from broker.ca.authority import CertificateAuthority, Issued
from broker.ca.models import IssuedCertificate
from broker.errors import NotFound
from broker.kit.clock import Clock, to_us
from broker.kit.text import text_problem
from broker.policy.bundle import load_bundle, shipped_bundle_dir
from broker.policy.service import catalogue_vocabulary
from broker.recipients.egress import NO_PRIVATE, Egress
from broker.recipients.errors import EgressRefused, InvalidRecipient, RecipientExists
from broker.recipients.models import Kind, Recipient, RecipientKey, Status

CA_ROLE = {
    Kind.third_party: "third-party",
    Kind.researcher: "third-party",
    Kind.supplier: "third-party",
    Kind.ems: "ems",
}
"""The CA role a recipient's certificate carries, by kind."""
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
_PURPOSE = re.compile(r"^[a-z][a-z0-9_]{0,63}$")


@dataclass(frozen=True)
class CertificateRules:
    """How long a recipient's certificate may live and how many may be live at once (the
    production defaults of ``recipient_cert_max_days`` and ``recipient_cert_max_live``)."""

    max_days: int = 90
    max_live: int = 2


def shipped_purposes() -> frozenset[str]:
    """The purposes of the shipped bundle's catalogue."""
    return catalogue_vocabulary(load_bundle(shipped_bundle_dir())).purposes


@dataclass(frozen=True)
class Registration:
    recipient_id: str
    display_name: str
    kind: Kind
    purposes: Sequence[str] = ()
    webhook_url: str | None = None


def purposes_of(recipient: Recipient) -> list[str]:
    value: list[str] = json.loads(recipient.purposes)
    return value


def ca_role(recipient: Recipient) -> str:
    return CA_ROLE[Kind(recipient.kind)]


def keys_of(session: Session, recipient_id: str) -> list[RecipientKey]:
    """The public keys ``recipient_id`` registered (to sign assertions, receipts, acks)."""
    query = select(RecipientKey).where(RecipientKey.recipient_id == recipient_id)
    return list(session.exec(query.order_by(col(RecipientKey.kid))))


def check_webhook(url: str, egress: Egress = NO_PRIVATE) -> str:
    """An https:// URL whose host, read as the resolver reads it, reaches no address the push
    worker refuses (``broker.recipients.egress``: never link-local such as the cloud metadata
    service; loopback and private only with ``BROKER_WEBHOOK_ALLOW_PRIVATE`` on an allowed
    port). The worker checks again at every connection (DNS may change)."""
    try:
        return egress.check_url(url)
    except EgressRefused as exc:
        raise InvalidRecipient(exc.message) from None


def check_text(what: str, value: str, display: bool = False) -> str:
    """``value`` if it holds no control character (and, for a name customers read,
    ``display``, no invisible formatting such as a bidirectional override)."""
    problem = text_problem(value, display=display)
    if problem is not None:
        raise InvalidRecipient(f"the {what} {problem}")
    return value


def check_registration(
    reg: Registration, catalogue: Collection[str], egress: Egress = NO_PRIVATE
) -> None:
    check_text("recipient id", reg.recipient_id)
    check_text("display name", reg.display_name, display=True)
    for purpose in reg.purposes:
        check_text("purpose", purpose)
    if reg.webhook_url is not None:
        check_text("webhook URL", reg.webhook_url)
    if not _NAME.match(reg.recipient_id):
        raise InvalidRecipient(
            f"invalid recipient id {reg.recipient_id!r}: letters, digits, '.', '_', '-' only"
        )
    if not reg.display_name.strip() or len(reg.display_name) > 200:
        raise InvalidRecipient("the display name must be 1 to 200 characters")
    bad = [p for p in reg.purposes if not _PURPOSE.match(p)]
    if bad:
        raise InvalidRecipient(f"invalid purpose names: {', '.join(map(repr, bad))}")
    unknown = sorted(set(reg.purposes) - set(catalogue))
    if unknown:
        raise InvalidRecipient(
            f"purposes not in the purpose catalogue: {', '.join(map(repr, unknown))} "
            f"(it has {', '.join(sorted(catalogue))})"
        )
    if reg.webhook_url is not None:
        check_webhook(reg.webhook_url, egress)


def public_jwk(jwk: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The key id and public members of a JWK a recipient may sign assertions with."""
    if any(member in jwk for member in ("d", "p", "q", "k")):
        raise InvalidRecipient("register the public key only: the JWK holds private members")
    try:
        key = import_key(jwk)
    except (JoseError, ValueError, TypeError, KeyError) as exc:
        raise InvalidRecipient(f"not a usable JWK: {exc}") from None
    if not isinstance(key, ECKey | OKPKey | RSAKey):
        raise InvalidRecipient("only EC, OKP (Ed25519) and RSA public keys are accepted")
    if isinstance(key, RSAKey) and key.raw_value.key_size < 2048:
        raise InvalidRecipient("RSA keys must have at least 2048 bits")
    kid = str(jwk.get("kid") or key.thumbprint())
    return kid, {**key.as_dict(private=False), "kid": kid}


class Recipients:
    def __init__(
        self,
        audit: AuditSink,
        clock: Clock,
        catalogue: Callable[[], Collection[str]] = shipped_purposes,
        certificates: CertificateRules = CertificateRules(),
        egress: Egress = NO_PRIVATE,
    ) -> None:
        self._audit = audit
        self._clock = clock
        self._catalogue = catalogue
        """The purposes a recipient may be registered for, read at each registration."""
        self.certificates = certificates
        self.egress = egress
        """Where webhooks may point (``BROKER_WEBHOOK_ALLOW_PRIVATE``; default: public only)."""

    def _record(self, session: Session, kind: str, actor: str, details: dict[str, Any]) -> None:
        self._audit.record(session, [AuditEvent(f"recipient.{kind}", actor, None, details)])

    def register(self, session: Session, reg: Registration, actor: str) -> Recipient:
        check_registration(reg, self._catalogue(), self.egress)
        if session.get(Recipient, reg.recipient_id) is not None:
            raise RecipientExists(f"recipient {reg.recipient_id} is already registered")
        now = to_us(self._clock.now())
        row = Recipient(
            recipient_id=reg.recipient_id,
            display_name=reg.display_name,
            kind=reg.kind.value,
            purposes=json.dumps(sorted(set(reg.purposes))),
            webhook_url=reg.webhook_url,
            status=Status.active.value,
            created_us=now,
            updated_us=now,
        )
        session.add(row)
        session.flush()
        details = {"recipient": reg.recipient_id, "kind": reg.kind.value, "purposes": row.purposes}
        self._record(session, "registered", actor, details)
        return row

    def get(self, session: Session, recipient_id: str) -> Recipient:
        row = session.get(Recipient, recipient_id)
        if row is None:
            raise NotFound(f"no recipient {recipient_id!r}")
        return row

    def find(self, session: Session, recipient_id: str) -> Recipient | None:
        return session.get(Recipient, recipient_id)

    def all(self, session: Session) -> list[Recipient]:
        return list(session.exec(select(Recipient).order_by(col(Recipient.recipient_id))))

    def issue_certificate(
        self,
        session: Session,
        ca: CertificateAuthority,
        recipient_id: str,
        csr_pem: bytes,
        actor: str,
        days: int | None = None,
    ) -> Issued:
        """A client certificate for the recipient's CSR, role by kind (active recipients),
        valid ``days`` (default and ceiling: ``certificates.max_days``); beyond
        ``certificates.max_live`` live certificates, the oldest are revoked as superseded."""
        limit = self.certificates.max_days
        days = limit if days is None else days
        if not 1 <= days <= limit:
            raise InvalidRecipient(
                f"a recipient certificate is valid for 1 to {limit} days, not {days}"
            )
        row = self._active(session, recipient_id)
        issued = ca.issue(
            session,
            self._audit,
            role=ca_role(row),
            name=recipient_id,
            actor=actor,
            csr_pem=csr_pem,
            days=days,
        )
        details = {"recipient": recipient_id, "serial": issued.serial, "role": issued.role}
        self._record(session, "certificate_issued", actor, details)
        self._retire_superseded(session, ca, recipient_id, issued.serial, actor)
        return issued

    def _retire_superseded(
        self,
        session: Session,
        ca: CertificateAuthority,
        recipient_id: str,
        newest: str,
        actor: str,
    ) -> None:
        """Revoke the oldest live certificates beyond ``max_live`` (the newest one stays)."""
        now = to_us(self._clock.now())
        older = [
            cert
            for cert in _live_certificates(session, recipient_id)
            if cert.serial != newest and cert.not_after_us > now
        ]
        older.sort(key=lambda cert: cert.issued_us, reverse=True)
        for cert in older[self.certificates.max_live - 1 :]:
            ca.revoke(session, self._audit, actor=actor, serial=cert.serial, reason="superseded")

    def add_key(
        self, session: Session, recipient_id: str, jwk: dict[str, Any], actor: str
    ) -> RecipientKey:
        self._active(session, recipient_id)
        kid, public = public_jwk(jwk)
        if session.get(RecipientKey, (recipient_id, kid)) is not None:
            raise RecipientExists(f"{recipient_id} already has a key {kid!r}")
        row = RecipientKey(
            recipient_id=recipient_id,
            kid=kid,
            jwk=json.dumps(public, sort_keys=True),
            created_us=to_us(self._clock.now()),
        )
        session.add(row)
        session.flush()
        self._record(session, "key_added", actor, {"recipient": recipient_id, "kid": kid})
        return row

    def keys(self, session: Session, recipient_id: str) -> list[RecipientKey]:
        return keys_of(session, recipient_id)

    def set_webhook(
        self, session: Session, recipient_id: str, url: str | None, actor: str
    ) -> Recipient:
        """Register, change or (None) remove the recipient's webhook for push delivery."""
        row = self.get(session, recipient_id)
        if url is not None:
            check_text("webhook URL", url)
        row.webhook_url = None if url is None else check_webhook(url, self.egress)
        row.updated_us = to_us(self._clock.now())
        session.add(row)
        self._record(session, "webhook_changed", actor, {"recipient_id": recipient_id, "url": url})
        return row

    def suspend(self, session: Session, recipient_id: str, actor: str, reason: str) -> Recipient:
        """Suspended: no token is issued and no token of it is honoured, from now on; those
        issued before stay refused after a reinstatement (``suspended_us``)."""
        row = self._active(session, recipient_id)
        row.suspended_us = to_us(self._clock.now())
        return self._set_status(session, row, Status.suspended, actor, reason)

    def reinstate(self, session: Session, recipient_id: str, actor: str, reason: str) -> Recipient:
        row = self.get(session, recipient_id)
        if row.status != Status.suspended:
            raise InvalidRecipient(f"{recipient_id} is {row.status}, not suspended")
        return self._set_status(session, row, Status.active, actor, reason)

    def revoke(
        self,
        session: Session,
        ca: CertificateAuthority,
        recipient_id: str,
        actor: str,
        reason: str,
    ) -> Recipient:
        """Revoked for good, with every live certificate of it (the CRL cuts it off)."""
        row = self.get(session, recipient_id)
        if row.status == Status.revoked:
            raise InvalidRecipient(f"{recipient_id} is already revoked")
        if _live_certificates(session, recipient_id):
            ca.revoke(
                session, self._audit, actor=actor, name=recipient_id, reason="cessationOfOperation"
            )
        return self._set_status(session, row, Status.revoked, actor, reason)

    def _active(self, session: Session, recipient_id: str) -> Recipient:
        row = self.get(session, recipient_id)
        if row.status != Status.active:
            raise InvalidRecipient(f"recipient {recipient_id} is {row.status}")
        return row

    def _set_status(
        self, session: Session, row: Recipient, status: Status, actor: str, reason: str
    ) -> Recipient:
        before = row.status
        row.status, row.updated_us = status.value, to_us(self._clock.now())
        session.add(row)
        session.flush()
        details = {"recipient": row.recipient_id, "from": before, "reason": reason}
        self._record(
            session, status.value if status != Status.active else "reinstated", actor, details
        )
        return row


def _live_certificates(session: Session, name: str) -> list[IssuedCertificate]:
    query = select(IssuedCertificate).where(
        IssuedCertificate.name == name, col(IssuedCertificate.revoked_us).is_(None)
    )
    return list(session.exec(query))
