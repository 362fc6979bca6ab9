"""Pull-feed routes: ``POST /v1/feeds``, ``GET /v1/feeds/{id}``, ``GET /v1/feeds/{id}/data``,
``DELETE /v1/feeds/{id}``.

The router takes the dependency that names the calling recipient: OAuth's bound-token
dependency when it is wired in (``broker.oauth``), the client certificate's name until then. A
recipient reaches only its own feeds; another's answers 404, as if it did not exist.

No ``from __future__ import annotations`` here: FastAPI resolves the routes' annotations, and
the recipient dependency is local to the factory.
"""

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from broker.api.schemas import error_responses
from broker.release.feeds import MAX_DAYS, FeedService, FeedSpec
from broker.release.formats import MEDIA_TYPES


class FeedCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")  # no mass assignment (recipient, status, ...)

    purpose: str = Field(max_length=64)
    categories: list[str] = Field(min_length=1, max_length=8)
    granularity: str = Field(max_length=16)
    scope: str = Field(pattern="^(subject|aggregate)$")
    format: str = Field(default="json", max_length=16)
    subject: str | None = Field(default=None, max_length=64)
    groups: list[str] = Field(default_factory=list, max_length=1000)
    tier: str | None = Field(default=None, max_length=16)
    period_from: datetime | None = None
    period_to: datetime | None = None
    delivery: str = Field(
        default="pull",
        pattern="^(pull|push)$",
        description="pull: page it at /data; push: the broker posts each day to your webhook",
    )


_INVALID = (
    "InvalidFeed, UnknownFormat or InvalidRequest: a feed the broker cannot serve (the detail "
    f"says why), a cursor it did not issue for this feed, a limit outside 1 to {MAX_DAYS} days, "
    "or a malformed parameter or body"
)
_STOPPED = (
    "FeedStopped: the feed is stopped (by the recipient, its consent ended, or its purpose left "
    "your registration)"
)
_CALLER = (
    "Forbidden or InsufficientScope: the certificate is revoked, or the token lacks a feeds scope"
)
_NOT_REGISTERED = (
    "PurposeNotRegistered: the purpose is not one you are registered for (the detail names it "
    "and your registered purposes); refused before any policy decision"
)
_REFUSED = (
    "ReleaseDenied: the policy denied this page (the detail names the decision and its reason "
    "codes); ReleaseRefused: the tier cannot release it (budget, thresholds, differencing); "
    "PurposeNotRegistered: the feed's purpose is no longer one you are registered for. "
    "ReleaseDenied and PurposeNotRegistered stop the feed. " + _CALLER
)
_PAGE: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "A page of whole days in the feed's format; X-Next-Cursor names the next",
        "content": {media.split(";")[0]: {} for media in MEDIA_TYPES.values()},
        "headers": {
            "X-Release-Id": {"description": "The release (audit) id", "schema": {"type": "string"}},
            "X-Next-Cursor": {"description": "Pass as cursor", "schema": {"type": "string"}},
        },
    }
}


def feeds_router(service: FeedService, recipient: Callable[..., str]) -> APIRouter:
    router = APIRouter(prefix="/v1/feeds", tags=["feeds"])
    Recipient = Annotated[str, Depends(recipient)]

    @router.post(
        "",
        status_code=201,
        summary="Subscribe to a feed",
        responses=error_responses(403, 422, s403=f"{_NOT_REGISTERED}. {_CALLER}", s422=_INVALID),
    )
    def subscribe(body: FeedCreate, who: Recipient) -> dict[str, Any]:
        spec = FeedSpec(
            body.purpose, tuple(body.categories), body.granularity, body.scope, body.format,
            body.subject, tuple(body.groups), body.tier, body.period_from, body.period_to,
            body.delivery,
        )  # fmt: skip
        return service.subscribe(who, spec)

    @router.get("/{feed_id}", summary="A feed of the caller's", responses=error_responses(404))
    def get(feed_id: str, who: Recipient) -> dict[str, Any]:
        return service.get(who, feed_id)

    @router.get(
        "/{feed_id}/data",
        summary="The next page of a feed (one pipeline run)",
        response_class=Response,
        responses=_PAGE
        | error_responses(403, 404, 409, 422, s403=_REFUSED, s409=_STOPPED, s422=_INVALID),
    )
    def data(
        feed_id: str,
        who: Recipient,
        cursor: Annotated[str | None, Query(max_length=512)] = None,
        format: Annotated[str | None, Query(max_length=16)] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_DAYS)] = 1,
    ) -> Response:
        page = service.page(who, feed_id, cursor, limit, format)
        headers = {"X-Release-Id": page.release_id or ""}
        if page.next_cursor:
            headers["X-Next-Cursor"] = page.next_cursor
        return Response(page.body.content, media_type=page.body.media_type, headers=headers)

    @router.delete(
        "/{feed_id}", status_code=204, summary="Stop a feed", responses=error_responses(404)
    )
    def stop(feed_id: str, who: Recipient) -> Response:
        service.stop(who, feed_id)
        return Response(status_code=204)

    return router
