"""Limits of the HTTPS API before any work (T7, C1.8): request rates per client, body sizes.

``ClientRate`` is a token bucket of requests per client certificate (the MDMS's limiter, one
token a request); ``client_rate`` is the dependency that spends a token of the app's bucket
(``app.state.client_rate``), so every router that names it shares one bucket per client: over
it, 429 with Retry-After. ``BodyLimit`` is an ASGI middleware that bounds request bodies: a
declared Content-Length over the bound is refused (413) before a byte of the body is read, and
a body without one (chunked) is counted as it is read and refused as soon as it passes the
bound; the app's own answer is then dropped and the 413 sent instead, whatever the route was
doing with the body.
"""

from __future__ import annotations

from collections.abc import Callable, Collection

from fastapi import Request
from fastapi.responses import Response
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from broker.api.peer import PeerDep
from broker.api.schemas import error_json
from broker.errors import PayloadTooLarge, Throttled
from connectors.mdms.limits import Limits, LimitSettings

DEFAULT_MAX_BODY_BYTES = 64 * 1024
Refusal = Callable[[str], Response]


class ClientRate:
    """A token bucket of requests per client (T7, C1.8): the MDMS's limiter, one token a
    request; over it, ``Throttled`` (429 with Retry-After) before any work."""

    def __init__(self, rate_per_s: float, burst: float) -> None:
        self._limits = Limits(LimitSettings(rate_frames_per_s=rate_per_s, burst_frames=burst))

    def wait(self, client: str) -> int:
        """0 if ``client`` may make a request now (its token spent), else whole seconds to wait."""
        return self._limits.retry_after_rate(client, 1)

    def __call__(self, peer: PeerDep) -> None:
        wait = self.wait(peer.name)
        if wait:
            raise Throttled(f"{peer.name} makes requests too often; retry in {wait} s", wait)


def client_rate(request: Request, peer: PeerDep) -> None:
    """The dependency of rate-limited routes: one token of the app's per-client bucket
    (``app.state.client_rate``; none set, no limit)."""
    rate: ClientRate | None = getattr(request.app.state, "client_rate", None)
    if rate is not None:
        rate(peer)


def too_large_json(detail: str) -> Response:
    return error_json(PayloadTooLarge.__name__, detail, PayloadTooLarge.status_code)


class _Over(Exception):
    """The body passed the bound while the app read it."""


class BodyLimit:
    """Bounds every request body to ``max_bytes`` (413 beyond, answered by ``refuse``), except
    on the paths in ``exempt``, whose routes bound their bodies themselves."""

    def __init__(
        self,
        app: ASGIApp,
        max_bytes: int = DEFAULT_MAX_BODY_BYTES,
        refuse: Refusal = too_large_json,
        exempt: Collection[str] = (),
    ) -> None:
        self.app, self.max_bytes, self.refuse, self.exempt = app, max_bytes, refuse, exempt

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in self.exempt:
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes
        declared = Headers(scope=scope).get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            text = f"the body of {declared} bytes is over the limit of {limit} bytes"
            await self.refuse(text)(scope, receive, send)
            return
        seen, over, started = 0, False, False

        async def counted() -> Message:
            nonlocal seen, over
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    over = True
                    raise _Over
            return message

        async def unless_over(message: Message) -> None:
            nonlocal started
            if over:  # the app's answer to a body cut short (400, 500): the 413 goes instead
                return
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counted, unless_over)
        except Exception:  # _Over itself, or what the app made of it
            if not over:
                raise
        if over and not started:
            await self.refuse(f"the body is over the limit of {limit} bytes")(scope, receive, send)
