"""The linkage attack used by the privacy report measures what it claims."""

from __future__ import annotations

import numpy as np
import pytest

from deidentify.errors import InvalidData, InvalidParameter
from deidentify.linkage import distribution_features, nearest_neighbour_linkage


def test_distinct_habits_link_perfectly() -> None:
    rng = np.random.default_rng(1)
    week1 = rng.gamma(2.0, 1.0, size=(50, 24))
    week2 = week1 * 1.3 + rng.normal(0, 0.01, size=week1.shape)  # same habits, more energy
    order = rng.permutation(50)
    result = nearest_neighbour_linkage(week1, week2[order], order, scale="shape")
    assert result.accuracy == 1.0
    assert result.chance == pytest.approx(1 / 50)


def test_records_made_identical_in_groups_of_k_link_at_1_over_k() -> None:
    rng = np.random.default_rng(2)
    k, groups = 5, 8
    profiles = rng.gamma(2.0, 1.0, size=(groups, 24))
    week1 = np.repeat(profiles, k, axis=0)
    week2 = week1.copy()
    result = nearest_neighbour_linkage(week1, week2, np.arange(groups * k))
    assert result.accuracy == pytest.approx(1 / k)
    assert result.mean_candidates_tied == k


def test_unrelated_periods_link_near_chance() -> None:
    rng = np.random.default_rng(3)
    week1 = rng.gamma(2.0, 1.0, size=(200, 24))
    week2 = rng.gamma(2.0, 1.0, size=(200, 24))
    result = nearest_neighbour_linkage(week1, week2, np.arange(200))
    assert result.accuracy < 0.05


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(InvalidParameter):
        nearest_neighbour_linkage(np.zeros((3, 4)), np.zeros((3, 5)), np.arange(3))
    with pytest.raises(InvalidData):
        nearest_neighbour_linkage(np.zeros((0, 4)), np.zeros((3, 4)), np.arange(3))
    with pytest.raises(InvalidParameter):
        nearest_neighbour_linkage(np.ones((3, 4)), np.ones((3, 4)), np.array([0, 1, 3]))
    with pytest.raises(InvalidParameter, match="unknown scale"):
        nearest_neighbour_linkage(np.ones((3, 4)), np.ones((3, 4)), np.arange(3), scale="x")
    with pytest.raises(InvalidParameter):
        distribution_features(np.ones(4))


def test_distribution_features_are_per_record_percentiles() -> None:
    values = np.array([np.arange(101.0), np.arange(101.0) * 2])
    features = distribution_features(values, (1, 50, 99))
    assert features.tolist() == [[1.0, 50.0, 99.0], [2.0, 100.0, 198.0]]
