"""A small MDMS for the concentrator's tests over real mutual TLS on loopback.

It answers ``POST /mdms/v1/frames`` as the MDMS does (``connectors/dlms/batch.py``): it checks
the client certificate (role ``concentrator``, not revoked), decodes the batch with
``decode_batch``, stores each distinct frame once (by content) and answers every frame
``accepted`` or ``duplicate``. Knobs let a test make it busy (503 with ``Retry-After``) or lose
the answer after storing (500), so that batches are sent more than once.
"""

from __future__ import annotations

import ssl
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse

from broker.api.server import make_server, start_in_thread
from broker.api.tls import RevocationCheck
from broker.ca.peer import Peer, peer_from_pem
from connectors.dlms.batch import MEDIA_TYPE, BatchError, check_batch_id, decode_batch

MAX_BODY_BYTES = 4 * 1024 * 1024


@dataclass
class MdmsStore:
    """What the test MDMS received and stored."""

    frames: list[bytes] = field(default_factory=list)
    receipts: Counter[str] = field(default_factory=Counter)
    peers: set[str] = field(default_factory=set)
    busy: int = 0  # answer this many requests 503, Retry-After: 0
    lose_answers: int = 0  # store this many batches, then answer 500 as if the answer was lost
    _known: set[bytes] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self, batch_id: str, frames: list[bytes]) -> dict[str, Any]:
        with self._lock:
            self.receipts[batch_id] += 1
            answers = [self._answer(i, frame) for i, frame in enumerate(frames)]
        counts = Counter(answer["status"] for answer in answers)
        return {
            "batch_id": batch_id,
            "received": len(frames),
            "accepted": counts["accepted"],
            "duplicate": counts["duplicate"],
            "rejected": 0,
            "reasons": {},
            "frames": answers,
        }

    def _answer(self, i: int, frame: bytes) -> dict[str, Any]:
        status = "duplicate" if frame in self._known else "accepted"
        if status == "accepted":
            self._known.add(frame)
            self.frames.append(frame)
        return {"i": i, "status": status, "reason": None, "detail": None, "readings": 1}

    def consume(self, knob: str) -> bool:
        """True (and one less) while the knob ``busy`` or ``lose_answers`` is above zero."""
        with self._lock:
            left: int = getattr(self, knob)
            if left > 0:
                setattr(self, knob, left - 1)
            return left > 0


def create_mdms_app(store: MdmsStore, revocations: RevocationCheck) -> FastAPI:
    app = FastAPI()

    @app.post("/mdms/v1/frames")
    async def frames(request: Request) -> Response:
        peer = _peer(request)
        if peer is None:
            return _error(401, "a client certificate is required")
        if peer.role != "concentrator" or revocations.is_revoked(peer.serial):
            return _error(403, f"certificate {peer.serial} of {peer.name} is refused or revoked")
        if request.headers.get("content-type") != MEDIA_TYPE:
            return _error(415, f"send {MEDIA_TYPE}")
        body = await request.body()
        if len(body) > MAX_BODY_BYTES:
            return _error(413, f"a batch has at most {MAX_BODY_BYTES} bytes")
        try:
            batch_id = check_batch_id(request.headers.get("x-batch-id", ""))
            decoded = decode_batch(body)
        except BatchError as exc:
            return _error(400, str(exc))
        if store.consume("busy"):
            return _error(503, "busy", {"Retry-After": "0"})
        store.peers.add(peer.name)
        report = store.take(batch_id, decoded)
        if store.consume("lose_answers"):
            return _error(500, "stored, then failed before answering")
        return JSONResponse(report)

    return app


def _peer(request: Request) -> Peer | None:
    chain = request.scope.get("extensions", {}).get("tls", {}).get("client_cert_chain")
    return peer_from_pem(chain[0]) if chain else None


def _error(status: int, detail: str, headers: dict[str, str] | None = None) -> Response:
    return JSONResponse({"error": "MdmsError", "detail": detail}, status, headers)


@contextmanager
def serving(app: FastAPI, ctx: ssl.SSLContext, port: int = 0) -> Iterator[int]:
    """Serve ``app`` over TLS on 127.0.0.1 in a background thread; yields the port."""
    server = make_server(app, ctx, "127.0.0.1", port)
    thread = start_in_thread(server)
    try:
        yield server.servers[0].sockets[0].getsockname()[1]
    finally:
        # stop as a crash would: connections cut without a TLS goodbye (a graceful TLS close
        # waits for the idle client's close_notify, which a sync client never sends)
        for connection in list(server.server_state.connections):
            connection.loop.call_soon_threadsafe(connection.transport.abort)
        server.should_exit = True
        thread.join(timeout=10)
        assert not thread.is_alive(), "the test MDMS did not stop"
