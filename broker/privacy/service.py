"""Pseudonym keys per recipient domain, and the persistent privacy budget ledger.

**Pseudonym keys.** One 256-bit master key in ``keys/pseudonym.key`` (0600), never in the
database. A recipient domain's key is HKDF-SHA256(master, info = ``pseudonym|<domain>|v<n>``):
stable for the domain, unrelated across domains, and re-keyed by moving the domain to the next
version (``rekey``, audited): the new identifiers cannot be computed from the old ones, but
the time series behind them remains a fingerprint that links about half of the households by
their habits (``broker privacy report`` measures it).
The database holds only each domain's version.

**Budget ledger.** Each new draw of a cell's noise appends one ``privacy_spend`` row (the cell:
a substation-day's household-days; the recipient whose request drew it, release, time, ε, δ,
mechanism, privacy unit) and an audit entry; ``of_cells`` reads a cell's rows, whoever asked,
from which the accountant for the next draw is rebuilt, and ``window`` what one recipient drew.
Rows are never changed, so the budget spent is provable.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from sqlalchemy import insert, select, update
from sqlmodel import Session

from broker.audit.events import AuditEvent, AuditSink
from broker.errors import KeyError_
from broker.keys.files import ensure_b64_key
from broker.kit.clock import Clock, from_us, to_us
from broker.kit.ids import new_id
from broker.privacy.models import PrivacySpend, PseudonymDomain
from broker.settings import Settings

SPENDS = PrivacySpend.metadata.tables["privacy_spend"]
DOMAINS = PseudonymDomain.metadata.tables["pseudonym_domain"]


def pseudonym_key_path(settings: Settings) -> Path:
    return settings.keys_dir / "pseudonym.key"


def load_pseudonym_master(settings: Settings) -> bytes:
    """The master key; created (0600) on first use in a data directory that lacks it."""
    return ensure_b64_key(settings, pseudonym_key_path(settings))


def derive_domain_key(master: bytes, domain: str, version: int) -> bytes:
    info = f"pseudonym|{domain}|v{version}".encode()
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(master)


@dataclass(frozen=True)
class DomainKey:
    domain: str
    version: int
    key: bytes


class PseudonymKeys:
    def __init__(self, master: bytes, audit: AuditSink, clock: Clock) -> None:
        if len(master) < 32:
            raise KeyError_("the pseudonym master key must be at least 256 bits")
        self._master = master
        self._audit = audit
        self._clock = clock

    def key_for(self, session: Session, domain: str) -> DomainKey:
        """The domain's current key (version 1 on first use)."""
        version = session.execute(
            select(DOMAINS.c.version).where(DOMAINS.c.domain == domain)
        ).scalar_one_or_none()
        if version is None:
            version = 1
            session.execute(
                insert(DOMAINS).values(
                    domain=domain, version=1, created_us=to_us(self._clock.now())
                )
            )
        return DomainKey(domain, version, derive_domain_key(self._master, domain, version))

    def rekey(self, session: Session, domain: str, actor: str) -> DomainKey:
        """Move the domain to a new key: pseudonyms issued from now on are not derived from the
        earlier ones (the readings still link households by habit: see the module text)."""
        current = self.key_for(session, domain)
        version = current.version + 1
        session.execute(
            update(DOMAINS)
            .where(DOMAINS.c.domain == domain)
            .values(version=version, rekeyed_us=to_us(self._clock.now()))
        )
        self._audit.record(
            session,
            [
                AuditEvent(
                    "privacy.pseudonym_rekeyed", actor, None, {"domain": domain, "version": version}
                )
            ],
        )
        return DomainKey(domain, version, derive_domain_key(self._master, domain, version))


class BudgetLedger:
    def __init__(self, audit: AuditSink, clock: Clock) -> None:
        self._audit = audit
        self._clock = clock

    def window(self, session: Session, recipient: str, days: int = 30) -> list[dict[str, Any]]:
        """The recipient's spends in the rolling window ending now (oldest first)."""
        since = to_us(self._clock.now() - timedelta(days=days))
        rows = session.execute(
            select(SPENDS)
            .where(SPENDS.c.recipient == recipient, SPENDS.c.at_us > since)
            .order_by(SPENDS.c.at_us)
        )
        return [{**dict(row._mapping), "at": from_us(row.at_us)} for row in rows]

    def of_cells(self, session: Session, cells: list[str]) -> dict[str, list[dict[str, Any]]]:
        """Every spend charged to each of ``cells``, whoever asked (oldest first)."""
        found: dict[str, list[dict[str, Any]]] = {cell: [] for cell in cells}
        rows = session.execute(
            select(SPENDS).where(SPENDS.c.cell.in_(cells)).order_by(SPENDS.c.at_us)
        )
        for row in rows:
            found[row.cell].append({**dict(row._mapping), "at": from_us(row.at_us)})
        return found

    def record(
        self,
        session: Session,
        recipient: str,
        release_id: str,
        epsilon: float,
        delta: float,
        mechanism: str,
        privacy_unit: str,
        actor: str,
        at: datetime | None = None,
        cell: str | None = None,
    ) -> str:
        """Append one spend and its audit entry, in the caller's transaction. ``cell``: the
        household-days charged (``<substation>|<day>``)."""
        spend_id = new_id("sp")
        when = at or self._clock.now()
        session.execute(
            insert(SPENDS).values(
                spend_id=spend_id,
                recipient=recipient,
                release_id=release_id,
                at_us=to_us(when),
                epsilon=epsilon,
                delta=delta,
                mechanism=mechanism,
                privacy_unit=privacy_unit,
                cell=cell,
            )
        )
        self._audit.record(
            session,
            [
                AuditEvent(
                    "privacy.budget_spent",
                    actor,
                    None,
                    {
                        "recipient": recipient,
                        "release_id": release_id,
                        "epsilon": str(epsilon),
                        "delta": str(delta),
                        "mechanism": mechanism,
                        "cell": cell,
                    },
                )
            ],
        )
        return spend_id
