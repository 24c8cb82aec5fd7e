"""Per cell and runtime: counts and load-time statistics, with an interval for each median."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import stats

from shlib.analysis.bootstrap import FEW_CLUSTERS, interval, jackknife, make_group, resample, stream_rng
from shlib.analysis.defaults import CONFIDENCE, DEFAULT_RESAMPLES, DEFAULT_SEED
from shlib.analysis.frames import cell_keys, ensure_prepared, with_metric


def _failure_text(statuses: pd.Series) -> str:
    counts = statuses.value_counts()
    return ", ".join(f"{k}: {v}" for k, v in counts.items())


def summarize(df: pd.DataFrame, seed: int = DEFAULT_SEED, n_resamples: int = DEFAULT_RESAMPLES,
              confidence: float = CONFIDENCE, metric: str = "load_ms") -> pd.DataFrame:
    """Per cell and runtime: counts and load-time statistics (ms) over ok trials.

    median_ci_*_ms: batch-aware interval of the median, from the cluster bootstrap that resamples whole
    batches (BCa with Student-t quantiles on G-1 df and the small-sample spread correction, as for the
    ratios; ``shlib.analysis.bootstrap``), seeded per cell. Trials of a batch share a time window, so an
    order-statistic interval that takes them as independent is too narrow (coverage 89% at batch sd 0.3).
    Cells with fewer than FEW_CLUSTERS batches get no interval and the note says "too few batches".
    Columns: runtime, runtime_kind, module, concurrency, [factors with >1 level], n, n_failed,
    failed_by_status, n_batches, median_ms, median_ci_low_ms, median_ci_high_ms, median_ci_method, q1_ms,
    q3_ms, mean_ms, sd_ms, cv, p95_ms, min_ms, max_ms, note.
    ``metric``: another measurement in place of load_ms (``frames.METRICS``: a timeline phase, cpu_ms).
    """
    work = with_metric(ensure_prepared(df), metric)
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
    intervals = {key: _median_interval(rows, seed, key, n_resamples, confidence)
                 for key, rows in ok.groupby(keys, sort=True, observed=True)}
    agg["median_ci_low_ms"] = [intervals[k][0] for k in agg.index]
    agg["median_ci_high_ms"] = [intervals[k][1] for k in agg.index]
    agg["median_ci_method"] = [intervals[k][2] for k in agg.index]
    out = out.join(agg, how="left")
    failed = work[~work["ok"]]
    fail_text = failed.groupby(keys, sort=True, observed=True)["status"].agg(_failure_text) if len(failed) else None
    out["failed_by_status"] = [fail_text.get(k, "") if fail_text is not None else "" for k in out.index]
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
        elif row["n_batches"] < FEW_CLUSTERS:
            notes.append(f"too few batches ({int(row['n_batches'])}, fewer than {FEW_CLUSTERS}) for a median interval")
        else:
            notes.append("")
        if row["n_failed"] and row["n"]:
            notes[-1] = "; ".join(x for x in (notes[-1], f"median of ok trials only; failed: {fail_text.get(key, '')}")
                                  if x)
    out["note"] = notes
    out["n_batches"] = out["n_batches"].fillna(0).astype("int64")
    columns = ["n", "n_failed", "failed_by_status", "n_batches", "median_ms", "median_ci_low_ms", "median_ci_high_ms",
               "median_ci_method", "q1_ms", "q3_ms",
               "mean_ms", "sd_ms", "cv", "p95_ms",
               "min_ms", "max_ms", "note"]
    return out.reset_index()[[*keys, *columns]]


def _median_interval(rows: pd.DataFrame, seed: int, key: tuple, n_resamples: int,
                     confidence: float) -> tuple[float, float, str]:
    group = make_group(rows["load_ms"].to_numpy(float), rows["cluster"].to_numpy(), 0)
    if group.n_clusters < FEW_CLUSTERS:
        return math.nan, math.nan, "none"
    boot, _ = resample(group, stream_rng(seed, "median", *key), n_resamples)
    jack, _ = jackknife(group)
    low, high, method, _ = interval(group.median(), boot, [jack], confidence, df=group.n_clusters - 1)
    return low, high, f"cluster bootstrap {method}"


def median_ci(values: np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """Distribution-free interval for a median from order statistics (>= confidence; independent trials)."""
    n = len(values)
    k = int(stats.binom.ppf((1 - confidence) / 2, n, 0.5)) if n else 0
    if k < 1:
        return math.nan, math.nan
    ordered = np.sort(values)
    return float(ordered[k - 1]), float(ordered[n - k])
