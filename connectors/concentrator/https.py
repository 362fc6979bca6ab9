"""The real MDMS adapter: ``POST {mdms_url}/mdms/v1/frames`` over HTTPS with mutual TLS.

One ``httpx.Client`` per concentrator, HTTP/1.1 with keep-alive, holding the caller's
``ssl.SSLContext`` (the concentrator's certificate from the broker's CA). The client only moves
bytes: the body is the encoded batch exactly as the spool holds it.
"""

from __future__ import annotations

import email.utils
import ssl
import time

import httpx
from pydantic import ValidationError

from connectors.concentrator.mdms import (
    FRAMES_PATH,
    BadBatch,
    BatchReport,
    Busy,
    Delivered,
    Failed,
    Outcome,
    Refused,
)
from connectors.dlms.batch import MEDIA_TYPE

MAX_RETRY_AFTER_S = 3600.0


class HttpsMdmsClient:
    def __init__(self, mdms_url: str, ssl_context: ssl.SSLContext, timeout_s: float) -> None:
        self._url = mdms_url.rstrip("/") + FRAMES_PATH
        self._http = httpx.Client(
            verify=ssl_context,
            timeout=timeout_s,
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
        )

    def send(self, batch_id: str, body: bytes) -> Outcome:
        headers = {"Content-Type": MEDIA_TYPE, "X-Batch-Id": batch_id}
        try:
            response = self._http.post(self._url, content=body, headers=headers)
        except httpx.TransportError as exc:
            return Failed(f"{type(exc).__name__}: {exc or 'no detail'}")
        return classify(response)

    def close(self) -> None:
        self._http.close()


def classify(response: httpx.Response) -> Outcome:
    """The outcome an answer of the MDMS means (see :mod:`connectors.concentrator.mdms`)."""
    status = response.status_code
    if status == 200:
        return _delivered(response)
    if status in (429, 503):
        return Busy(status, retry_after(response.headers.get("retry-after")))
    if status in (400, 413):
        return BadBatch(status, _detail(response))
    if status >= 500:
        return Failed(f"MDMS answered {status}: {_detail(response)}")
    return Refused(status, _detail(response))


def retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (seconds or an HTTP date), or None."""
    if value is None:
        return None
    seconds: float | None
    try:
        seconds = float(value)
    except ValueError:
        seconds = _seconds_until(value, time.time() if now is None else now)
    if seconds is None or seconds != seconds:  # unparsable or NaN
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


def _seconds_until(http_date: str, now: float) -> float | None:
    try:
        return email.utils.parsedate_to_datetime(http_date).timestamp() - now
    except (TypeError, ValueError):
        return None


def _delivered(response: httpx.Response) -> Outcome:
    try:
        return Delivered(BatchReport.model_validate_json(response.content))
    except ValidationError as exc:
        return Failed(f"MDMS answered 200 with an unreadable report: {exc.error_count()} errors")


def _detail(response: httpx.Response) -> str:
    try:
        data = response.json()
    except ValueError:
        return response.text[:200] or response.reason_phrase
    if isinstance(data, dict) and "detail" in data:
        return str(data["detail"])[:200]
    return str(data)[:200]
