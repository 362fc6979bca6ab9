"""The ledger's refusals as ``BrokerError``s: a status for the API, an exit code for the CLI.

``consent_ledger`` is pure and raises ``ValueError`` subclasses; ``refusals()`` maps each kind
onto the broker's family once, at the edge of the service, so callers see one error family.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from broker.errors import BrokerError, NotFound
from consent_ledger import (
    ChainError,
    ConsentClosed,
    ConsentError,
    InvalidConsent,
    ReceiptError,
    UnknownConsent,
)


class ConsentRefused(BrokerError):
    """The terms or the request are invalid; nothing was written."""


class ConsentNotFound(NotFound):
    """No consent has this id."""


class ConsentConflict(BrokerError):
    """The consent was withdrawn or has expired."""

    status_code = 409


class ConsentLedgerBroken(BrokerError):
    """A stored event does not link to the one before it, or cannot be read."""

    status_code = 500
    exit_code = 5


class ReceiptInvalid(BrokerError):
    """A receipt does not verify under the given key."""

    exit_code = 6


_MAPPED: dict[type[ConsentError], type[BrokerError]] = {
    InvalidConsent: ConsentRefused,
    UnknownConsent: ConsentNotFound,
    ConsentClosed: ConsentConflict,
    ChainError: ConsentLedgerBroken,
    ReceiptError: ReceiptInvalid,
}


@contextmanager
def refusals() -> Iterator[None]:
    """Re-raise the ledger's errors as the broker's."""
    try:
        yield
    except ConsentError as exc:
        mapped = next((b for a, b in _MAPPED.items() if isinstance(exc, a)), ConsentRefused)
        raise mapped(str(exc)) from exc
