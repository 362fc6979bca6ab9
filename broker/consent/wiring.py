"""Building the consent service from a runtime, with the receipt key it signs with.

Data directories made before the consent ledger existed have no receipt key; the first use
creates it (0600, as ``broker init`` does now) instead of failing, and a second process that
races to do the same reads the key the first one wrote.
"""

from __future__ import annotations

from sqlmodel import Session

from broker.consent.service import AppendHook, ConsentService
from broker.keys.files import load_ed25519_key
from broker.policy.service import active_vocabulary
from broker.runtime import (
    Runtime,
    consent_receipt_key_path,
    consent_receipt_public_key_path,
)
from broker.settings import Settings
from consent_ledger import ReceiptSigner


def open_consents(rt: Runtime) -> ConsentService:
    """The consent service; its withdrawals and expiries propagate to recipients (deletion
    requests, ``broker.delivery.deletion``) in the transaction that writes them."""
    service = ConsentService(
        rt.audit,
        rt.clock,
        rt.hasher,
        load_receipt_signer(rt.settings),
        rt.settings.consent_max_days,
        active_vocabulary(rt.settings, rt.audit, rt.clock),
    )
    service.after_append.append(_propagate(rt))
    return service


def _propagate(rt: Runtime) -> AppendHook:
    def hook(session: Session, events: list[tuple[str, str, str, str]], actor: str) -> None:
        if any(kind in ("withdrawn", "expired") for kind, *_ in events):
            # imported here: broker.delivery.service itself opens consents
            from broker.delivery.service import open_deletions

            open_deletions(rt).on_consent_events(session, events, actor)

    return hook


def load_receipt_signer(settings: Settings) -> ReceiptSigner:
    key = load_ed25519_key(
        settings,
        consent_receipt_key_path(settings),
        consent_receipt_public_key_path(settings),
        "consent receipt key",
    )
    return ReceiptSigner(key)
