"""What other parts hand to the audit log: an event, and the protocol of the sink that takes it.

Subjects are keyed hashes (``broker.kit.ids.SubjectHasher``), never raw personal data; details
are small JSON objects of strings, integers, booleans and nulls.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from sqlmodel import Session


@dataclass(frozen=True)
class AuditEvent:
    type: str
    """Dotted event type, e.g. ``key.destroyed``, ``ca.certificate_issued``."""
    actor: str
    """Who caused it: ``cli:<user>``, ``cert:<name>``, ``system``."""
    subject: str | None = None
    """A keyed hash of the data subject (``hs1:...``), or None."""
    details: Mapping[str, Any] = field(default_factory=dict)


class AuditSink(Protocol):
    def record(self, session: Session, events: Sequence[AuditEvent]) -> list[int]:
        """Append events in the caller's transaction (no commit); return their sequence numbers."""
        ...
