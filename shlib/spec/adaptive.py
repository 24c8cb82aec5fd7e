"""How precisely a cell's median is known: the stopping rule of the adaptive mode.

The unit is the batch (processes of a batch share a time window and are correlated), so a
cell's precision is judged from its batch medians, in the order they were measured.

The rule (``cell_done``): a cell is finished when the predicted 95% half-width of its median,
on the log scale, is at most ``cell_target(ratio_target)`` = asinh(ratio_target) / sqrt(2), so
that a ratio of two finished cells has a relative half-width of about ``ratio_target`` (errors of
independent cells add in quadrature; a log half-width h is a relative half-width sinh(h)).
The predicted half-width is

    t(0.975, G-1) * 1.2533 * sigma_up / sqrt(G)

for G batch medians, with sigma_up a one-sided 90% upper confidence bound for the standard
deviation of their logs (chi-square) and 1.2533 = sqrt(pi/2) the median's standard error relative to
the mean's under normality.

Why not simply stop when the cell's interval is narrow enough? Stopping on the observed spread
selects samples whose spread is low by chance, and the interval computed afterwards from the same
data is then too narrow (optional stopping): with the order-statistic interval of the batch
medians as the rule, simulated 95% ratio intervals (``shlib.analysis.ratios.ratios``) covered the true ratio
only 91.6-93.5% of the time. Judging the spread by its upper bound makes a lucky early stop
unlikely (the bound is loose for few batches and tight for many); simulated coverage is then
93-95% (see tests/test_adaptive.py and ``python -m benchmarks.run``), and the ratio intervals
meet the target more often than under the order-statistic rule, which stopped short of it about
a quarter of the time.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

#: The median's standard error over the mean's for normal data (asymptotic): sqrt(pi / 2).
MEDIAN_SE_FACTOR = math.sqrt(math.pi / 2)
#: One-sided confidence of the upper bound on the spread of log batch medians.
SPREAD_BOUND = 0.90
#: Fewest batches the rule judges (fewer cannot bound the spread).
MIN_BATCHES = 3


def predicted_halfwidth(batch_medians: Sequence[float], confidence: float = 0.95,
                        spread_bound: float = SPREAD_BOUND) -> float:
    """Conservative half-width of the cell median's interval on the log scale (inf below MIN_BATCHES).

    ``batch_medians``: the cell's batch medians of load_ms (> 0; others are ignored).
    """
    from scipy.stats import chi2, t  # only when the rule runs: the collection path starts without scipy

    logs = [math.log(v) for v in batch_medians if math.isfinite(v) and v > 0]
    g = len(logs)
    if g < MIN_BATCHES:
        return math.inf
    sd = statistics.stdev(logs)
    sd_up = sd * math.sqrt((g - 1) / chi2.ppf(1 - spread_bound, g - 1))
    return float(t.ppf(0.5 + confidence / 2, g - 1)) * MEDIAN_SE_FACTOR * sd_up / math.sqrt(g)


def cell_target(ratio_target: float) -> float:
    """Per-cell log half-width so that a ratio of two independent cells meets ``ratio_target``.

    ``ratio_target`` is a relative half-width (0.05: the ratio known to +-5%). Log half-widths of
    independent cells add in quadrature: two cells at asinh(t)/sqrt(2) give a ratio interval
    [r e^-h, r e^h] whose relative half-width sinh(h) is t.
    """
    return math.asinh(ratio_target) / math.sqrt(2)


def cell_done(batch_medians: Sequence[float], ratio_target: float) -> bool:
    """True when the cell's median is known well enough for ratios to ``ratio_target``."""
    return predicted_halfwidth(batch_medians) <= cell_target(ratio_target)


def stopping_rep(batch_medians: Sequence[float], ratio_target: float, min_reps: int, max_reps: int) -> int:
    """How many batches the adaptive mode runs for a cell whose batch medians come in this order.

    The runner looks after every repetition from ``min_reps`` on; ``max_reps`` caps it. Used to
    replay the rule on simulated or recorded data (every batch median given must be from one cell).
    """
    for reps in range(min_reps, min(max_reps, len(batch_medians)) + 1):
        if cell_done(batch_medians[:reps], ratio_target):
            return reps
    return max_reps
