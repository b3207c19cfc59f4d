"""comt/evaluation.py: the greedy evaluation, what the stages report of it, and calibration metrics by hand."""
import math

import pytest

from evaluate import auroc, brier, ece, pass_at_k, reliability


def test_ece_with_ten_and_two_bins():
    confs = [0.05, 0.15, 0.85, 0.95, 1.0]
    right = [False, True, True, True, False]
    # 10 bins: {.05 F} .05, {.15 T} .85, {.85 T} .15, {.95 T, 1.0 F} 2 * |.5 - .975| = .95 -> 2.0 / 5
    assert ece(confs, right, bins=10) == pytest.approx(0.4)
    # 2 bins: {.05 F, .15 T} 2 * |.5 - .1| = .8; {.85 T, .95 T, 1.0 F} 3 * |2/3 - .9333| = .8 -> 1.6 / 5
    assert ece(confs, right, bins=2) == pytest.approx(0.32)
    assert [(lo, n) for lo, _, n, _, _ in reliability(confs, right, 2)] == [(0.0, 2), (0.5, 3)]
    assert ece([1.0, 1.0], [True, True]) == 0.0
    assert math.isnan(ece([], []))


def test_brier():
    assert brier([0.8, 0.3], [True, False]) == pytest.approx((0.2 ** 2 + 0.3 ** 2) / 2)  # 0.065
    assert brier([1.0, 0.0], [False, True]) == 1.0


def test_auroc_counts_ties_as_half():
    # right {.9, .5}, wrong {.5, .1}: pairs 1 + 1 + 0.5 + 1 = 3.5 of 4
    assert auroc([0.9, 0.5, 0.5, 0.1], [True, True, False, False]) == pytest.approx(0.875)
    assert auroc([0.3, 0.3, 0.3], [True, False, True]) == 0.5
    assert auroc([0.1, 0.9], [True, False]) == 0.0
    assert math.isnan(auroc([0.2, 0.4], [True, True]))


@pytest.mark.parametrize("n,c,k,want", [(5, 2, 2, 1 - 3 / 10), (5, 2, 1, 0.4), (5, 0, 3, 0.0), (5, 4, 2, 1.0),
                                         (4, 1, 4, 1.0), (10, 3, 5, 1 - 21 / 252)])
def test_pass_at_k_unbiased(n, c, k, want):
    assert pass_at_k(n, c, k) == pytest.approx(want)


def test_pass_at_k_needs_enough_samples():
    with pytest.raises(ValueError, match="at least 3"):
        pass_at_k(2, 1, 3)
