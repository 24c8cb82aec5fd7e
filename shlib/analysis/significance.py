"""Tests between runtimes per cell, with effect sizes, Holm-corrected across the family."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
from scipy import stats

from shlib.analysis.frames import cell_keys, ensure_prepared


def holm(p_values: np.ndarray) -> np.ndarray:
    """Holm step-down adjusted p-values (NaN stays NaN and is not counted in the family)."""
    p = np.asarray(p_values, dtype=float)
    out = np.full_like(p, np.nan)
    finite = np.flatnonzero(np.isfinite(p))
    m = len(finite)
    if m == 0:
        return out
    order = finite[np.argsort(p[finite], kind="stable")]
    adjusted = np.maximum.accumulate(p[order] * (m - np.arange(m)))
    out[order] = np.minimum(adjusted, 1.0)
    return out


def pairwise_tests(df: pd.DataFrame, alpha: float = 0.05) -> pd.DataFrame:
    """Per cell, every pair of runtimes: two-sided Mann-Whitney U, Holm-corrected across the whole table.

    Effect sizes next to each p-value: ``cliffs_delta`` = P(a > b) - P(a < b) and ``p_a_slower``
    = P(a > b) + P(a = b)/2 (common-language effect size), both over trials. The test treats trials as
    independent; when trials share batches (``clustered``) correlated trials make p-values too small
    and the note says so.
    Columns: module, concurrency, [factors], runtime_a, runtime_b, n_a, n_b, median_a_ms, median_b_ms,
    u_statistic, p_value, p_holm, significant, cliffs_delta, p_a_slower, clustered, note.
    """
    work = ensure_prepared(df)
    keys = cell_keys(work)
    records = []
    for key, cell in work.groupby(keys, sort=True, observed=True):
        desc = dict(zip(keys, key if isinstance(key, tuple) else (key,), strict=True))
        samples = {}
        clustered = {}
        for runtime, rows in cell.groupby("runtime", sort=True):
            ok = rows[rows["ok"]]
            samples[runtime] = ok["load_ms"].to_numpy()
            clustered[runtime] = bool(len(ok) and ok["cluster"].value_counts().max() > 1)
        for a, b in itertools.combinations(sorted(samples), 2):
            xa, xb = samples[a], samples[b]
            record = {**desc, "runtime_a": a, "runtime_b": b, "n_a": len(xa), "n_b": len(xb),
                      "median_a_ms": float(np.median(xa)) if len(xa) else math.nan,
                      "median_b_ms": float(np.median(xb)) if len(xb) else math.nan,
                      "u_statistic": math.nan, "p_value": math.nan, "cliffs_delta": math.nan,
                      "p_a_slower": math.nan, "clustered": clustered[a] or clustered[b], "note": ""}
            if len(xa) == 0 or len(xb) == 0:
                empty = a if len(xa) == 0 else b
                record["note"] = f"{empty} has no ok trials in this cell: no test"
            elif np.ptp(np.concatenate([xa, xb])) == 0:
                record.update(u_statistic=len(xa) * len(xb) / 2, p_value=1.0, cliffs_delta=0.0, p_a_slower=0.5,
                              note="all values equal")
            else:
                res = stats.mannwhitneyu(xa, xb, alternative="two-sided")
                u = float(res.statistic)
                record.update(u_statistic=u, p_value=float(res.pvalue), p_a_slower=u / (len(xa) * len(xb)),
                              cliffs_delta=2 * u / (len(xa) * len(xb)) - 1)
                if record["clustered"]:
                    record["note"] = "trials share batches: p-value assumes independence (too small if correlated)"
                if min(len(xa), len(xb)) < 4:
                    record["note"] = "; ".join(x for x in (record["note"], "fewer than 4 trials: no test can reach "
                                                           "p < 0.05") if x)
            records.append(record)
    columns = [*keys, "runtime_a", "runtime_b", "n_a", "n_b", "median_a_ms", "median_b_ms", "u_statistic",
               "p_value", "p_holm", "significant", "cliffs_delta", "p_a_slower", "clustered", "note"]
    table = pd.DataFrame.from_records(records, columns=[c for c in columns if c not in ("p_holm", "significant")])
    table["p_holm"] = holm(table["p_value"].to_numpy(float)) if len(table) else []
    table["significant"] = table["p_holm"] < alpha
    return table[columns]
