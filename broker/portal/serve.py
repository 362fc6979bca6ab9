"""Serving the portal: its own TLS 1.3 listener that authenticates the server only (customers
have accounts, not client certificates), with the broker's server certificate."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from contextlib import contextmanager

from broker.api.server import serving
from broker.portal.web import portal_app
from broker.runtime.core import Runtime
from broker.runtime.wiring import open_ca, server_identity


def portal_context(rt: Runtime, actor: str) -> ssl.SSLContext:
    cert, key = server_identity(rt, open_ca(rt), actor)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_3
    ctx.verify_mode = ssl.CERT_NONE
    ctx.load_cert_chain(cert, key)
    return ctx


@contextmanager
def running_portal(
    rt: Runtime, actor: str, host: str = "127.0.0.1", port: int = 0
) -> Iterator[int]:
    """Serve the portal in a background thread; yields the port (tests, the demo)."""
    with serving(portal_app(rt), portal_context(rt, actor), host, port) as bound:
        yield bound
