"""Building the consent service from a runtime, with the receipt key it signs with.

Data directories made before the consent ledger existed have no receipt key; the first use
creates it (0600, as ``broker init`` does now) instead of failing, and a second process that
races to do the same reads the key the first one wrote.
"""

from __future__ import annotations

from contextlib import suppress

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from broker.consent.service import ConsentService
from broker.errors import KeyError_
from broker.keys.files import read_secret_file, require_dir
from broker.policy.service import active_vocabulary
from broker.runtime import (
    Runtime,
    consent_receipt_key_path,
    consent_receipt_public_key_path,
    create_consent_receipt_key,
)
from broker.settings import Settings
from consent_ledger import ReceiptSigner
from consent_ledger.receipts import public_pem


def open_consents(rt: Runtime) -> ConsentService:
    return ConsentService(
        rt.audit,
        rt.clock,
        rt.hasher,
        load_receipt_signer(rt.settings),
        rt.settings.consent_max_days,
        active_vocabulary(rt.settings, rt.audit, rt.clock),
    )


def load_receipt_signer(settings: Settings) -> ReceiptSigner:
    path = consent_receipt_key_path(settings)
    if not path.exists():
        require_dir(settings.keys_dir)
        with suppress(KeyError_):  # another process created it first: use that one
            create_consent_receipt_key(settings)
    try:
        key = serialization.load_pem_private_key(read_secret_file(settings, path), password=None)
    except ValueError as exc:
        raise KeyError_(f"consent receipt key {path} is damaged: {exc}") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise KeyError_(f"consent receipt key {path} is not an Ed25519 key")
    public = consent_receipt_public_key_path(settings)
    if not public.exists():  # lost, or the creator stopped between the two files
        public.write_bytes(public_pem(key.public_key()))
    return ReceiptSigner(key)
