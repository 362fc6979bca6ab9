"""The errors of ``broker.release``: each a ``BrokerError`` with its status and exit code."""

from __future__ import annotations

from broker.errors import BrokerError, Forbidden
from broker.policy.decision import Decision


class InvalidFeed(BrokerError):
    status_code = 422


class FeedStopped(BrokerError):
    status_code = 409


class PurposeNotRegistered(Forbidden):
    """The feed's purpose is not one the recipient is registered for (R3.5)."""

    def __init__(self, recipient: str, purpose: str, registered: frozenset[str]) -> None:
        names = ", ".join(sorted(registered)) or "none"
        super().__init__(
            f"purpose {purpose!r} is not one {recipient} is registered for "
            f"(registered purposes: {names})"
        )


class UnknownFormat(BrokerError):
    status_code = 422


class PageAlreadyReleased(BrokerError):
    """This page of the feed was already released (by another request or broker process)."""

    status_code = 409


class ReleaseDenied(Forbidden):
    """The policy denied the release; nothing was read."""

    def __init__(self, decision: Decision) -> None:
        codes = ", ".join(r.code for r in decision.reasons) or "denied"
        super().__init__(f"release denied by decision {decision.decision_id}: {codes}")
        self.decision_id = decision.decision_id
        self.reasons = decision.reasons


class ReleaseRefused(Forbidden):
    """The policy allowed it but the tier cannot release it (budget, differencing, k, data)."""

    def __init__(self, decision: Decision, why: str) -> None:
        super().__init__(f"release refused under decision {decision.decision_id}: {why}")
        self.decision_id = decision.decision_id


class NotAllowed(Forbidden):
    """A read without an allowing decision, or outside what the decision allowed."""
