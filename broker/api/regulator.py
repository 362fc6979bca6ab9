"""Regulator access (X.1332 accountability): a certificate with role
``regulator`` reads audit entries by customer pseudonym, recipient, type and time, downloads an
export bundle it verifies offline with ``broker audit verify``, and reads metrics. Every other
role is refused (403; the role each route needs is in the one table,
``broker.oauth.scopes.ROUTES``); every read is itself audited (``regulator.read``)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from fastapi.responses import Response
from pydantic import BaseModel

from broker.api.access import Caller, access
from broker.api.schemas import error_responses
from broker.audit.events import AuditEvent
from broker.audit.export import ExportFilters, export_bundle
from broker.ca.peer import Peer
from broker.kit.text import AwareDatetime
from broker.regulator.service import MAX_LIMIT, AuditQuery, audit_entries, metrics
from broker.runtime.core import Runtime
from broker.storage.guard import MAX_SEQ

EXPORT_MEDIA_TYPE = "application/x-ndjson"
Audit = Annotated[Caller, Depends(access("GET", "/v1/regulator/audit"))]
Export = Annotated[Caller, Depends(access("GET", "/v1/regulator/export"))]
Metrics = Annotated[Caller, Depends(access("GET", "/v1/regulator/metrics"))]


class AuditPage(BaseModel):
    entries: list[dict[str, Any]]
    next_after_seq: int | None
    """Pass as ``after_seq`` for the next page; null when the log is read to its end."""


def regulator_router(rt: Runtime) -> APIRouter:
    router = APIRouter(
        prefix="/v1/regulator",
        tags=["regulator"],
        responses=error_responses(403, s403="Forbidden: the certificate is not a regulator's"),
    )

    def audited(peer: Peer, what: str, details: dict[str, Any]) -> None:
        with rt.db.transaction() as session:
            event = AuditEvent(
                "regulator.read", f"cert:{peer.name}", None, {"what": what, **details}
            )
            rt.audit.record(session, [event])

    @router.get(
        "/audit",
        summary="Audit entries by customer pseudonym, recipient, type and time",
        responses=error_responses(
            422,
            s422="BadQuery or InvalidRequest: a subject that is not a pseudonym, since not "
            f"before until, a limit outside 1 to {MAX_LIMIT}, or a malformed parameter",
        ),
    )
    def audit(
        regulator: Audit,
        type_: Annotated[list[str] | None, Query(alias="type")] = None,
        subject: Annotated[str | None, Query(description="hs1:... customer pseudonym")] = None,
        recipient: str | None = None,
        since: AwareDatetime | None = None,
        until: AwareDatetime | None = None,
        after_seq: Annotated[int, Query(ge=-1, le=MAX_SEQ)] = -1,
        limit: Annotated[int, Query(ge=1, le=MAX_LIMIT)] = 100,
    ) -> AuditPage:
        """Entries in sequence order; page with ``after_seq``."""
        query = AuditQuery(tuple(type_ or ()), subject, recipient, since, until, after_seq, limit)
        with rt.db.transaction() as session:
            entries, cursor = audit_entries(session, query)
        audited(regulator.peer, "audit", {"returned": len(entries)})
        return AuditPage(entries=entries, next_after_seq=cursor)

    @router.get(
        "/export",
        summary="An export bundle (entries, proofs, signed checkpoint) to verify offline",
        response_class=Response,
        responses={200: {"content": {EXPORT_MEDIA_TYPE: {}}}},
    )
    def export(
        regulator: Export,
        type_: Annotated[list[str] | None, Query(alias="type")] = None,
        since: AwareDatetime | None = None,
        until: AwareDatetime | None = None,
    ) -> Response:
        """The foundation's bundle format (JSON lines); ``broker audit verify`` checks it."""
        filters = ExportFilters(since, until, tuple(type_ or ()))
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "export.jsonl"
            with rt.db.transaction() as session:
                summary = export_bundle(session, rt.audit, out, filters)
            body = out.read_bytes()
        audited(regulator.peer, "export", {"entries": summary.entries})
        return Response(body, media_type=EXPORT_MEDIA_TYPE)

    @router.get("/metrics", summary="Decisions, consents, rejected frames, budgets")
    def read_metrics(_regulator: Metrics) -> dict[str, Any]:
        """Counts across the broker."""
        with rt.db.transaction() as session:
            return metrics(session)

    return router
