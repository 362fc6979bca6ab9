"""A budget refusal says its figures as a person reads them (X.1332 C3.3, C4.3): the ε and δ
left after spends that use the cap up to float residue are 0, not 5.55112e-17, and figures have
at most four significant digits."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from deidentify.budget_ad import BudgetRules, BudgetSpend, accountant, charge
from deidentify.errors import BudgetExceeded
from deidentify.noise_ad import LAPLACE, Calibration

AT = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def _spends(*epsilons: float) -> list[BudgetSpend]:
    return [BudgetSpend("ems", AT - timedelta(hours=i + 1), e, 0.0) for i, e in enumerate(epsilons)]


def _laplace(epsilon: float) -> Calibration:
    return Calibration(LAPLACE, epsilon, 0.0, 1000.0, 1000.0 / epsilon)


def _refusal(cap: float, spent: list[BudgetSpend], epsilon: float) -> str:
    budget = accountant(spent, "ems", AT, BudgetRules(epsilon_cap=cap))
    with pytest.raises(BudgetExceeded) as refused:
        charge(budget, _laplace(epsilon), "ems")
    return str(refused.value)


def test_C3_3_a_cap_used_up_to_float_residue_says_0_left() -> None:
    """0.2 + 0.3 of a cap of 0.5 leaves 5.55e-17 in diffprivlib's reckoning: that is 0."""
    message = _refusal(0.5, _spends(0.2, 0.3), 0.1)
    assert "ε = 0, δ = 1e-05 left in the window" in message
    assert "e-17" not in message and "e-16" not in message


def test_C3_3_figures_have_at_most_four_significant_digits() -> None:
    message = _refusal(1.0, _spends(1 / 3), 1.0)
    assert "a release at ε = 1, δ = 0 would exceed ems's budget: ε = 0.6667," in message


def test_C3_3_spends_over_the_cap_by_float_residue_are_said_to_reach_it() -> None:
    """0.1 + 0.2 is 0.30000000000000004, above a cap of 0.3 in floating point: the refusal says
    the cap was reached instead of "0.3, above the cap of 0.3"."""
    with pytest.raises(BudgetExceeded) as refused:
        accountant(_spends(0.1, 0.2), "ems", AT, BudgetRules(epsilon_cap=0.3))
    assert str(refused.value) == (
        "ems has spent ε = 0.3 in the last 30 days, at or above the cap of 0.3"
    )
