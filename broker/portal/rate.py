"""The portal's request rate (T7): token buckets, one per client address for sign-ins and one
per signed-in customer for consent decisions, withdrawals and erasure
(``BROKER_PORTAL_RATE_PER_S``, ``_BURST``). Over it, ``Throttled``: 429 with Retry-After and a
page that says when to try again. Wrong passwords are slowed apart from this, per account and
per address (``broker.portal.throttle``).
"""

from __future__ import annotations

from fastapi import Request

from broker.api.limits import ClientRate
from broker.errors import Throttled
from broker.runtime.core import Runtime


class PortalRate:
    """Token buckets per client address (sign-in) and per customer (decisions, withdrawals)."""

    def __init__(self, rt: Runtime) -> None:
        self._rate = ClientRate(rt.settings.portal_rate_per_s, rt.settings.portal_burst)

    def sign_in(self, request: Request) -> None:
        address = request.client.host if request.client else "unknown"
        self._spend(f"address:{address}", "Too many sign-in attempts from your address")

    def customer(self, customer: str) -> None:
        self._spend(f"customer:{customer}", "Too many requests from your account")

    def _spend(self, key: str, says: str) -> None:
        wait = self._rate.wait(key)
        if wait:
            raise Throttled(says, wait)
