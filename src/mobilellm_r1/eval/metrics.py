"""Aggregate evaluation metrics: unbiased pass@k (Chen et al. 2021) and accuracy with standard errors."""

from __future__ import annotations

import math
from collections.abc import Sequence

__all__ = ["mean_accuracy", "mean_pass_at_k", "mean_with_se", "pass_at_k", "pass_summary"]


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k estimate 1 - C(n-c, k) / C(n, k) for one problem.

    n: samples drawn, c: samples that are correct, k: budget (1 <= k <= n).
    Evaluated in the numerically stable product form
    C(n-c, k) / C(n, k) = prod_{i=n-c+1}^{n} (1 - k / i), which never forms large binomials.
    """
    if not 0 <= c <= n:
        raise ValueError(f"need 0 <= c <= n, got n={n}, c={c}")
    if not 1 <= k <= n:
        raise ValueError(f"need 1 <= k <= n, got n={n}, k={k}")
    if n - c < k:  # every size-k subset contains a correct sample
        return 1.0
    fail = 1.0
    for i in range(n - c + 1, n + 1):
        fail *= 1.0 - k / i
    return 1.0 - fail


def mean_with_se(values: Sequence[float]) -> tuple[float, float]:
    """(mean, standard error) of per-problem values; SE = sample std (ddof=1) / sqrt(len).

    The SE is 0.0 for a single value; an empty sequence is an error.
    """
    m = len(values)
    if m == 0:
        raise ValueError("no values to average")
    mean = math.fsum(values) / m
    if m == 1:
        return mean, 0.0
    var = math.fsum((v - mean) ** 2 for v in values) / (m - 1)
    return mean, math.sqrt(var / m)


def mean_pass_at_k(counts: Sequence[tuple[int, int]], k: int) -> tuple[float, float]:
    """(mean, standard error) of pass@k over problems; counts[i] = (n_i samples, c_i correct)."""
    return mean_with_se([pass_at_k(n, c, k) for n, c in counts])


def mean_accuracy(flags: Sequence[bool | int | float]) -> tuple[float, float]:
    """(mean, standard error) of per-problem correctness flags (bools or 0/1 scores)."""
    return mean_with_se([float(f) for f in flags])


def pass_summary(counts: Sequence[tuple[int, int]]) -> dict[str, float]:
    """pass@1 (mean over problems of the fraction of correct samples) and pass@n (n = fewest
    samples of any problem) with standard errors; {"pass@1": 0.0} when nothing was scored."""
    if not counts:
        return {"pass@1": 0.0}
    out: dict[str, float] = {}
    for k in sorted({1, min(n for n, _ in counts)}):
        out[f"pass@{k}"], out[f"pass@{k}_se"] = mean_pass_at_k(counts, k)
    return out
