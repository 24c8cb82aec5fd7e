"""Tests between runtimes per cell, with effect sizes, Holm-corrected across the family."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pandas as pd
from scipy import stats

from shlib.analysis.bootstrap import stream_rng
from shlib.analysis.defaults import DEFAULT_SEED
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


def baseline_tests(df: pd.DataFrame, baseline: str, ratio_summary: pd.DataFrame | None = None,
                   seed: int = DEFAULT_SEED, n_permutations: int = 9999, alpha: float = 0.05) -> pd.DataFrame:
    """Each runtime against the baseline, per concurrency level (and other factors), over modules, on batches.

    The unit is the batch (trials of a batch share a time window, so they are not independent): each
    batch is summarized by the log of its median load time. The statistic is the mean over modules of
    (mean log batch median of the runtime - that of the baseline); its null distribution comes from a
    permutation test that shuffles whole batches between the two runtimes within each stratum: the
    module and repetition (``rep``) when both runtimes have batches in every such stratum, else the
    module. The runner visits the cells of each repetition in a fresh random order (``shlib.spec.plan``),
    so shuffling within repetitions is the randomization test of the design, and it pairs batches run
    close in time (drift cancels). p = (1 + #{|T*| >= |T|}) / (1 + n_permutations), seeded. Holm's
    correction runs over this family only (runtimes x concurrency levels x factors), not over every pair
    of runtimes in every cell.
    The effect size beside each p-value is the ratio a reader should quote: the geometric mean over
    modules of the ratio of medians with its interval (from ``ratio_summary`` when given).
    Columns: runtime, baseline, concurrency, [factors], n_modules, n_batches, n_batches_baseline, strata,
    n_permutations, p_value, p_holm, significant, ratio, ci_low, ci_high, note.
    """
    work = ensure_prepared(df)
    factors = [k for k in cell_keys(work) if k not in ("module", "concurrency")]
    group_keys = ["concurrency", *factors]
    ok = work[work["ok"]]
    records = []
    base_rows = ok[ok["runtime"] == baseline]
    for runtime in sorted(set(ok["runtime"]) - {baseline}):
        rows = ok[ok["runtime"] == runtime]
        for key, part in rows.groupby(group_keys, sort=True, observed=True):
            key = key if isinstance(key, tuple) else (key,)
            desc = dict(zip(group_keys, key, strict=True))
            mask = np.ones(len(base_rows), dtype=bool)
            for k, v in desc.items():
                mask &= (base_rows[k] == v).to_numpy()
            record = {"runtime": runtime, "baseline": baseline, **desc, **_permutation_test(
                part, base_rows[mask], seed, n_permutations, (runtime, baseline, *key))}
            record.update(_effect(ratio_summary, runtime, baseline, desc))
            records.append(record)
    columns = ["runtime", "baseline", *group_keys, "n_modules", "n_batches", "n_batches_baseline", "strata",
               "n_permutations", "p_value", "p_holm", "significant", "ratio", "ci_low", "ci_high", "note"]
    table = pd.DataFrame.from_records(records, columns=[c for c in columns if c not in ("p_holm", "significant")])
    table["p_holm"] = holm(table["p_value"].to_numpy(float)) if len(table) else []
    table["significant"] = table["p_holm"] < alpha
    holds_one = (table["ci_low"] <= 1) & (table["ci_high"] >= 1)
    disagree = (table["significant"] & holds_one) | (~table["significant"] & ~holds_one & table["ci_low"].notna())
    table.loc[disagree, "note"] = [
        "; ".join(x for x in (n, "the batch test (paired by repetition) and the ratio's interval (unpaired) "
                                 "disagree: read both") if x) for n in table.loc[disagree, "note"]]
    return table[columns]


def _batch_logs(rows: pd.DataFrame) -> pd.DataFrame:
    keys = ["module", "cluster"] + (["rep"] if "rep" in rows.columns else [])
    out = rows.groupby(keys, sort=True, observed=True)["load_ms"].median().reset_index()
    out["value"] = np.log(out["load_ms"].to_numpy(float))
    return out


def _permutation_test(rows: pd.DataFrame, base: pd.DataFrame, seed: int, n_permutations: int,
                      key: tuple) -> dict:
    out = {"n_modules": 0, "n_batches": 0, "n_batches_baseline": 0, "strata": "", "n_permutations": n_permutations,
           "p_value": math.nan, "note": ""}
    a, b = _batch_logs(rows), _batch_logs(base)
    modules = sorted(set(a["module"]) & set(b["module"]))
    if not modules:
        out["note"] = "no module with ok trials of both runtimes"
        return out
    a, b = a[a["module"].isin(modules)], b[b["module"].isin(modules)]
    out.update(n_modules=len(modules), n_batches=len(a), n_batches_baseline=len(b))
    values = np.concatenate([a["value"].to_numpy(), b["value"].to_numpy()])
    if not np.isfinite(values).all():
        out["note"] = "a load_ms <= 0: no log-scale test"
        return out
    label = np.concatenate([np.ones(len(a), bool), np.zeros(len(b), bool)])
    module = np.concatenate([a["module"].to_numpy(), b["module"].to_numpy()]).astype(str)
    stratum = module.copy()
    out["strata"] = "module"
    if "rep" in a.columns and "rep" in b.columns:
        rep = np.concatenate([a["rep"].to_numpy(), b["rep"].to_numpy()]).astype(str)
        by_rep = np.char.add(np.char.add(module, "|"), rep)
        both = {s for s in set(by_rep) if label[by_rep == s].any() and (~label[by_rep == s]).any()}
        if both == set(by_rep):
            stratum, out["strata"] = by_rep, "module x repetition"
    # weights: +1/(M n_a,m) for the runtime's batches, -1/(M n_b,m) for the baseline's, per module m
    n_a = {m: int((label & (module == m)).sum()) for m in modules}
    n_b = {m: int((~label & (module == m)).sum()) for m in modules}
    pos = np.array([1 / (len(modules) * n_a[m]) for m in module])
    neg = np.array([-1 / (len(modules) * n_b[m]) for m in module])
    observed = float(np.where(label, pos, neg) @ values)
    if np.ptp(values) == 0:
        out.update(p_value=1.0, note="all batch medians equal")
        return out
    rng = stream_rng(seed, "permutation", *key)
    codes = np.unique(stratum, return_inverse=True)[1]
    order = np.argsort(codes, kind="stable")
    labels_sorted = label[order]
    perm = np.argsort(codes[None, :] + rng.random((n_permutations, len(values))), axis=1)
    shuffled = np.empty((n_permutations, len(values)), dtype=bool)
    np.put_along_axis(shuffled, perm, np.broadcast_to(labels_sorted, perm.shape), axis=1)
    stats_perm = np.where(shuffled, pos, neg) @ values
    extreme = np.count_nonzero(np.abs(stats_perm) >= abs(observed) - 1e-12)
    out["p_value"] = (1 + extreme) / (1 + n_permutations)
    distinct = _distinct_permutations(codes, label)
    if distinct < 1 / 0.05:
        out["note"] = (f"only {distinct:.0f} distinct rearrangements of batches: p cannot fall below "
                       f"{2 / distinct:.2g}")
    return out


def _distinct_permutations(codes: np.ndarray, label: np.ndarray) -> float:
    """How many distinct rearrangements of the labels within strata exist (inf beyond a float's range)."""
    total = 1
    for c in np.unique(codes):
        inside = label[codes == c]
        total *= math.comb(len(inside), int(inside.sum()))
    return float(total) if total.bit_length() < 1000 else math.inf


def _effect(ratio_summary: pd.DataFrame | None, runtime: str, baseline: str, desc: dict) -> dict:
    out = {"ratio": math.nan, "ci_low": math.nan, "ci_high": math.nan}
    if ratio_summary is None or len(ratio_summary) == 0:
        return out
    mask = (ratio_summary["runtime"] == runtime) & (ratio_summary["baseline"] == baseline)
    if "statistic" in ratio_summary.columns:
        mask &= ratio_summary["statistic"] == "median"
    for k, v in desc.items():
        if k in ratio_summary.columns:
            mask &= ratio_summary[k] == v
    rows = ratio_summary[mask]
    if len(rows) == 1:
        r = rows.iloc[0]
        out.update(ratio=float(r["gmean_ratio"]), ci_low=float(r["ci_low"]), ci_high=float(r["ci_high"]))
    return out
