"""A customer's erasure (X.1332 R3.4; GDPR Art. 17): withdraw, notify, crypto-shred.

In one transaction: every consent of the customer still in force is withdrawn (feeds stop on
their next page); every recipient that received releases under any of the customer's consents
gets one signed deletion request with the reason ``erasure`` (queued to its webhook when it has
one); then the customer's data keys are destroyed, so the readings sealed under them, and any
push body still waiting in the outbox, can never be opened again. One ``customer.erased``
audit entry sums it up. An erasure is final; a second one finds nothing left to do.
"""

from __future__ import annotations

from typing import Any

from broker.audit.events import AuditEvent, AuditSink
from broker.consent.service import ConsentService
from broker.delivery.deletion import ERASING, Deletions, releases_under
from broker.keys.service import DataKeys
from broker.kit.ids import SubjectHasher
from broker.storage.db import Database
from consent_ledger import Status, Withdraw


class Erasure:
    def __init__(
        self,
        db: Database,
        consents: ConsentService,
        deletions: Deletions,
        data_keys: DataKeys,
        audit: AuditSink,
        hasher: SubjectHasher,
    ) -> None:
        self.db = db
        self.consents = consents
        self.deletions = deletions
        self.data_keys = data_keys
        self.audit = audit
        self.hasher = hasher

    def erase(self, customer: str, actor: str, reason: str) -> dict[str, Any]:
        consents, deletions = self.consents, self.deletions
        with self.db.transaction() as session:
            records = consents.consents(session, customer, None, everything=True)
            active = [r.terms.consent_id for r in records if r.status == Status.active]
            session.info[ERASING] = True  # the erasure writes the requests, not each withdrawal
            try:
                consents.append_many(session, [Withdraw(c) for c in active], actor)
            finally:
                session.info.pop(ERASING, None)
            received = releases_under(session, [r.terms.consent_id for r in records])
            requests = [
                deletions.request(session, recipient, customer, ids, "erasure", None, actor)
                for recipient, ids in sorted(received.items())
            ]
            destroyed = self.data_keys.destroy(session, customer, actor, reason)
            summary = {
                "consents_withdrawn": len(active),
                "recipients_notified": sorted(received),
                "deletion_requests": requests,
                "data_keys_destroyed": destroyed,
            }
            event = AuditEvent(
                "customer.erased", actor, self.hasher(customer), summary | {"reason": reason}
            )
            self.audit.record(session, [event])
        return summary
