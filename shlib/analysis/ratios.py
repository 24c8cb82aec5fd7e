"""Ratios of each runtime to a baseline per cell, and their geometric mean across modules.

Intervals come from the cluster bootstrap (``shlib.analysis.bootstrap``): whole batches are
resampled within each runtime, the two runtimes independently.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import special, stats

from shlib.analysis.bootstrap import (
    FEW_CLUSTERS,
    Group,
    interval,
    jackknife,
    make_group,
    resample,
    stream_rng,
    welch_df,
)
from shlib.analysis.defaults import CONFIDENCE, DEFAULT_BASELINE, DEFAULT_RESAMPLES, DEFAULT_SEED
from shlib.analysis.frames import FACTORS, cell_keys, ensure_prepared, with_metric
from shlib.errors import AnalysisError

STATISTICS = ("median", "gmean")


def ratios(df: pd.DataFrame, baseline: str = DEFAULT_BASELINE, seed: int = DEFAULT_SEED,
           n_resamples: int = DEFAULT_RESAMPLES, confidence: float = CONFIDENCE,
           deadline_ms: float | None = None, metric: str = "load_ms") -> pd.DataFrame:
    """Ratio of each runtime to ``baseline`` per cell, with a seeded cluster-bootstrap interval.

    Two statistics per cell (tidy: one row each): ``median`` (ratio of medians) and ``gmean``
    (ratio of geometric means). Batches are resampled whole within each runtime (see module doc).
    Columns: runtime, runtime_kind, baseline, baseline_kind, module, concurrency, [factors], statistic,
    ratio, ci_low, ci_high, ci_method (bca | percentile | none), df (Welch-Satterthwaite degrees of freedom of the
    interval's t quantiles), confidence, n, n_baseline, n_batches,
    n_batches_baseline, clustered, batches_span_modules, n_resamples, seed, note.
    Failed trials are carried, never dropped silently: n_failed / n_failed_baseline and failed_by_status /
    failed_by_status_baseline ("timeout: 3, error: 1") per row, and a note when the two runtimes fail
    at different rates (with Fisher's exact p). Timeouts are right-censored load times: while fewer than
    half of a runtime's trials in the cell time out, they enter its median at ``deadline_ms`` (the run's
    timeout; +inf when unknown, which can leave an interval unbounded above) and ``n_censored`` counts
    them; the geometric mean, which censored values would bias, is then not given. From half on the
    median itself is censored and the row has no ratio, saying why. Other failures are excluded.
    ``metric``: the measurement to ratio (``frames.METRICS``: load_ms, cpu_ms, proc_cpu_ms, ...); trials
    without it are left out (``frames.with_metric``). Timeouts are censored only for load_ms.
    Raises AnalysisError when the baseline is absent (naming the runtimes present).
    """
    return ratios_against(df, [baseline], seed=seed, n_resamples=n_resamples, confidence=confidence,
                          deadline_ms=deadline_ms, metric=metric)


def ratios_against(df: pd.DataFrame, baselines: Sequence[str], seed: int = DEFAULT_SEED,
                   n_resamples: int = DEFAULT_RESAMPLES, confidence: float = CONFIDENCE,
                   deadline_ms: float | None = None, metric: str = "load_ms") -> pd.DataFrame:
    """``ratios`` for several baselines in one table; each runtime's resamples are drawn once and shared.

    A runtime's draws depend only on (seed, cell, runtime), so every interval is the one ``ratios``
    gives for that baseline alone.
    """
    if n_resamples < 100:
        raise AnalysisError(f"n_resamples={n_resamples} is too few for a 95% interval; use at least 1000")
    work = with_metric(ensure_prepared(df), metric)
    if metric != "load_ms":
        deadline_ms = None  # a timeout censors the load time, not the CPU spent or a phase
    present = sorted(work["runtime"].unique())
    for baseline in baselines:
        if baseline not in present:
            if metric != "load_ms":
                raise AnalysisError(f"baseline runtime {baseline!r} has no {metric} values in the results; runtimes "
                                    f"with them: {', '.join(present) or 'none'}")
            raise AnalysisError(f"baseline runtime {baseline!r} is not in the results; runtimes present: "
                                f"{', '.join(present)}. Pass one of them as baseline")
    keys = cell_keys(work)
    kind_of = work.groupby("runtime")["runtime_kind"].first().to_dict()
    spans = work[work["ok"]].groupby("cluster")["module"].nunique()
    spanning = set(spans.index[spans > 1])

    groups: dict[tuple, dict[str, Group]] = {}
    failures: dict[tuple, dict[str, Failures]] = {}
    spans_modules: dict[tuple, bool] = {}
    censor_at = float(deadline_ms) if deadline_ms is not None and deadline_ms > 0 else math.inf
    for key, cell in work.groupby(keys, sort=True, observed=True):
        key = key if isinstance(key, tuple) else (key,)
        groups[key], failures[key] = {}, {}
        spans_modules[key] = bool(spanning) and bool(set(cell.loc[cell["ok"], "cluster"]) & spanning)
        for runtime, rows in cell.groupby("runtime", sort=True):
            ok = rows["ok"].to_numpy()
            info = _failures(rows)
            info.censored = info.censored and metric == "load_ms"
            failures[key][runtime] = info
            values, clusters = rows["load_ms"].to_numpy()[ok], rows["cluster"].to_numpy()[ok]
            if info.censored:
                timeout = (rows["status"] == "timeout").to_numpy()
                values = np.concatenate([values, np.full(int(timeout.sum()), censor_at)])
                clusters = np.concatenate([clusters, rows["cluster"].to_numpy()[timeout]])
            groups[key][runtime] = make_group(values, clusters, int((~ok).sum()))

    records = []
    all_draws: dict[tuple, dict[str, tuple]] = {key: {} for key in groups}
    for baseline, (key, by_runtime) in itertools.product(baselines, groups.items()):
        others = [r for r in by_runtime if r != baseline]
        if not others:
            continue
        base = by_runtime.get(baseline)
        cell_spans = spans_modules[key]
        draws = all_draws[key]
        for runtime in others:
            group = by_runtime[runtime]
            fails, fails_base = failures[key][runtime], failures[key].get(baseline, Failures())
            base_desc = dict(zip(keys, key, strict=True))
            common = {"runtime": runtime, "runtime_kind": kind_of[runtime], "baseline": baseline,
                      "baseline_kind": kind_of[baseline], **base_desc,
                      "confidence": confidence, "n": group.n, "n_baseline": base.n if base else 0,
                      "n_batches": group.n_clusters, "n_batches_baseline": base.n_clusters if base else 0,
                      "clustered": bool(group.clustered or (base is not None and base.clustered)),
                      "batches_span_modules": bool(cell_spans), "n_resamples": n_resamples, "seed": seed,
                      "n_failed": fails.n_failed, "n_failed_baseline": fails_base.n_failed,
                      "failed_by_status": fails.by_status, "failed_by_status_baseline": fails_base.by_status,
                      "n_censored": fails.n_timeout if fails.censored else 0,
                      "n_censored_baseline": fails_base.n_timeout if fails_base.censored else 0}
            fail_note = _failure_note(runtime, fails, baseline, fails_base)
            why = _no_ratio_reason(runtime, group, baseline, base) or _censored_reason(
                runtime, fails, baseline, fails_base)
            if why:
                for statistic in STATISTICS:
                    records.append({**common, "statistic": statistic, "ratio": math.nan, "ci_low": math.nan,
                                    "ci_high": math.nan, "ci_method": "none",
                                    "note": "; ".join(x for x in (why, fail_note) if x)})
                continue
            why = ""
            if why:
                for statistic in STATISTICS:
                    records.append({**common, "statistic": statistic, "ratio": math.nan, "ci_low": math.nan,
                                    "ci_high": math.nan, "ci_method": "none", "note": why})
                continue
            assert base is not None
            censored = fails.censored or fails_base.censored
            with np.errstate(invalid="ignore"):
                estimates = {"median": group.median() / base.median(),
                             "gmean": math.nan if censored else math.exp(group.log_mean() - base.log_mean())}
            few = _few_clusters_note(runtime, group, baseline, base)
            if min(group.n_clusters, base.n_clusters) < 2:
                for statistic in STATISTICS:
                    lonely = runtime if group.n_clusters < 2 else baseline
                    records.append({**common, "statistic": statistic, "ratio": estimates[statistic],
                                    "ci_low": math.nan, "ci_high": math.nan, "ci_method": "none",
                                    "note": "; ".join(x for x in (f"{lonely} has one batch/trial in this cell: "
                                                                  "no interval", fail_note) if x)})
                continue
            med_r, lm_r, jmed_r, jlm_r = _resampled(draws, group, seed, key, runtime, n_resamples)
            med_b, lm_b, jmed_b, jlm_b = _resampled(draws, base, seed, key, baseline, n_resamples)
            with np.errstate(divide="ignore", invalid="ignore"):
                boots = {"median": med_r / med_b, "gmean": np.exp(lm_r - lm_b)}
                jacks = {"median": [jmed_r / base.median(), group.median() / jmed_b],
                         "gmean": [np.exp(jlm_r - base.log_mean()), np.exp(group.log_mean() - jlm_b)]}
            if censored:
                with np.errstate(divide="ignore", invalid="ignore"):
                    df = welch_df(np.log(jmed_r), np.log(jmed_b))
            else:
                df = welch_df(jlm_r, jlm_b)
            for statistic in STATISTICS:
                theta = estimates[statistic]
                if not np.isfinite(theta):
                    undefined = ("not given: timeouts are censored load times, which would bias a geometric mean"
                                 if censored and statistic == "gmean"
                                 else "undefined: a load_ms <= 0 (geometric mean) or a zero baseline median")
                    records.append({**common, "statistic": statistic, "ratio": math.nan, "ci_low": math.nan,
                                    "ci_high": math.nan, "ci_method": "none",
                                    "note": "; ".join(x for x in (undefined, fail_note) if x)})
                    continue
                low, high, method, note = interval(theta, boots[statistic], jacks[statistic], confidence, df=df)
                cens = (f"timeouts counted at the deadline ({_censor_text(censor_at)}): "
                        f"{fails.n_timeout if fails.censored else 0} of {runtime}, "
                        f"{fails_base.n_timeout if fails_base.censored else 0} of {baseline}") if censored else ""
                records.append({**common, "statistic": statistic, "ratio": theta, "ci_low": low, "ci_high": high,
                                "ci_method": method, "df": df,
                                "note": "; ".join(x for x in (note, few, cens, fail_note) if x)})
    return pd.DataFrame.from_records(records, columns=ratio_columns(keys))


def ratio_columns(keys: Sequence[str]) -> list[str]:
    """The columns of a ratio table whose cells are ``keys`` (module, concurrency, factors)."""
    return ["runtime", "runtime_kind", "baseline", "baseline_kind", *keys, "statistic", "ratio", "ci_low", "ci_high",
            "ci_method", "df", "confidence", "n", "n_baseline", "n_batches", "n_batches_baseline", "clustered",
            "batches_span_modules", "n_failed", "n_failed_baseline", "failed_by_status", "failed_by_status_baseline",
            "n_censored", "n_censored_baseline", "n_resamples", "seed", "note"]


@dataclass
class Failures:
    """The trials of one runtime in one cell that did not give a load time, by status."""

    n_trials: int = 0     # every trial but skipped ones
    n_failed: int = 0
    n_timeout: int = 0
    by_status: str = ""
    censored: bool = False   # timeouts enter the median as censored values (fewer than half timed out)

    @property
    def rate(self) -> float:
        return self.n_failed / self.n_trials if self.n_trials else math.nan


def _failures(rows: pd.DataFrame) -> Failures:
    status = rows["status"].astype(str)
    counted = status != "skipped"
    failed = ~rows["ok"].to_numpy() & counted.to_numpy()
    counts = status[failed].value_counts()
    n_timeout = int(counts.get("timeout", 0))
    n_trials = int(counted.sum())
    return Failures(n_trials=n_trials, n_failed=int(failed.sum()), n_timeout=n_timeout,
                    by_status=", ".join(f"{k}: {v}" for k, v in counts.items()),
                    censored=0 < n_timeout and 2 * n_timeout < n_trials)


def _censored_reason(runtime: str, fails: Failures, baseline: str, fails_base: Failures) -> str:
    for name, f in ((runtime, fails), (baseline, fails_base)):
        if f.n_timeout and 2 * f.n_timeout >= f.n_trials:
            return (f"{name}: {f.n_timeout} of {f.n_trials} trials timed out (half or more): its median is "
                    "censored at the deadline, so no ratio")
    return ""


def _failure_note(runtime: str, fails: Failures, baseline: str, fails_base: Failures) -> str:
    if fails.n_failed * fails_base.n_trials == fails_base.n_failed * fails.n_trials:
        return ""
    if not (fails.n_trials and fails_base.n_trials):
        return ""
    table = [[f.n_failed, f.n_trials - f.n_failed] for f in (fails, fails_base)]
    p = float(stats.fisher_exact(table).pvalue)

    def part(name: str, f: Failures) -> str:
        return f"{name} {f.n_failed}/{f.n_trials}" + (f" ({f.by_status})" if f.by_status else "")

    return (f"failure rates differ: {part(runtime, fails)}, {part(baseline, fails_base)} (Fisher p={p:.2g}); "
            "failures that depend on load time bias the ratio")


def _censor_text(value: float) -> str:
    return "unknown deadline, +inf" if math.isinf(value) else f"{value:g} ms"


def _resampled(cache: dict[str, tuple], group: Group, seed: int, key: tuple, runtime: str,
               n_resamples: int) -> tuple:
    """Bootstrap and jackknife draws of one runtime in one cell, computed once (own seeded streams)."""
    if runtime not in cache:
        cache[runtime] = (*resample(group, stream_rng(seed, *key, runtime), n_resamples),
                          *jackknife(group))
    return cache[runtime]


def _no_ratio_reason(runtime: str, group: Group | None, baseline: str, base: Group | None) -> str:
    for name, g in ((runtime, group), (baseline, base)):
        if g is None:
            return f"{name} has no trials in this cell"
        if g.n == 0:
            return f"{name} has no ok trials in this cell ({g.n_failed} failed)"
    return ""


def _few_clusters_note(runtime: str, group: Group, baseline: str, base: Group) -> str:
    few = [f"{name}: {g.n_clusters} {'batches' if g.clustered else 'trials'}"
           for name, g in ((runtime, group), (baseline, base)) if g.n_clusters < FEW_CLUSTERS]
    return f"few resampling units ({', '.join(few)}): interval likely too narrow" if few else ""


def summary_across_modules(ratio_table: pd.DataFrame, confidence: float = CONFIDENCE) -> pd.DataFrame:
    """Geometric mean across modules of the per-module ratios, per runtime x concurrency x factors x statistic.

    The interval combines the module intervals on the log scale: each module's standard error is read
    from its interval, se_m = (log ci_high - log ci_low) / (2 z); the mean of logs has
    se = sqrt(sum se_m^2) / M when module cells are independent (separate processes and batches), and
    the conservative se = mean(se_m) (perfect correlation) when batches span modules (load_mode
    sequence). ``ci_method`` says which. Never an arithmetic mean of ratios.
    The smallest and largest module ratios come with their modules and their own (cell) intervals.
    Columns: runtime, runtime_kind, baseline, baseline_kind, concurrency, [factors], statistic, n_modules,
    modules, gmean_ratio, ci_low, ci_high, ci_method, min_module, min_module_ratio, min_module_ci_low,
    min_module_ci_high, max_module, max_module_ratio, max_module_ci_low, max_module_ci_high, confidence, note.
    """
    required = {"runtime", "baseline", "module", "statistic", "ratio", "ci_low", "ci_high"}
    if missing := required - set(ratio_table.columns):
        raise AnalysisError(f"ratio table lacks column(s) {', '.join(sorted(missing))}; "
                            "make it with shlib.analysis.ratios.ratios")
    z = float(special.ndtri(0.5 + confidence / 2))
    fixed = ["runtime", "runtime_kind", "baseline", "baseline_kind", "concurrency", *[
        f for f in FACTORS if f in ratio_table.columns], "statistic"]
    fixed = [c for c in fixed if c in ratio_table.columns]
    columns = [*fixed, "n_modules", "modules", "gmean_ratio", "ci_low", "ci_high", "ci_method",
               "min_module", "min_module_ratio", "min_module_ci_low", "min_module_ci_high", "max_module",
               "max_module_ratio", "max_module_ci_low", "max_module_ci_high", "confidence", "note"]
    records = []
    for key, rows in ratio_table.groupby(fixed, sort=True, observed=True, dropna=False):
        desc = dict(zip(fixed, key if isinstance(key, tuple) else (key,), strict=True))
        usable = rows[np.isfinite(rows["ratio"].astype(float)) & (rows["ratio"].astype(float) > 0)]
        dropped = sorted(set(rows["module"]) - set(usable["module"]))
        notes = [f"no ratio for {', '.join(map(str, dropped))}"] if dropped else []
        record = {**desc, "n_modules": len(usable), "modules": ", ".join(map(str, sorted(usable["module"]))),
                  "gmean_ratio": math.nan, "ci_low": math.nan, "ci_high": math.nan, "ci_method": "none",
                  "min_module_ratio": math.nan, "max_module_ratio": math.nan, "confidence": confidence}
        if len(usable) == 0:
            records.append({**record, "note": "; ".join(notes) or "no module has a ratio"})
            continue
        logs = np.log(usable["ratio"].to_numpy(float))
        record.update(gmean_ratio=float(np.exp(logs.mean())))
        for end, i in (("min", int(np.argmin(logs))), ("max", int(np.argmax(logs)))):
            cell = usable.iloc[i]
            record.update({f"{end}_module": str(cell["module"]), f"{end}_module_ratio": float(cell["ratio"]),
                           f"{end}_module_ci_low": float(cell["ci_low"]),
                           f"{end}_module_ci_high": float(cell["ci_high"])})
        lo, hi = usable["ci_low"].to_numpy(float), usable["ci_high"].to_numpy(float)
        if not (np.isfinite(lo).all() and np.isfinite(hi).all() and (lo > 0).all()):
            notes.append("a module ratio has no interval: no combined interval")
            records.append({**record, "note": "; ".join(notes)})
            continue
        se_m = (np.log(hi) - np.log(lo)) / (2 * z)
        correlated = bool(usable.get("batches_span_modules", pd.Series(False)).astype(bool).any())
        se = float(se_m.mean()) if correlated else float(np.sqrt((se_m ** 2).sum()) / len(se_m))
        record.update(ci_low=float(np.exp(logs.mean() - z * se)), ci_high=float(np.exp(logs.mean() + z * se)),
                      ci_method=("log-scale, modules correlated (conservative)" if correlated
                                 else "log-scale, modules independent"))
        if len(usable) == 1:
            notes.append("one module: its own ratio")
        records.append({**record, "note": "; ".join(notes)})
    return pd.DataFrame.from_records(records, columns=columns)
