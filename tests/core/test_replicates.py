"""The replicate rule: a sequence's label is the mean of its current feasible replicates."""

from __future__ import annotations

import math

import pytest

from llome_core.replicates import combine, outliers


def test_the_label_is_the_mean_with_n_and_standard_error() -> None:
    label = combine([(0.4, True), (0.5, True), (0.6, True)])
    assert label.value == pytest.approx(0.5) and label.feasible and label.n == 3
    assert label.se == pytest.approx(0.1 / math.sqrt(3))


def test_an_infeasible_replicate_adds_no_number_and_all_infeasible_is_infeasible() -> None:
    label = combine([(0.4, True), (None, False)])
    assert (label.value, label.feasible, label.n, label.se) == (0.4, True, 2, None)
    assert combine([(None, False), (None, False)]) == combine([(None, False), (None, False)])
    assert combine([(None, False)]).feasible is False and combine([(None, False)]).value is None
    with pytest.raises(ValueError, match="at least one"):
        combine([])


def test_a_replicate_beyond_three_robust_sd_is_flagged() -> None:
    assert outliers([1.0, 1.1, 0.9, 1.05, 5.0]) == [4]
    assert outliers([1.0, 1.1, 0.9, 1.05, 1.2]) == []
    assert outliers([1.0, 9.0]) == []  # two replicates cannot say which one is off
    assert outliers([2.0, 2.0, 2.0, 3.0]) == [3]  # the others agree exactly
