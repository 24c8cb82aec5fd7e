"""How load time, and the ratio to the baseline, change with the number of containers at once."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy import special, stats

from shlib.analysis.bootstrap import cluster_counts, stream_rng
from shlib.analysis.defaults import CONFIDENCE, DEFAULT_BASELINE, DEFAULT_RESAMPLES, DEFAULT_SEED
from shlib.analysis.frames import ensure_prepared, factors_present
from shlib.analysis.ratios import ratios, ratios_against, summary_across_modules
from shlib.errors import AnalysisError


def concurrency_scaling(df: pd.DataFrame, baseline: str = DEFAULT_BASELINE, ratio_table: pd.DataFrame | None = None,
                        statistic: str = "median", seed: int = DEFAULT_SEED,
                        n_resamples: int = DEFAULT_RESAMPLES, confidence: float = CONFIDENCE) -> pd.DataFrame:
    """How load time, and the ratio to the baseline, change with the number of containers at once.

    Per runtime x module x factors: least-squares slopes of load_ms (``slope_ms_per_container``) and of
    log(load_ms) (``pct_per_container`` = 100 (exp(slope) - 1)) against concurrency, with percentile
    intervals from a bootstrap that resamples whole batches within each concurrency level. Then the
    ratio to the baseline at the lowest and highest concurrency (from ``ratio_table``, computed when not
    given), each with its interval, every level's ratio (``ratio_by_level``), and the trend
    ``ratio_pct_per_container``: a weighted least-squares slope of log(ratio) on concurrency, weights
    1/se^2 read from the cell intervals. With 3+ levels a lack-of-fit test comes first: chi2 = the
    weighted residual sum of squares on (levels - 2) df. When it rejects (p < 0.05) no slope is given
    and the note says a log-linear trend does not fit (read the per-level ratios); when it does not,
    the slope's interval is widened by the overdispersion max(1, chi2/df) with Student-t quantiles on
    (levels - 2) df (Knapp & Hartung 2003). With two levels the line through them is given, unchecked.
    The load-time slopes (``pct_per_container``) are least-squares fits without such a check: read
    them with the per-level medians (``growth`` has the change of load time from the lowest level).
    Columns: runtime, runtime_kind, module, [factors], concurrency_min, concurrency_max, n_levels, n,
    slope_ms_per_container, slope_ci_low, slope_ci_high, pct_per_container, pct_ci_low, pct_ci_high,
    baseline, ratio_at_min_concurrency, ratio_at_min_ci_low, ratio_at_min_ci_high, ratio_at_max_concurrency,
    ratio_at_max_ci_low, ratio_at_max_ci_high, ratio_by_level, ratio_trend_chi2, ratio_trend_df,
    ratio_trend_p, ratio_trend_fits, ratio_pct_per_container, ratio_pct_ci_low, ratio_pct_ci_high, note.
    """
    work = ensure_prepared(df)
    factors = factors_present(work)
    keys = ["runtime", "runtime_kind", "module", *factors]
    alpha = (1 - confidence) / 2
    z = float(special.ndtri(1 - alpha))
    if ratio_table is None:
        try:
            ratio_table = ratios(work, baseline=baseline, seed=seed, n_resamples=n_resamples, confidence=confidence)
        except AnalysisError:
            ratio_table = None
    records = []
    for key, rows in work[work["ok"]].groupby(keys, sort=True, observed=True):
        desc = dict(zip(keys, key, strict=True))
        levels = np.sort(rows["concurrency"].unique())
        record = {**desc, "concurrency_min": int(levels.min()), "concurrency_max": int(levels.max()),
                  "n_levels": len(levels), "n": len(rows), "slope_ms_per_container": math.nan,
                  "slope_ci_low": math.nan, "slope_ci_high": math.nan, "pct_per_container": math.nan,
                  "pct_ci_low": math.nan, "pct_ci_high": math.nan}
        notes = []
        if len(levels) < 2:
            notes.append(f"one concurrency level ({levels[0]}): no slope")
        else:
            rng = stream_rng(seed, "scaling", *key)
            sums = np.zeros((n_resamples, 5))  # n, sum x, sum x^2, sum y (ms), sum x y, per resample
            sums_log = np.zeros((n_resamples, 2))  # sum log y, sum x log y
            point = np.zeros(5)
            point_log = np.zeros(2)
            positive = bool((rows["load_ms"] > 0).all())
            conc = rows["concurrency"].to_numpy()
            y_ms = rows["load_ms"].to_numpy()
            log_y = np.log(np.clip(y_ms, 1e-300, None))
            clusters = rows["cluster"].to_numpy()
            for level in levels:
                at = conc == level
                _, unit = np.unique(clusters[at], return_inverse=True)
                cluster_sums = np.column_stack([np.bincount(unit), np.bincount(unit, weights=y_ms[at]),
                                                np.bincount(unit, weights=log_y[at])]).astype(float)
                counts = cluster_counts(rng, len(cluster_sums), n_resamples).astype(float)
                drawn = counts @ cluster_sums
                c = float(level)
                sums += np.column_stack([drawn[:, 0], c * drawn[:, 0], c * c * drawn[:, 0], drawn[:, 1],
                                         c * drawn[:, 1]])
                sums_log += np.column_stack([drawn[:, 2], c * drawn[:, 2]])
                tot = cluster_sums.sum(axis=0)
                point += [tot[0], c * tot[0], c * c * tot[0], tot[1], c * tot[1]]
                point_log += [tot[2], c * tot[2]]
            slope, boot = _ols_slope(point, point[3], point[4]), _ols_slope(sums.T, sums[:, 3], sums[:, 4])
            lo, hi = np.quantile(boot, [alpha, 1 - alpha])
            record.update(slope_ms_per_container=slope, slope_ci_low=lo, slope_ci_high=hi)
            if positive:
                slope_log = _ols_slope(point, point_log[0], point_log[1])
                boot_log = _ols_slope(sums.T, sums_log[:, 0], sums_log[:, 1])
                lo, hi = np.quantile(boot_log, [alpha, 1 - alpha])
                record.update(pct_per_container=100 * math.expm1(slope_log), pct_ci_low=100 * math.expm1(lo),
                              pct_ci_high=100 * math.expm1(hi))
            else:
                notes.append("a load_ms <= 0: no log-scale slope")
        record.update(_ratio_trend(ratio_table, desc, factors, statistic, z, notes))
        record["note"] = "; ".join(notes)
        records.append(record)
    return pd.DataFrame.from_records(records)


def _ols_slope(s: np.ndarray, sum_y: np.ndarray | float, sum_xy: np.ndarray | float) -> np.ndarray | float:
    n, sx, sxx = s[0], s[1], s[2]
    with np.errstate(divide="ignore", invalid="ignore"):
        return (n * sum_xy - sx * sum_y) / (n * sxx - sx * sx)


def _ratio_trend(ratio_table: pd.DataFrame | None, desc: dict, factors: list[str], statistic: str, z: float,
                 notes: list[str]) -> dict:
    out = {"baseline": None, "ratio_at_min_concurrency": math.nan, "ratio_at_min_ci_low": math.nan,
           "ratio_at_min_ci_high": math.nan, "ratio_at_max_concurrency": math.nan, "ratio_at_max_ci_low": math.nan,
           "ratio_at_max_ci_high": math.nan, "ratio_by_level": "", "ratio_trend_chi2": math.nan,
           "ratio_trend_df": 0, "ratio_trend_p": math.nan, "ratio_trend_fits": None,
           "ratio_pct_per_container": math.nan, "ratio_pct_ci_low": math.nan, "ratio_pct_ci_high": math.nan}
    if ratio_table is None or len(ratio_table) == 0:
        notes.append("no ratio table (baseline absent or alone)")
        return out
    out["baseline"] = str(ratio_table["baseline"].iloc[0])
    if desc["runtime"] == out["baseline"]:
        notes.append("baseline")
        return out
    mask = (ratio_table["runtime"] == desc["runtime"]) & (ratio_table["module"] == desc["module"]) & (
        ratio_table["statistic"] == statistic)
    for f in factors:
        if f in ratio_table.columns:
            mask &= ratio_table[f] == desc[f]
    rows = ratio_table[mask & np.isfinite(ratio_table["ratio"].astype(float))].sort_values("concurrency")
    if len(rows) == 0:
        notes.append("no ratio to the baseline")
        return out
    first, last = rows.iloc[0], rows.iloc[-1]
    out.update(ratio_at_min_concurrency=float(first["ratio"]), ratio_at_min_ci_low=float(first["ci_low"]),
               ratio_at_min_ci_high=float(first["ci_high"]), ratio_at_max_concurrency=float(last["ratio"]),
               ratio_at_max_ci_low=float(last["ci_low"]), ratio_at_max_ci_high=float(last["ci_high"]))
    out["ratio_by_level"] = "; ".join(f"{int(r.concurrency)}: {_interval(r.ratio, r.ci_low, r.ci_high)}"
                                      for r in rows.itertuples())
    rows = rows[np.isfinite(rows["ci_low"].astype(float)) & (rows["ci_high"] > rows["ci_low"])
                & (rows["ci_low"] > 0) & np.isfinite(rows["ci_high"].astype(float))]
    if rows["concurrency"].nunique() < 2:
        return out
    x = rows["concurrency"].to_numpy(float)
    y = np.log(rows["ratio"].to_numpy(float))
    se = (np.log(rows["ci_high"].to_numpy(float)) - np.log(rows["ci_low"].to_numpy(float))) / (2 * z)
    w = 1 / se ** 2
    xm = (w * x).sum() / w.sum()
    sxx = (w * (x - xm) ** 2).sum()
    ym = (w * y).sum() / w.sum()
    slope = (w * (x - xm) * (y - ym)).sum() / sxx
    df = len(x) - 2
    if df == 0:
        half = z / math.sqrt(sxx)
        notes.append("two concurrency levels: the line through them, no lack-of-fit check")
    else:
        chi2 = float((w * (y - ym - slope * (x - xm)) ** 2).sum())
        p = float(stats.chi2.sf(chi2, df))
        out.update(ratio_trend_chi2=chi2, ratio_trend_df=df, ratio_trend_p=p, ratio_trend_fits=p >= 0.05)
        if p < 0.05:
            notes.append(f"a log-linear trend of the ratio does not fit (chi2={chi2:.1f} on {df} df, p={p:.2g}): "
                         "no slope; read ratio_by_level")
            return out
        phi = max(1.0, chi2 / df)
        tq = float(stats.t.ppf(0.5 + (1 - 2 * float(special.ndtr(-z))) / 2, df))
        half = tq * math.sqrt(phi / sxx)
        if phi > 1:
            notes.append(f"slope interval widened by the overdispersion {phi:.2f} (Student-t on {df} df)")
    out.update(ratio_pct_per_container=100 * math.expm1(slope), ratio_pct_ci_low=100 * math.expm1(slope - half),
               ratio_pct_ci_high=100 * math.expm1(slope + half))
    return out


def _interval(value: float, low: float, high: float) -> str:
    if not (np.isfinite(low) and np.isfinite(high)):
        return f"{value:.2f}x (no interval)"
    return f"{value:.2f}x [{low:.2f}, {high:.2f}]"


def load_time_growth(df: pd.DataFrame, seed: int = DEFAULT_SEED, n_resamples: int = DEFAULT_RESAMPLES,
                     confidence: float = CONFIDENCE) -> pd.DataFrame:
    """How much each runtime's load time grows from its lowest concurrency level to each higher one.

    Per runtime and level: the ratio of medians (level / lowest level) per module with its cluster-bootstrap
    interval, combined over modules by a geometric mean with its interval (``summary_across_modules``).
    Columns: runtime, concurrency, from_concurrency, [factors], n_modules, ratio, ci_low, ci_high, note.
    """
    work = ensure_prepared(df)
    out = []
    for runtime, rows in work.groupby("runtime", sort=True):
        levels = sorted(rows["concurrency"].unique())
        if len(levels) < 2:
            continue
        relabelled = rows.assign(runtime=[f"{runtime}@{c}" for c in rows["concurrency"]], concurrency=0)
        table = ratios_against(relabelled, [f"{runtime}@{levels[0]}"], seed=seed, n_resamples=n_resamples,
                               confidence=confidence)
        summary = summary_across_modules(table[table["statistic"] == "median"], confidence=confidence)
        for r in summary.to_dict("records"):
            level = int(str(r["runtime"]).rsplit("@", 1)[1])
            factors = {f: r[f] for f in factors_present(work) if f in r}
            out.append({"runtime": runtime, "concurrency": level, "from_concurrency": int(levels[0]), **factors,
                        "n_modules": r["n_modules"], "ratio": r["gmean_ratio"], "ci_low": r["ci_low"],
                        "ci_high": r["ci_high"], "note": r["note"]})
    columns = ["runtime", "concurrency", "from_concurrency", *factors_present(work), "n_modules", "ratio", "ci_low",
               "ci_high", "note"]
    return pd.DataFrame(out, columns=columns).sort_values(["runtime", "concurrency"]).reset_index(drop=True)
