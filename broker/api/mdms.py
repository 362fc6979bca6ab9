"""The MDMS's ingest endpoint for data concentrators (C1.5, C1.8, T2, T4).

``POST /mdms/v1/frames`` takes a batch of ciphered frames (``connectors.dlms.batch``) from a
caller whose certificate has the ``concentrator`` role, and answers every frame. Limits come
before any work: the body is read up to its bound (413 beyond), the caller's token bucket must
hold the batch's frames (429 + Retry-After), and the batch must find a place in the bounded,
fair queue (503 + Retry-After). Refusals are counted and summarised in the audit log at most
once a minute per concentrator, so a flood writes a few entries, not one per request.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Header, Request
from pydantic import BaseModel
from sqlmodel import col, func, select

from broker.api.peer import PeerDep
from broker.api.schemas import ErrorBody
from broker.audit.events import AuditEvent
from broker.ca.peer import Peer
from broker.errors import (
    BrokerError,
    Forbidden,
    PayloadTooLarge,
    Throttled,
    UnsupportedMediaType,
)
from broker.runtime.core import Runtime
from connectors.dlms.batch import (
    MEDIA_TYPE,
    BatchError,
    BatchTotals,
    check_batch_id,
    decode_batch,
)
from connectors.mdms.answers import BatchResult
from connectors.mdms.limits import Limits
from connectors.mdms.models import IngestTally

SUMMARY_EVERY_S = 60.0
logger = logging.getLogger(__name__)
INGEST_ERRORS = {
    400: "MalformedBatch: the body is not a well-formed batch, or X-Batch-Id is invalid",
    413: "PayloadTooLarge: the body is over the byte limit, or the batch has more frames than "
    "a concentrator's burst",
    415: f"UnsupportedMediaType: the body is not {MEDIA_TYPE}",
    429: "Throttled: the concentrator is over its rate of frames; retry after Retry-After",
    503: "Throttled: the ingest queue, or this concentrator's share of it, is full; retry "
    "after Retry-After",
}
_RETRY_AFTER = {"Retry-After": {"description": "Seconds to wait", "schema": {"type": "integer"}}}


class MalformedBatch(BrokerError):
    status_code = 400


class FrameAnswerBody(BaseModel):
    i: int
    status: str
    reason: str | None
    detail: str | None
    readings: int
    flags: list[str]


class BatchAnswer(BatchTotals):
    readings_stored: int
    estimates: int
    flagged: dict[str, int]
    frames: list[FrameAnswerBody]


class IngestMetrics(BaseModel):
    frames_by_outcome: dict[str, int]
    """Since the database was created, from the tallies: accepted, duplicate, or a reason."""
    throttled_frames: dict[str, int]
    """Frames refused with 429/503 since this server started, per concentrator."""
    queued_batches: dict[str, int]


class ThrottleLog:
    """Counts refused frames per concentrator; an audit summary at most once a minute each.

    Refusals inside the minute after a summary are held, and written when the minute is up
    (by a one-shot timer), so a flood that stops still reaches the audit log in full."""

    def __init__(
        self,
        rt: Runtime,
        clock: Callable[[], float] = time.monotonic,
        every_s: float = SUMMARY_EVERY_S,
    ) -> None:
        self._rt = rt
        self._clock = clock
        self._every_s = every_s
        self._lock = threading.Lock()
        self._total: defaultdict[str, int] = defaultdict(int)
        self._pending: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self._last: dict[str, float] = {}
        self._timers: dict[str, threading.Timer] = {}

    def totals(self) -> dict[str, int]:
        """Frames refused per concentrator since the server started (a consistent copy)."""
        with self._lock:
            return dict(self._total)

    def count(self, client: str, frames: int, why: str) -> None:
        with self._lock:
            self._total[client] += frames
            self._pending[client][why] += frames
            last = self._last.get(client)
            wait = 0.0 if last is None else self._every_s - (self._clock() - last)
            if wait > 0:
                self._schedule(client, wait)
                return
        self.flush(client)

    def _schedule(self, client: str, wait: float) -> None:
        if client not in self._timers:
            timer = threading.Timer(wait, self._flush_later, args=(client,))
            timer.daemon = True
            self._timers[client] = timer
            timer.start()

    def close(self) -> None:
        """Cancel the timers (what they held stays in the totals)."""
        with self._lock:
            for timer in self._timers.values():
                timer.cancel()
            self._timers.clear()

    def _flush_later(self, client: str) -> None:
        try:
            self.flush(client)
        except Exception:  # a timer thread has no caller to tell; the totals stay in metrics
            logger.exception("could not write the throttling summary of %s", client)

    def flush(self, client: str) -> None:
        """Write the refusals held for ``client`` as one summary entry (if there are any)."""
        with self._lock:
            self._timers.pop(client, None)
            pending = self._pending.pop(client, None)
            if not pending:
                return
            self._last[client] = self._clock()
        details = {"concentrator": client, "frames_refused": dict(pending)}
        with self._rt.db.transaction() as session:
            event = AuditEvent("mdms.ingest_throttled", f"cert:{client}", None, details)
            self._rt.audit.record(session, [event])


def _error_responses(descriptions: dict[int, str]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI entries in the one error shape."""
    return {
        status: {"model": ErrorBody, "description": text}
        | ({"headers": _RETRY_AFTER} if status in (429, 503) else {})
        for status, text in descriptions.items()
    }


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"body of {declared} bytes exceeds the limit of {limit} bytes")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise PayloadTooLarge(f"body exceeds the limit of {limit} bytes")
    return bytes(body)


