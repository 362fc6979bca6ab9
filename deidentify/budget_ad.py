"""The privacy budget of a recipient: ledger rows in, a diffprivlib accountant per release.

The budget persists in the broker (one row per release: recipient, when, ε, δ); this library
stays pure, so it takes the rows as an input and hands back the row to append. For each release
a ``BudgetAccountant`` is rebuilt from the recipient's rows of the rolling window (30 days by
default): its ceiling is the cap, the rows are its spent budget, and its ``check`` decides,
before any noise is drawn, whether the release fits. diffprivlib's process-global default
accountant is never used: a release's budget is the recipient's, not the process's.

Composition is diffprivlib's with no slack: ε and δ of the window's releases add up (basic
composition), compared exactly as diffprivlib compares them, so a cap of 0.3 refuses a third
spend of 0.1 (0.1 + 0.2 is above 0.3 in floating point): it errs on the side of refusing.

The privacy unit is the household-day and each release charges its ε to every household-day in
it, so the cap bounds what the releases of one window tell this recipient about any single
household-day. A household-day released again after the window has passed is charged again
from a fresh window: the rolling cap bounds the rate of spend, not the lifetime total.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from diffprivlib import BudgetAccountant
from diffprivlib.utils import BudgetError

from deidentify.errors import BudgetExceeded, InvalidData, InvalidParameter
from deidentify.noise_ad import Calibration, leaks_refused

PRIVACY_UNIT = "household-day"


@dataclass(frozen=True)
class BudgetSpend:
    """One ledger row: ``recipient`` was charged (ε, δ) by a release made ``at``."""

    recipient: str
    at: datetime
    epsilon: float
    delta: float
    mechanism: str = ""
    privacy_unit: str = PRIVACY_UNIT


@dataclass(frozen=True)
class BudgetRules:
    """Per-release ceilings and the per-recipient cap over a rolling window."""

    epsilon_ceiling: float = 1.0
    """Largest ε one release may spend (per household-day)."""
    delta_ceiling: float = 1e-6
    """Largest δ one release may spend (only the Gaussian mechanism spends δ)."""
    epsilon_cap: float = 10.0
    """Largest total ε per recipient within ``window``: ten releases at the ceiling."""
    delta_cap: float = 1e-5
    window: timedelta = timedelta(days=30)

    def check(self, epsilon: float, delta: float) -> None:
        """Refuse ε <= 0 or above the ceiling, δ < 0 or above its ceiling."""
        if not (math.isfinite(epsilon) and 0 < epsilon <= self.epsilon_ceiling):
            raise InvalidParameter(f"ε must be in (0, {self.epsilon_ceiling}], got {epsilon}")
        if not (math.isfinite(delta) and 0 <= delta <= self.delta_ceiling):
            raise InvalidParameter(f"δ must be in [0, {self.delta_ceiling}], got {delta}")
        if self.window <= timedelta(0):
            raise InvalidParameter("the budget window must be positive")


def accountant(
    ledger: Iterable[BudgetSpend], recipient: str, at: datetime, rules: BudgetRules
) -> BudgetAccountant:
    """An accountant holding ``recipient``'s spends of the window ending ``at`` (exclusive of
    rows older than ``at - window``; rows dated after ``at`` count)."""
    _aware(at, "the release time")
    since = at - rules.window
    spent = [(r.epsilon, r.delta) for r in ledger if r.recipient == recipient and _in(r, since)]
    try:
        with leaks_refused():
            return BudgetAccountant(rules.epsilon_cap, rules.delta_cap, spent_budget=spent)
    except BudgetError as exc:
        total = sum(e for e, _ in spent)
        raise BudgetExceeded(
            f"{recipient} has spent ε = {_figure(total)} in the last {rules.window.days} days, "
            f"at or above the cap of {_figure(rules.epsilon_cap)}"
        ) from exc
    except (ValueError, TypeError) as exc:
        raise InvalidData(f"the budget ledger or cap is invalid: {exc}") from exc


def charge(accountant: BudgetAccountant, calibration: Calibration, recipient: str) -> None:
    """Refuse, before any noise is drawn, a release the recipient's budget cannot pay."""
    try:
        with leaks_refused():
            accountant.check(calibration.epsilon, calibration.delta)
    except BudgetError as exc:
        epsilon, delta = accountant.remaining()
        asked = f"ε = {_figure(calibration.epsilon)}, δ = {_figure(calibration.delta)}"
        left = f"ε = {_figure(epsilon, accountant.epsilon)}, δ = {_figure(delta, accountant.delta)}"
        raise BudgetExceeded(
            f"a release at {asked} would exceed {recipient}'s budget: {left} left in the window"
        ) from exc


def _figure(value: float, cap: float = 0.0) -> str:
    """A budget figure as a person reads it: four significant digits at most, and what is left
    of ``cap`` after spends that use it up to float residue (5.55e-17 of 0.5) is 0."""
    residue = 1e-9 * cap if math.isfinite(cap) else 0.0
    return "0" if abs(value) <= residue else f"{value:.4g}"


def _in(row: BudgetSpend, since: datetime) -> bool:
    _aware(row.at, "a ledger row's time")
    return row.at > since


def _aware(moment: datetime, what: str) -> None:
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise InvalidParameter(f"{what} must be timezone-aware (UTC), got {moment!r}")
