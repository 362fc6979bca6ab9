"""Consent events, receipts and the queries "which consents cover this release".

A pure library (no database, no web framework; import-linter keeps it so): ``Draft`` turns
requests into hash-chained events, ``LedgerState`` folds events into the current consents and
answers ``covering``, ``ReceiptSigner``/``verify_receipt`` sign and check the customer's
receipt. ``broker.consent`` stores the events and enters them in the audit log.
"""

from consent_ledger.errors import (
    ChainError,
    ConsentClosed,
    ConsentError,
    InvalidConsent,
    ReceiptError,
    UnknownConsent,
)
from consent_ledger.events import GENESIS, ConsentEvent, Kind, verify_chain
from consent_ledger.ledger import Draft, Expire, Give, Modify, Operation, Withdraw
from consent_ledger.receipts import ReceiptSigner, load_public_key, verify_receipt
from consent_ledger.state import ConsentRecord, LedgerState, Status
from consent_ledger.terms import ConsentChanges, ConsentRequest, ConsentTerms, notice_hash
from consent_ledger.vocabulary import (
    DEFAULT_VOCABULARY,
    GRANULARITY_S,
    Vocabulary,
    coarser_or_equal,
)

__all__ = [
    "DEFAULT_VOCABULARY",
    "GENESIS",
    "GRANULARITY_S",
    "ChainError",
    "ConsentChanges",
    "ConsentClosed",
    "ConsentError",
    "ConsentEvent",
    "ConsentRecord",
    "ConsentRequest",
    "ConsentTerms",
    "Draft",
    "Expire",
    "Give",
    "InvalidConsent",
    "Kind",
    "LedgerState",
    "Modify",
    "Operation",
    "ReceiptError",
    "ReceiptSigner",
    "Status",
    "UnknownConsent",
    "Vocabulary",
    "Withdraw",
    "coarser_or_equal",
    "load_public_key",
    "notice_hash",
    "verify_chain",
    "verify_receipt",
]
