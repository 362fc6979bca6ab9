"""Running the API under uvicorn with the TLS context of ``broker.api.tls``.

Uvicorn does not put the client certificate into the ASGI scope, so ``PeerCertH11Protocol``
does it, in this one place: on each connection it reads the verified peer certificate from the
TLS object and sets ``scope["extensions"]["tls"]`` (the ASGI TLS extension) on every request.
"""

from __future__ import annotations

import asyncio
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import uvicorn
from fastapi import FastAPI
from uvicorn.protocols.http.h11_impl import H11Protocol

from broker.api.app import create_app
from broker.api.tls import server_context
from broker.ca.service import open_ca, server_identity
from broker.runtime import Runtime


class PeerCertH11Protocol(H11Protocol):
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
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
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        http=PeerCertH11Protocol,
        lifespan="off",
        log_level="warning",
        timeout_keep_alive=5,
    )
    config.load()
    config.ssl = ctx
    return uvicorn.Server(config)


@contextmanager
def running(app: FastAPI, ctx: ssl.SSLContext, host: str = "127.0.0.1") -> Iterator[int]:
    """Serve in a background thread on a free port (tests, the demo); yields the port."""
    server = make_server(app, ctx, host, 0)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(500):
        if server.started or not thread.is_alive():
            break
        threading.Event().wait(0.01)
    if not server.started:
        raise RuntimeError("the HTTPS server did not start")
    try:
        yield server.servers[0].sockets[0].getsockname()[1]
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def build(rt: Runtime, actor: str) -> tuple[FastAPI, ssl.SSLContext]:
    """The app and its TLS context: fresh CRL, server certificate issued on first use."""
    ca = open_ca(rt)
    with rt.db.transaction() as session:
        ca.refresh_crl(session)
    cert, key = server_identity(rt, ca, actor)
    return create_app(ca.crl_path), server_context(ca.cert_path, ca.crl_path, cert, key)
