"""The consent ledger in the broker: events stored in ``consent_event``, entered in the audit
log, receipts signed with the broker's key (R3.4, R3.5). ``consent_ledger`` holds the rules;
this package stores and serves them. ``broker.runtime.wiring.open_consents`` builds the service
from a runtime.
"""
