"""How precisely a cell's median is known: the stopping rule of the adaptive mode.

The unit is the batch (processes of a batch share a time window and are correlated), so a
cell's precision is that of the median of its batch medians, with a distribution-free
interval from order statistics (no normality assumed).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from scipy.stats import binom


def median_ci(values: Sequence[float], confidence: float = 0.95) -> tuple[float, float, float]:
    """(median, low, high): order-statistic interval with coverage >= ``confidence``.

    With too few values for that coverage the interval is infinite.
    """
    xs = sorted(v for v in values if math.isfinite(v))
    n = len(xs)
    if n == 0:
        return math.nan, -math.inf, math.inf
    median = (xs[(n - 1) // 2] + xs[n // 2]) / 2
    alpha = 1 - confidence
    # largest k with P(Binom(n, 1/2) <= k - 1) <= alpha/2: interval [x_(k), x_(n-k+1)]
    k = int(binom.ppf(alpha / 2, n, 0.5))
    if k < 1 or binom.cdf(k - 1, n, 0.5) > alpha / 2:
        k -= 1
    if k < 1:
        return median, -math.inf, math.inf
    return median, xs[k - 1], xs[n - k]


def relative_halfwidth(values: Sequence[float], confidence: float = 0.95) -> float:
    """Half the interval's width over the median (inf when it cannot be bounded yet)."""
    median, low, high = median_ci(values, confidence)
    if not math.isfinite(low) or not math.isfinite(high) or median <= 0:
        return math.inf
    return (high - low) / 2 / median


def cell_target(ratio_target: float) -> float:
    """Per-cell target so that a ratio of two independent cells meets ``ratio_target``.

    Relative errors of a ratio add in quadrature: two cells at t/sqrt(2) give about t.
    """
    return ratio_target / math.sqrt(2)
