"""Tests for pass@k and accuracy aggregation."""

import itertools
import math
from math import comb

import pytest

from mobilellm_r1.eval.metrics import mean_accuracy, mean_pass_at_k, pass_at_k


def test_pass_at_k_hand_computed() -> None:
    # n=5, c=2, k=2: 1 - C(3,2)/C(5,2) = 1 - 3/10
    assert pass_at_k(5, 2, 2) == pytest.approx(0.7)
    # n=10, c=3, k=5: 1 - C(7,5)/C(10,5) = 1 - 21/252
    assert pass_at_k(10, 3, 5) == pytest.approx(1 - 21 / 252)
    assert pass_at_k(4, 0, 2) == 0.0
    assert pass_at_k(4, 4, 1) == 1.0


def test_pass_at_k_matches_binomials() -> None:
    for n in range(1, 15):
        for c in range(n + 1):
            for k in range(1, n + 1):
                exact = 1 - comb(n - c, k) / comb(n, k)
                assert pass_at_k(n, c, k) == pytest.approx(exact, abs=1e-12)


def test_pass_at_1_is_fraction_correct() -> None:
    for n, c in [(1, 0), (1, 1), (7, 3), (200, 17)]:
        assert pass_at_k(n, c, 1) == pytest.approx(c / n)


def test_k_beyond_failures_gives_one() -> None:
    assert pass_at_k(10, 3, 8) == 1.0
    assert pass_at_k(10, 1, 10) == 1.0


def test_monotone_in_k_and_large_n_stable() -> None:
    vals = [pass_at_k(1000, 5, k) for k in range(1, 1001)]
    assert all(b >= a - 1e-15 for a, b in itertools.pairwise(vals))
    assert 0.0 <= vals[0] <= vals[-1] == 1.0


@pytest.mark.parametrize(("n", "c", "k"), [(3, 4, 1), (3, 1, 0), (3, 1, 4), (3, -1, 1)])
def test_pass_at_k_rejects_bad_args(n: int, c: int, k: int) -> None:
    with pytest.raises(ValueError):
        pass_at_k(n, c, k)


def test_mean_pass_at_k_and_se() -> None:
    counts = [(4, 0), (4, 2), (4, 4)]
    vals = [0.0, 0.5, 1.0]  # pass@1 = c/n
    mean, se = mean_pass_at_k(counts, 1)
    assert mean == pytest.approx(0.5)
    sd = math.sqrt(sum((v - 0.5) ** 2 for v in vals) / 2)
    assert se == pytest.approx(sd / math.sqrt(3))
    assert mean_pass_at_k([(5, 2)], 2) == (pytest.approx(0.7), 0.0)


def test_mean_accuracy() -> None:
    mean, se = mean_accuracy([True, False, True, True])
    assert mean == 0.75
    assert se == pytest.approx(0.25)  # sample var = 0.75 / 3, SE = sqrt(0.25 / 4)
    assert mean_accuracy([1]) == (1.0, 0.0)
    with pytest.raises(ValueError):
        mean_accuracy([])
