"""Per cell and runtime: counts and load-time statistics, with an interval for each median."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

from shlib.analysis.defaults import CONFIDENCE
from shlib.analysis.frames import cell_keys, ensure_prepared


def _failure_text(statuses: pd.Series) -> str:
    counts = statuses.value_counts()
    return ", ".join(f"{k}: {v}" for k, v in counts.items())


def summarize(df: pd.DataFrame) -> pd.DataFrame:
    """Per cell and runtime: counts and load-time statistics (ms) over ok trials.

    median_ci_*_ms: distribution-free 95% interval of the median from order statistics (it assumes
    independent trials; use ``ratios`` for batch-aware intervals).
    Columns: runtime, runtime_kind, module, concurrency, [factors with >1 level], n, n_failed,
    n_batches, median_ms, median_ci_low_ms, median_ci_high_ms, q1_ms, q3_ms, mean_ms, sd_ms, cv, p95_ms,
    min_ms, max_ms, note.
    """
    work = ensure_prepared(df)
    keys = ["runtime", "runtime_kind", *cell_keys(work)]
    grouped = work.groupby(keys, sort=True, observed=True)
    n_ok = grouped["ok"].sum().astype("int64")
    out = pd.DataFrame({"n": n_ok, "n_failed": grouped["ok"].size() - n_ok})
    ok = work[work["ok"]]
    load = ok.groupby(keys, sort=True, observed=True)["load_ms"]
    agg = load.agg(median_ms="median", mean_ms="mean", sd_ms="std", min_ms="min", max_ms="max")
    quant = load.quantile([0.25, 0.75, 0.95]).unstack()
    quant.columns = ["q1_ms", "q3_ms", "p95_ms"]
    agg = agg.join(quant)
    agg["cv"] = agg["sd_ms"] / agg["mean_ms"]
    agg["n_batches"] = ok.groupby(keys, sort=True, observed=True)["cluster"].nunique()
    ci = load.agg(lambda x: median_ci(x.to_numpy()))
    agg["median_ci_low_ms"] = [c[0] for c in ci]
    agg["median_ci_high_ms"] = [c[1] for c in ci]
    out = out.join(agg, how="left")
    failed = work[~work["ok"]]
    fail_text = failed.groupby(keys, sort=True, observed=True)["status"].agg(_failure_text) if len(failed) else None
    notes = []
    repeated_native = bool(work["repeated"].any())
    for key, row in out.iterrows():
        if row["n"] == 0:
            why = fail_text.get(key, "") if fail_text is not None else ""
            notes.append(f"no ok trials ({int(row['n_failed'])} failed: {why})")
        elif row["n"] == 1:
            notes.append("one ok trial: sd, cv, median interval undefined")
        elif key[1] == "native" and repeated_native:
            notes.append("native (no container) repeated in every mount cell")
        elif row["n"] < 6:
            notes.append(f"{int(row['n'])} ok trials: too few for a 95% median interval")
        else:
            notes.append("")
    out["note"] = notes
    out["n_batches"] = out["n_batches"].fillna(0).astype("int64")
    columns = ["n", "n_failed", "n_batches", "median_ms", "median_ci_low_ms", "median_ci_high_ms", "q1_ms", "q3_ms",
               "mean_ms", "sd_ms", "cv", "p95_ms",
               "min_ms", "max_ms", "note"]
    return out.reset_index()[[*keys, *columns]]


def median_ci(values: np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Distribution-free interval for a median from order statistics (>= confidence; independent trials)."""
    n = len(values)
    k = int(stats.binom.ppf((1 - confidence) / 2, n, 0.5)) if n else 0
    if k < 1:
        return math.nan, math.nan
    ordered = np.sort(values)
    return float(ordered[k - 1]), float(ordered[n - k])