def mdms_router(rt: Runtime, limits: Limits) -> APIRouter:
    router = APIRouter(prefix="/mdms/v1", tags=["mdms"])
    throttles = ThrottleLog(rt)

    def ingest(frames: list[bytes], peer: Peer, batch_id: str) -> BatchResult:
        with limits.workers, rt.db.transaction() as session:
            return rt.ingest.ingest(session, frames, peer.name, batch_id, f"cert:{peer.name}")

    @router.post(
        "/frames",
        summary="Ingest a batch of ciphered DLMS frames (concentrators only)",
        responses=_error_responses(INGEST_ERRORS),
    )
    async def post_frames(
        request: Request,
        peer: PeerDep,
        x_batch_id: Annotated[str | None, Header()] = None,
    ) -> BatchAnswer:
        """Ingest a batch of ciphered DLMS frames (concentrators only)."""
        if peer.role != "concentrator":
            raise Forbidden(f"{peer.name} (role {peer.role}) is not a data concentrator")
        media = request.headers.get("content-type", "").split(";")[0].strip()
        if media != MEDIA_TYPE:
            raise UnsupportedMediaType(f"send {MEDIA_TYPE}, not {media or 'no content type'}")
        body = await _read_body(request, limits.settings.max_body_bytes)
        try:
            frames = decode_batch(body)
            digest = hashlib.sha256(body).hexdigest()[:32]
            batch_id = check_batch_id(digest if x_batch_id is None else x_batch_id)
        except BatchError as exc:
            raise MalformedBatch(str(exc)) from None
        if not limits.fits_burst(len(frames)):
            raise PayloadTooLarge(
                f"a batch of {len(frames)} frames is more than the {limits.settings.burst_frames:g}"
                " a concentrator may send at once; send smaller batches"
            )
        wait = limits.retry_after_rate(peer.name, len(frames))
        if wait:
            await anyio.to_thread.run_sync(throttles.count, peer.name, len(frames), "rate")
            raise Throttled(f"{peer.name} is over its rate of frames; retry in {wait} s", wait)
        if not limits.enter(peer.name):
            limits.refund(peer.name, len(frames))
            await anyio.to_thread.run_sync(throttles.count, peer.name, len(frames), "queue")
            raise Throttled("the ingest queue is full; retry in 1 s", 1, status_code=503)
        try:
            result = await anyio.to_thread.run_sync(ingest, frames, peer, batch_id)
        finally:
            limits.leave(peer.name)
        return BatchAnswer.model_validate(result.to_json())

    @router.get(
        "/metrics",
        summary="Frames by outcome, throttling and queue (mdms, regulator, broker roles)",
    )
    def metrics(peer: PeerDep) -> IngestMetrics:
        """Frames by outcome (accepted, duplicate, rejection reason), throttling, queue."""
        if peer.role not in ("mdms", "regulator", "broker"):
            raise Forbidden(f"{peer.name} (role {peer.role}) may not read MDMS metrics")
        with rt.db.transaction() as session:
            query = select(IngestTally.outcome, func.sum(IngestTally.frames)).group_by(
                col(IngestTally.outcome)
            )
            outcomes = {outcome: int(n) for outcome, n in session.exec(query)}
        return IngestMetrics(
            frames_by_outcome=outcomes,
            throttled_frames=throttles.totals(),
            queued_batches=limits.queued(),
        )

    return router
