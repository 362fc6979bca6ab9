"""Pull-feed routes: ``POST /v1/feeds``, ``GET /v1/feeds/{id}``, ``GET /v1/feeds/{id}/data``,
``DELETE /v1/feeds/{id}``.

Each route takes its scope from the one table (``broker.oauth.scopes.ROUTES``, through
``broker.api.access.access`` or a stand-in a test passes as ``guard``): reading takes
``feeds:read`` (``ems:read``), creating and cancelling ``feeds:write`` (``ems:write``). A token
narrowed with ``purpose:`` or ``consent:`` reaches only feeds within it (``broker.release.bounds``):
checked before a subscription is stored and before a page is released. A recipient reaches only
its own feeds; another's answers 404, as if it did not exist.

No ``from __future__ import annotations`` here: FastAPI resolves the routes' annotations, and
the recipient dependency is local to the factory.
"""

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from broker.api.access import Caller, access
from broker.api.schemas import error_responses
from broker.kit.text import AwareDatetime, Text
from broker.release.bounds import FeedShape, check_within
from broker.release.feeds import MAX_DAYS, FeedService, FeedSpec
from broker.release.formats import MEDIA_TYPES


class FeedCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")  # no mass assignment (recipient, status, ...)

    purpose: Text = Field(max_length=64)
    categories: list[Text] = Field(min_length=1, max_length=8)
    granularity: Text = Field(max_length=16)
    scope: str = Field(pattern="^(subject|aggregate)$")
    format: Text = Field(default="json", max_length=16)
    subject: Text | None = Field(default=None, max_length=64)
    groups: list[Text] = Field(default_factory=list, max_length=1000)
    tier: Text | None = Field(default=None, max_length=16)
    period_from: AwareDatetime | None = None  # a time without a UTC offset is refused (422)
    period_to: AwareDatetime | None = None
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
_STOPPED_OR_RELEASED = _STOPPED + (
    "; PageAlreadyReleased: this cursor's page was released already, by an earlier or a "
    "concurrent request (the detail names that release and the next cursor; a page is released "
    "once)"
)
_CALLER = (
    "Forbidden or InsufficientScope: the certificate is revoked, the token lacks the route's "
    "scope, or the feed is outside the token's purpose: or consent: narrowing"
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


def feeds_router(
    service: FeedService, guard: Callable[[str, str], Callable[..., Caller]] = access
) -> APIRouter:
    router = APIRouter(prefix="/v1/feeds", tags=["feeds"])
    Reader = Annotated[Caller, Depends(guard("GET", "/v1/feeds/{feed_id}"))]
    Puller = Annotated[Caller, Depends(guard("GET", "/v1/feeds/{feed_id}/data"))]
    Creator = Annotated[Caller, Depends(guard("POST", "/v1/feeds"))]
    Stopper = Annotated[Caller, Depends(guard("DELETE", "/v1/feeds/{feed_id}"))]

    def within(who: Caller, feed: FeedShape) -> None:
        """Refuse a feed outside the token's narrowing (before anything is stored or
        released)."""
        with service.db.transaction() as session:
            check_within(session, service.pipeline.consents, who.narrowing, who.recipient_id, feed)

    def own(who: Caller, feed_id: str) -> dict[str, Any]:
        """The caller's feed (404 if not theirs), if within the token's narrowing."""
        feed = service.get(who.recipient_id, feed_id)
        within(who, FeedShape(feed["purpose"], feed["scope"], feed["subject"],
                              feed["categories"], feed["granularity"]))  # fmt: skip
        return feed

    @router.post(
        "",
        status_code=201,
        summary="Subscribe to a feed",
        responses=error_responses(403, 422, s403=f"{_NOT_REGISTERED}. {_CALLER}", s422=_INVALID),
    )
    def subscribe(body: FeedCreate, who: Creator) -> dict[str, Any]:
        spec = FeedSpec(
            body.purpose, tuple(body.categories), body.granularity, body.scope, body.format,
            body.subject, tuple(body.groups), body.tier, body.period_from, body.period_to,
            body.delivery,
        )  # fmt: skip
        within(who, FeedShape(spec.purpose, spec.scope, spec.subject, spec.categories,
                              spec.granularity))  # fmt: skip
        return service.subscribe(who.recipient_id, spec)

    @router.get("/{feed_id}", summary="A feed of the caller's", responses=error_responses(403, 404))
    def get(feed_id: str, who: Reader) -> dict[str, Any]:
        return own(who, feed_id)

    @router.get(
        "/{feed_id}/data",
        summary="The next page of a feed (one pipeline run)",
        response_class=Response,
        responses=_PAGE
        | error_responses(
            403, 404, 409, 422, s403=_REFUSED, s409=_STOPPED_OR_RELEASED, s422=_INVALID
        ),
    )
    def data(
        feed_id: str,
        who: Puller,
        cursor: Annotated[str | None, Query(max_length=512)] = None,
        format: Annotated[str | None, Query(max_length=16)] = None,
        limit: Annotated[int, Query(ge=1, le=MAX_DAYS)] = 1,
    ) -> Response:
        own(who, feed_id)  # a feed's purpose, customer and data never change: checked once
        page = service.page(who.recipient_id, feed_id, cursor, limit, format)
        headers = {"X-Release-Id": page.release_id or ""}
        if page.next_cursor:
            headers["X-Next-Cursor"] = page.next_cursor
        return Response(page.body.content, media_type=page.body.media_type, headers=headers)

    @router.delete(
        "/{feed_id}", status_code=204, summary="Stop a feed", responses=error_responses(403, 404)
    )
    def stop(feed_id: str, who: Stopper) -> Response:
        own(who, feed_id)
        service.stop(who.recipient_id, feed_id)
        return Response(status_code=204)

    return router
