"""What every answer of the API and the portal shares, below the routes (T7, C1.8).

``Hardened`` is the outermost ASGI middleware of both apps (``install_hardening``):

- every answer carries ``Cache-Control: no-store`` (unless the route set its own),
  ``X-Content-Type-Options: nosniff`` and ``Strict-Transport-Security``: the apps serve personal
  data and no static assets, and speak HTTPS only;
- a path or query parameter holding a control character (``%00`` and the like) is refused with
  422 in the one error shape before any route runs; bodies are checked by their models
  (``broker.kit.text``), and the database refuses such text whatever the path
  (``broker.storage.guard``);
- an unexpected exception (a bug) is logged with its traceback and answered 500 in the one
  error shape, ``{"error": "InternalError", "detail": ...}``, naming nothing of it, and the
  exception goes no further: the server keeps the keep-alive connection in a well-formed state
  (Starlette's own handler re-raised it, and uvicorn then dropped the connection without a
  ``Connection: close``). Only when the answer had already started is the connection cut short.

It also records the server timeouts of ``broker.settings`` on the app
(``app.state.http_timeouts``), which ``broker.api.server.make_server`` reads.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from urllib.parse import parse_qsl

from fastapi import FastAPI
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from broker.api.schemas import INVALID_REQUEST, error_json
from broker.kit.text import text_problem
from broker.settings import Settings

logger = logging.getLogger(__name__)
HSTS = "max-age=31536000"
INTERNAL_ERROR = "InternalError"
INTERNAL_DETAIL = "the broker met an unexpected error; it was logged, try again later"


@dataclass(frozen=True)
class HttpTimeouts:
    """Seconds: for a request's headers to arrive, and for an idle kept-alive connection."""

    header_s: float = 10.0
    keepalive_s: int = 5


def timeouts_of(app: ASGIApp) -> HttpTimeouts:
    """The timeouts ``install_hardening`` recorded on ``app`` (the production defaults if none)."""
    state = getattr(app, "state", None)
    found = getattr(state, "http_timeouts", None)
    return found if isinstance(found, HttpTimeouts) else HttpTimeouts()


def target_problem(scope: Scope) -> str | None:
    """Why the request's path or query cannot be taken (a control character), or None."""
    problem = text_problem(scope.get("path", ""))
    if problem is not None:
        return f"path: {problem}"
    query = scope.get("query_string", b"").decode("latin-1")
    for key, value in parse_qsl(query, keep_blank_values=True):
        problem = text_problem(key) or text_problem(value)
        if problem is not None:
            return f"query.{key if text_problem(key) is None else '?'}: {problem}"
    return None


class Hardened:
    """Headers on every answer, control characters refused in the target, and one 500 shape for
    bugs that leaves the connection usable."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def hardened(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                message["headers"] = list(message.get("headers", []))
                headers = MutableHeaders(scope=message)
                headers.setdefault("cache-control", "no-store")
                headers["x-content-type-options"] = "nosniff"
                headers["strict-transport-security"] = HSTS
            await send(message)

        problem = target_problem(scope)
        if problem is not None:
            await error_json(INVALID_REQUEST, problem, 422)(scope, receive, hardened)
            return
        try:
            await self.app(scope, receive, hardened)
        except Exception:
            logger.exception("unexpected error on %s %s", scope.get("method"), scope.get("path"))
            if started:  # half an answer is out: only closing the connection can end it
                raise
            await error_json(INTERNAL_ERROR, INTERNAL_DETAIL, 500)(scope, receive, hardened)


def install_hardening(app: FastAPI, settings: Settings | None = None) -> None:
    """Make ``Hardened`` the outermost middleware of ``app`` (install it after every other) and
    record the server timeouts of ``settings``."""
    app.add_middleware(Hardened)
    if settings is not None:
        app.state.http_timeouts = HttpTimeouts(
            settings.http_header_timeout_s, settings.http_keepalive_timeout_s
        )
