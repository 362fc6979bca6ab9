"""Running the API under uvicorn with the TLS context of ``broker.api.tls``.

Uvicorn does not put the client certificate into the ASGI scope, so ``PeerCertH11Protocol``
does it, in this one place: on each connection it reads the verified peer certificate from the
TLS object and sets ``scope["extensions"]["tls"]`` (the ASGI TLS extension) on every request.
It also bounds how long a client may take to send a request's headers (h11 has no such bound):
from the handshake, or from the first byte of a request on a kept-alive connection, the headers
must be complete within ``BROKER_HTTP_HEADER_TIMEOUT_S``, or the connection is closed
(slowloris). Servers send no ``Server`` banner.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import h11
import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.server import ServerState

from broker.api.app import create_app
from broker.api.hardening import HttpTimeouts, timeouts_of
from broker.api.tls import RevocationCheck, server_context
from broker.oauth.settings import OAuthSettings
from broker.runtime.core import Runtime
from broker.runtime.wiring import open_ca, recorded_fingerprints, server_identity
from connectors.mdms.limits import Limits

logger = logging.getLogger(__name__)


class HardenedConfig(uvicorn.Config):
    """uvicorn's configuration and the header timeout ``PeerCertH11Protocol`` enforces."""

    header_timeout_s: float = HttpTimeouts.header_s


class PeerCertH11Protocol(H11Protocol):
    def __init__(
        self,
        config: uvicorn.Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._header_timeout_s = getattr(config, "header_timeout_s", HttpTimeouts.header_s)
        self._header_timer: asyncio.TimerHandle | None = None

    def _await_headers(self) -> None:
        """Start the header clock unless it runs already (more bytes do not extend it)."""
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self._header_timeout_s, self._too_slow)

    def _headers_arrived(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _too_slow(self) -> None:
        self._header_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            logger.info("closing a connection whose request headers did not arrive in time")
            self.transport.close()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self._await_headers()  # a request has begun, its headers are not complete
        else:
            self._headers_arrived()

    def connection_lost(self, exc: Exception | None) -> None:
        self._headers_arrived()
        super().connection_lost(exc)

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._await_headers()
        ssl_object: ssl.SSLObject | None = transport.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object else None
        if der is None:
            return
        tls = {"client_cert_chain": [ssl.DER_cert_to_PEM_cert(der)], "tls_version": 0x0304}
        inner = self.app

        async def with_tls(scope: Any, receive: Any, send: Any) -> None:
            scope.setdefault("extensions", {})["tls"] = tls
            await inner(scope, receive, send)

        self.app = with_tls


def make_server(app: FastAPI, ctx: ssl.SSLContext, host: str, port: int) -> uvicorn.Server:
    """A uvicorn server of ``app`` over ``ctx``, with the timeouts recorded on the app
    (``broker.api.hardening``) and no ``Server`` banner."""
    timeouts = timeouts_of(app)
    config = HardenedConfig(
        app,
        host=host,
        port=port,
        http=PeerCertH11Protocol,
        lifespan="off",
        log_level="warning",
        timeout_keep_alive=timeouts.keepalive_s,
        server_header=False,
        proxy_headers=False,  # a client's address is the connection's, never X-Forwarded-For
    )
    config.header_timeout_s = timeouts.header_s
    config.load()
    config.ssl = ctx
    return uvicorn.Server(config)


class CrlKeeper:
    """Keeps a running server's CRL current from a background thread: polls ``crl.pem`` for
    revocations made by other processes (``broker ca revoke``) and re-signs the CRL well before
    its nextUpdate, so a long-running server never meets an expired CRL at the handshake."""

    def __init__(
        self,
        revocations: RevocationCheck,
        resign: Callable[[], None],
        poll_s: float = 2.0,
        resign_s: float = 12 * 3600,
    ) -> None:
        self._revocations, self._resign = revocations, resign
        self._poll_s, self._resign_s = poll_s, resign_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="crl-keeper", daemon=True)

    def _run(self) -> None:
        last = time.monotonic()
        while not self._stop.wait(self._poll_s):
            try:
                if time.monotonic() - last >= self._resign_s:
                    self._resign()
                    last = time.monotonic()
                self._revocations.refresh()
            except Exception:  # keep serving; the per-request check still runs
                logger.exception("could not refresh the CRL")

    def __enter__(self) -> CrlKeeper:
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


@dataclass
class Served:
    app: FastAPI
    ctx: ssl.SSLContext
    keeper: CrlKeeper


_START_DEADLINE_S = 120.0  # a bound on a hang: a loaded machine may take tens of seconds


def start_in_thread(server: uvicorn.Server) -> threading.Thread:
    """Run ``server`` in a daemon thread; return once it listens, or fail when its thread ends
    first (or it hangs for ``_START_DEADLINE_S``)."""
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + _START_DEADLINE_S
    while not server.started and thread.is_alive() and time.monotonic() < deadline:
        threading.Event().wait(0.01)
    if not server.started:
        raise RuntimeError("the HTTPS server did not start")
    return thread


@contextmanager
def serving(
    app: FastAPI, ctx: ssl.SSLContext, host: str = "127.0.0.1", port: int = 0
) -> Iterator[int]:
    """Serve ``app`` over ``ctx`` in a background thread (on a free port unless ``port`` is
    given); yields the port."""
    server = make_server(app, ctx, host, port)
    thread = start_in_thread(server)
    try:
        yield server.servers[0].sockets[0].getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@contextmanager
def running(served: Served, host: str = "127.0.0.1") -> Iterator[int]:
    """Serve the broker in a background thread on a free port (tests, the demo); yields the
    port."""
    with served.keeper, serving(served.app, served.ctx, host) as port:
        yield port


def build(
    rt: Runtime,
    actor: str,
    poll_s: float = 2.0,
    limits: Limits | None = None,
    oauth: OAuthSettings | None = None,
) -> Served:
    """The app, its TLS context and CRL keeper: fresh CRL, server certificate on first use."""
    ca = open_ca(rt)

    def resign() -> None:
        with rt.db.transaction() as session:
            ca.refresh_crl(session)

    resign()
    cert, key = server_identity(rt, ca, actor)
    ctx = server_context(ca.cert_path, ca.crl_path, cert, key)
    revocations = RevocationCheck(ca.crl_path, ctx, recorded_fingerprints(rt))
    app = create_app(revocations, rt, limits, oauth)
    return Served(app, ctx, CrlKeeper(revocations, resign, poll_s))
