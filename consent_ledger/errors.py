"""The ledger's error family: ``ValueError`` subclasses the broker maps onto its own errors.

The ledger is a pure library, so it cannot raise ``broker.errors.BrokerError``; each class here
says which kind of refusal it is (bad input, unknown consent, closed consent, broken chain,
bad receipt) so the broker can answer with the right status without parsing messages.
"""

from __future__ import annotations


class ConsentError(ValueError):
    """Base class: a consent operation was refused; nothing was appended."""


class InvalidConsent(ConsentError):
    """The terms or the request are malformed, unknown to the vocabulary or out of bounds."""


class UnknownConsent(ConsentError):
    """No consent has this id."""


class ConsentClosed(ConsentError):
    """The consent was withdrawn or has expired: it cannot be modified, withdrawn or expired."""


class ChainError(ConsentError):
    """An event does not link to the ledger's head (wrong sequence number or previous hash), or
    a stored event cannot be read back."""


class ReceiptError(ConsentError):
    """A receipt does not verify: wrong key, changed payload, or an algorithm other than EdDSA."""
