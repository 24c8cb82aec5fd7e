"""Statistics over one run's results: summaries, ratios with bootstrap intervals, tests, scaling, replication.

Reads a results frame (``shlib.results.load_results``) only; never the collection code.

A *cell* is one combination of module x concurrency x every other factor with more than one level
(mount, cache, node_version, load_mode); runtimes are compared within a cell. Only rows with
status "ok" and a finite load_ms enter the statistics; the rest are counted as failed.

Ratio intervals come from a cluster bootstrap written here (vectorized numpy) rather than
``scipy.stats.bootstrap``: trials of one batch share a time window and are correlated, so whole
batches are resampled (with replacement, within each runtime; the two runtimes independently). With
one trial per batch this is the ordinary bootstrap. Resampled medians come from the ranks of the
drawn trials in the sorted sample (a partition, O(trials) per resample; a weighted median when batches
differ in size) and resampled log-means from per-batch sums, all vectorized over resamples.
Intervals are BCa (Efron 1987): bias correction from the bootstrap distribution (ties counted half,
which matters for medians), acceleration from an exact jackknife that leaves out one batch at a time
in each runtime's sample (combined across the two samples as scipy does). Where BCa is undefined
(constant jackknife, estimate outside the bootstrap
distribution) the percentile interval is given and ``ci_method`` says so. Two small-sample corrections
(Hesterberg 2015, "expanded" bootstrap intervals): the bootstrap shrinks a statistic's variance by
(G-1)/G for G batches, so each runtime's resampled log-statistics are spread by sqrt(G/(G-1)) around
its estimate; and the normal quantiles in the BCa formula become Student-t quantiles with
G_runtime + G_baseline - 2 degrees of freedom. Checked by simulation (tests/test_stats.py): 95%
intervals of both ratios cover the true ratio 93-97% of the time with ~30 trials per runtime,
independent or batch-correlated (down to ~5 batches per runtime).
"""

from __future__ import annotations

import itertools
import math
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import special, stats

from shlib.errors import AnalysisError
from shlib.results import runtime_kind

FACTORS = ("mount", "cache", "node_version", "load_mode")
REQUIRED_COLUMNS = ("runtime", "module", "concurrency", "load_ms", "status")
CONFIDENCE = 0.95
DEFAULT_RESAMPLES = 2000
DEFAULT_SEED = 12345
#: Below this many batches in a runtime's sample (when batches hold several trials), intervals are
#: flagged as unreliable. Simulated coverage of nominal 95% with ~30 trials per runtime and strong
#: batch correlation: 94-96% with 10-15 batches, ~93.5-94.5% with 4-5 batches.
FEW_CLUSTERS = 5
_CHUNK_CELLS = 4_000_000  # elements per temporary (resamples x trials) array
STATISTICS = ("median", "gmean")


# ---------------------------------------------------------------------------------------------------
# Input


def prepare(df: pd.DataFrame) -> pd.DataFrame:
    """A plain working copy of a results frame: str factors, int concurrency, ``ok`` flag, ``cluster`` id.

    Raises AnalysisError naming what is missing when the frame cannot be analysed.
    """
    if not isinstance(df, pd.DataFrame):
        raise AnalysisError(f"expected a results DataFrame, got {type(df).__name__}")
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise AnalysisError(f"results frame lacks column(s) {', '.join(missing)}; "
                            f"load it with shlib.results.load_results(run_dir)")
    if len(df) == 0:
        raise AnalysisError("results frame is empty: no trials to analyse (did the run record any batch?)")
    if df["concurrency"].isna().any():
        n_bad = int(df["concurrency"].isna().sum())
        raise AnalysisError(f"{n_bad} rows have no concurrency; the results are malformed")
    work = pd.DataFrame({
        "runtime": df["runtime"].astype(str).to_numpy(),
        "module": df["module"].astype(str).to_numpy(),
        "concurrency": df["concurrency"].astype("int64").to_numpy(),
        "load_ms": pd.to_numeric(df["load_ms"], errors="coerce").astype("float64").to_numpy(),
        "status": df["status"].astype(str).to_numpy(),
    })
    kinds = df["runtime_kind"].astype(object).to_numpy() if "runtime_kind" in df.columns else [None] * len(df)
    work["runtime_kind"] = [str(k) if isinstance(k, str) and k else runtime_kind(r)
                            for k, r in zip(kinds, work["runtime"], strict=True)]
    for name in FACTORS:
        if name in df.columns:
            col = df[name].astype(object)
            work[name] = col.where(col.notna(), "NA").astype(str).to_numpy()
    work["ok"] = (work["status"] == "ok").to_numpy() & np.isfinite(work["load_ms"].to_numpy())
    if "batch_id" in df.columns:
        batch = pd.to_numeric(df["batch_id"], errors="coerce").to_numpy(dtype="float64")
        lone = -np.arange(1, len(df) + 1, dtype="float64")  # a trial without a batch is its own cluster
        work["cluster"] = np.where(np.isnan(batch), lone, batch).astype("int64")
    else:
        work["cluster"] = -np.arange(1, len(df) + 1)
    return _native_in_every_mount(work)


def _native_in_every_mount(work: pd.DataFrame) -> pd.DataFrame:
    """Put native rows (mount "host": no container) in the cells of the containers' mount levels.

    Native is the floor every container mount is compared with: with one container mount level its
    rows take that label; with several they are repeated in each (``repeated`` marks the copies).
    """
    work["repeated"] = False
    if "mount" not in work.columns:
        return work
    native = (work["runtime_kind"] == "native").to_numpy()
    if not native.any() or native.all():
        return work
    levels = sorted(set(work.loc[~native, "mount"]))
    if set(work.loc[native, "mount"]) <= set(levels):
        return work
    copies = [work[native].assign(mount=level, repeated=i > 0) for i, level in enumerate(levels)]
    return pd.concat([work[~native], *copies], ignore_index=True)


def factors_present(work: pd.DataFrame) -> list[str]:
    """Factor columns (besides runtime, module, concurrency) with more than one level."""
    return [f for f in FACTORS if f in work.columns and work[f].nunique() > 1]


def cell_keys(work: pd.DataFrame) -> list[str]:
    return ["module", "concurrency", *factors_present(work)]


def _ensure_prepared(df: pd.DataFrame) -> pd.DataFrame:
    return df if {"ok", "cluster", "repeated"} <= set(df.columns) else prepare(df)


def _failure_text(statuses: pd.Series) -> str:
    counts = statuses.value_counts()
    return ", ".join(f"{k}: {v}" for k, v in counts.items())


# ---------------------------------------------------------------------------------------------------
# Summaries


def summarize(df: pd.DataFrame) -> pd.DataFrame:
    """Per cell and runtime: counts and load-time statistics (ms) over ok trials.

    median_ci_*_ms: distribution-free 95% interval of the median from order statistics (it assumes
    independent trials; use ``ratios`` for batch-aware intervals).
    Columns: runtime, runtime_kind, module, concurrency, [factors with >1 level], n, n_failed,
    n_batches, median_ms, median_ci_low_ms, median_ci_high_ms, q1_ms, q3_ms, mean_ms, sd_ms, cv, p95_ms,
    min_ms, max_ms, note.
    """
    work = _ensure_prepared(df)
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


# ---------------------------------------------------------------------------------------------------
# Cluster bootstrap machinery


@dataclass
class _Group:
    """The ok trials of one runtime in one cell, arranged for resampling."""

    values: np.ndarray         # load_ms, sorted ascending
    unit_of_value: np.ndarray  # cluster index (0..G-1) of each sorted value
    sizes: np.ndarray          # trials per cluster
    log_sums: np.ndarray       # sum of log(load_ms) per cluster (NaN when a value <= 0)
    n_failed: int

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def n_clusters(self) -> int:
        return len(self.sizes)

    @property
    def clustered(self) -> bool:
        return bool(self.n and self.sizes.max() > 1)

    def median(self) -> float:
        return float(np.median(self.values)) if self.n else math.nan

    def log_mean(self) -> float:
        return float(self.log_sums.sum() / self.sizes.sum()) if self.n else math.nan


def _make_group(values: np.ndarray, clusters: np.ndarray, n_failed: int) -> _Group:
    order = np.argsort(values, kind="stable")
    values = values[order]
    ids, unit = np.unique(clusters[order], return_inverse=True)
    sizes = np.bincount(unit, minlength=len(ids))
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = np.where(values > 0, np.log(np.where(values > 0, values, 1.0)), np.nan)
    log_sums = np.bincount(unit, weights=logs, minlength=len(ids)) if len(values) else np.zeros(0)
    if len(values) and not (values > 0).all():
        log_sums = np.full(len(ids), np.nan)
    return _Group(values, unit, sizes, log_sums, n_failed)


def _weighted_medians(values: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Median of ``values`` (sorted) repeated ``weights[r]`` times, for each row r (vectorized)."""
    rows, n = weights.shape
    out = np.empty(rows)
    chunk = max(1, _CHUNK_CELLS // max(n, 1))
    for start in range(0, rows, chunk):
        w = np.ascontiguousarray(weights[start:start + chunk], dtype=np.int32)
        cw = np.cumsum(w, axis=1, dtype=np.int32)
        total = cw[:, -1].astype(np.int64)
        step = int(total.max()) + 1
        wide = np.int64 if step * len(w) >= np.iinfo(np.int32).max else np.int32
        offsets = np.arange(len(w), dtype=wide) * step
        cw += offsets[:, None] if wide is np.int32 else 0
        flat = cw.ravel() if wide is np.int32 else (cw.astype(np.int64) + offsets[:, None]).ravel()
        lo_rank = (total + 1) // 2  # 1-based ranks of the two middle values
        hi_rank = total // 2 + 1
        base = np.arange(len(w), dtype=np.int64) * n
        i_lo = np.searchsorted(flat, lo_rank + offsets, side="left") - base
        i_hi = np.searchsorted(flat, hi_rank + offsets, side="left") - base
        out[start:start + chunk] = 0.5 * (values[i_lo] + values[i_hi])
    return out


def _cluster_counts(rng: np.random.Generator, n_clusters: int, n_resamples: int) -> np.ndarray:
    """How many times each cluster is drawn, for each resample (n_resamples x n_clusters)."""
    wide = np.int64 if n_resamples * n_clusters >= np.iinfo(np.int32).max else np.int32
    draws = rng.integers(0, n_clusters, size=(n_resamples, n_clusters), dtype=wide)
    draws += (np.arange(n_resamples, dtype=wide) * n_clusters)[:, None]
    return np.bincount(draws.ravel(), minlength=n_resamples * n_clusters).reshape(n_resamples, n_clusters)


def _ranks_by_cluster(group: _Group) -> np.ndarray:
    """Sorted-order positions of each cluster's trials (G x size); needs equal cluster sizes."""
    order = np.argsort(group.unit_of_value, kind="stable")
    return order.reshape(group.n_clusters, -1)


def _bootstrap(group: _Group, rng: np.random.Generator, n_resamples: int) -> tuple[np.ndarray, np.ndarray]:
    """Resampled medians and log-means of one group (whole clusters drawn with replacement).

    Equal cluster sizes (always so for independent trials): draw clusters, gather their trials' ranks
    in the sorted values and take the middle ranks by partition. Unequal sizes: a count per cluster
    and a weighted median.
    """
    medians = np.empty(n_resamples)
    log_means = np.empty(n_resamples)
    equal = bool((group.sizes == group.sizes[0]).all())
    ranks = _ranks_by_cluster(group).astype(np.int32) if equal else None
    n_total = group.n
    middle = [(n_total - 1) // 2, n_total // 2]
    chunk = max(1, _CHUNK_CELLS // max(n_total, 1))
    for start in range(0, n_resamples, chunk):
        size = min(chunk, n_resamples - start)
        if ranks is not None:
            draws = rng.integers(0, group.n_clusters, size=(size, group.n_clusters), dtype=np.int32)
            drawn = ranks[draws].reshape(size, n_total)
            mid = np.partition(drawn, middle, axis=1)[:, middle]
            medians[start:start + size] = 0.5 * (group.values[mid[:, 0]] + group.values[mid[:, 1]])
            log_means[start:start + size] = group.log_sums[draws].sum(axis=1) / n_total
        else:
            counts = _cluster_counts(rng, group.n_clusters, size)
            weights = np.take(counts.astype(np.int32), group.unit_of_value, axis=1)
            medians[start:start + size] = _weighted_medians(group.values, weights)
            countsf = counts.astype(np.float64)
            log_means[start:start + size] = (countsf @ group.log_sums) / (countsf @ group.sizes)
    if group.n_clusters > 1:
        # The bootstrap shrinks the variance of a statistic by (G-1)/G (G clusters); undo it on the log scale.
        spread = math.sqrt(group.n_clusters / (group.n_clusters - 1))
        with np.errstate(divide="ignore", invalid="ignore"):
            centre = math.log(group.median()) if group.median() > 0 else math.nan
            medians = np.exp(centre + spread * (np.log(medians) - centre)) if np.isfinite(centre) else medians
        log_means = group.log_mean() + spread * (log_means - group.log_mean())
    return medians, log_means


def _jackknife(group: _Group) -> tuple[np.ndarray, np.ndarray]:
    """Leave-one-cluster-out medians and log-means, exact and O(trials).

    Removing cluster g shifts the k-th smallest remaining value to sorted position p, found by
    stepping over g's own sorted positions in increasing order.
    """
    log_means = (group.log_sums.sum() - group.log_sums) / (group.n - group.sizes)
    width = int(group.sizes.max())
    removed = np.full((group.n_clusters, width), np.iinfo(np.int64).max)
    order = np.argsort(group.unit_of_value, kind="stable")  # sorted positions grouped by cluster
    slot = np.arange(group.n) - np.repeat(np.cumsum(group.sizes) - group.sizes, group.sizes)
    removed[group.unit_of_value[order], slot] = order
    removed.sort(axis=1)
    left = group.n - group.sizes
    positions = []
    for k in ((left - 1) // 2, left // 2):
        p = k.copy()
        for j in range(width):
            p += removed[:, j] <= p
        positions.append(p)
    medians = 0.5 * (group.values[np.minimum(positions[0], group.n - 1)]
                     + group.values[np.minimum(positions[1], group.n - 1)])
    return medians, log_means


def _welch_df(jack_a: np.ndarray, jack_b: np.ndarray) -> float:
    """Welch-Satterthwaite degrees of freedom of a difference of two log-scale estimates.

    Each group's variance is its leave-one-batch-out jackknife variance; with unequal batch counts
    and spreads this follows the smaller, noisier group instead of pooling G_a + G_b - 2, which made
    intervals too narrow (92% coverage with 45 vs 10 batches).
    """
    parts = []
    for jack in (jack_a, jack_b):
        g = len(jack)
        if g < 2 or not np.all(np.isfinite(jack)):
            return math.inf
        parts.append(((g - 1) / g * float(np.sum((jack - jack.mean()) ** 2)), g - 1))
    (va, da), (vb, db) = parts
    denominator = va * va / da + vb * vb / db
    return (va + vb) ** 2 / denominator if denominator > 0 else float(da + db)


def _interval(theta: float, boot: np.ndarray, jack: Sequence[np.ndarray],
              confidence: float, df: float = math.inf) -> tuple[float, float, str, str]:
    """(low, high, method, note): BCa where defined, else percentile.

    The normal quantiles of the BCa formula are replaced by Student-t quantiles with ``df`` degrees of
    freedom (the "expanded" bootstrap interval, Hesterberg 2015): with G batches per runtime the
    spread is itself estimated from G values.
    """
    boot = boot[np.isfinite(boot)]
    if not np.isfinite(theta) or len(boot) == 0:
        return math.nan, math.nan, "none", "estimate undefined"
    alpha = (1.0 - confidence) / 2.0
    if np.ptp(boot) == 0:
        return float(boot[0]), float(boot[0]), "percentile", "all resampled ratios equal: zero-width interval"
    prop = (np.count_nonzero(boot < theta) + 0.5 * np.count_nonzero(boot == theta)) / len(boot)
    reason = ""
    if prop <= 0.0 or prop >= 1.0:
        reason = "BCa undefined (estimate outside the bootstrap distribution)"
    else:
        z0 = special.ndtri(prop)
        influence = [(len(j) - 1) * (j.mean() - j) for j in jack if len(j) > 1]
        num = sum((u ** 3).sum() / len(u) ** 3 for u in influence)
        den = sum((u ** 2).sum() / len(u) ** 2 for u in influence)
        if not influence or den <= 0 or not np.isfinite(den):
            reason = "BCa undefined (jackknife constant)"
        else:
            accel = num / (6.0 * den ** 1.5)
            z = stats.t.ppf(np.array([alpha, 1.0 - alpha]), df)
            denom = 1.0 - accel * (z0 + z)
            if np.any(denom <= 0) or not np.isfinite(accel):
                reason = "BCa undefined (acceleration too large)"
            else:
                probs = special.ndtr(z0 + (z0 + z) / denom)
                low, high = np.quantile(boot, probs)
                return float(low), float(high), "bca", ""
    tail = float(special.ndtr(stats.t.ppf(alpha, df)))
    low, high = np.quantile(boot, [tail, 1.0 - tail])
    return float(low), float(high), "percentile", reason


def _rng(seed: int, *key: object) -> np.random.Generator:
    """A generator for one named stream: the same seed and key give the same draws, whatever else ran."""
    return np.random.default_rng([seed, zlib.crc32("|".join(map(str, key)).encode())])


# ---------------------------------------------------------------------------------------------------
# Ratios


def ratios(df: pd.DataFrame, baseline: str = "runc", seed: int = DEFAULT_SEED,
           n_resamples: int = DEFAULT_RESAMPLES, confidence: float = CONFIDENCE) -> pd.DataFrame:
    """Ratio of each runtime to ``baseline`` per cell, with a seeded cluster-bootstrap interval.

    Two statistics per cell (tidy: one row each): ``median`` (ratio of medians) and ``gmean``
    (ratio of geometric means). Batches are resampled whole within each runtime (see module doc).
    Columns: runtime, runtime_kind, baseline, baseline_kind, module, concurrency, [factors], statistic,
    ratio, ci_low, ci_high, ci_method (bca | percentile | none), confidence, n, n_baseline, n_batches,
    n_batches_baseline, clustered, batches_span_modules, n_resamples, seed, note.
    Raises AnalysisError when the baseline is absent (naming the runtimes present).
    """
    return ratios_against(df, [baseline], seed=seed, n_resamples=n_resamples, confidence=confidence)


def ratios_against(df: pd.DataFrame, baselines: Sequence[str], seed: int = DEFAULT_SEED,
                   n_resamples: int = DEFAULT_RESAMPLES, confidence: float = CONFIDENCE) -> pd.DataFrame:
    """``ratios`` for several baselines in one table; each runtime's resamples are drawn once and shared.

    A runtime's draws depend only on (seed, cell, runtime), so every interval is the one ``ratios``
    gives for that baseline alone.
    """
    if n_resamples < 100:
        raise AnalysisError(f"n_resamples={n_resamples} is too few for a 95% interval; use at least 1000")
    work = _ensure_prepared(df)
    present = sorted(work["runtime"].unique())
    for baseline in baselines:
        if baseline not in present:
            raise AnalysisError(f"baseline runtime {baseline!r} is not in the results; runtimes present: "
                                f"{', '.join(present)}. Pass one of them as baseline")
    keys = cell_keys(work)
    kind_of = work.groupby("runtime")["runtime_kind"].first().to_dict()
    spans = work[work["ok"]].groupby("cluster")["module"].nunique()
    spanning = set(spans.index[spans > 1])

    groups: dict[tuple, dict[str, _Group]] = {}
    spans_modules: dict[tuple, bool] = {}
    for key, cell in work.groupby(keys, sort=True, observed=True):
        key = key if isinstance(key, tuple) else (key,)
        groups[key] = {}
        spans_modules[key] = bool(spanning) and bool(set(cell.loc[cell["ok"], "cluster"]) & spanning)
        for runtime, rows in cell.groupby("runtime", sort=True):
            ok = rows["ok"].to_numpy()
            groups[key][runtime] = _make_group(rows["load_ms"].to_numpy()[ok], rows["cluster"].to_numpy()[ok],
                                               int((~ok).sum()))

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
            base_desc = dict(zip(keys, key, strict=True))
            common = {"runtime": runtime, "runtime_kind": kind_of[runtime], "baseline": baseline,
                      "baseline_kind": kind_of[baseline], **base_desc,
                      "confidence": confidence, "n": group.n, "n_baseline": base.n if base else 0,
                      "n_batches": group.n_clusters, "n_batches_baseline": base.n_clusters if base else 0,
                      "clustered": bool(group.clustered or (base is not None and base.clustered)),
                      "batches_span_modules": bool(cell_spans), "n_resamples": n_resamples, "seed": seed}
            why = _no_ratio_reason(runtime, group, baseline, base)
            if why:
                for statistic in STATISTICS:
                    records.append({**common, "statistic": statistic, "ratio": math.nan, "ci_low": math.nan,
                                    "ci_high": math.nan, "ci_method": "none", "note": why})
                continue
            assert base is not None
            estimates = {"median": group.median() / base.median(),
                         "gmean": math.exp(group.log_mean() - base.log_mean())}
            few = _few_clusters_note(runtime, group, baseline, base)
            if min(group.n_clusters, base.n_clusters) < 2:
                for statistic in STATISTICS:
                    lonely = runtime if group.n_clusters < 2 else baseline
                    records.append({**common, "statistic": statistic, "ratio": estimates[statistic],
                                    "ci_low": math.nan, "ci_high": math.nan, "ci_method": "none",
                                    "note": f"{lonely} has one batch/trial in this cell: no interval"})
                continue
            med_r, lm_r, jmed_r, jlm_r = _resampled(draws, group, seed, key, runtime, n_resamples)
            med_b, lm_b, jmed_b, jlm_b = _resampled(draws, base, seed, key, baseline, n_resamples)
            with np.errstate(divide="ignore", invalid="ignore"):
                boots = {"median": med_r / med_b, "gmean": np.exp(lm_r - lm_b)}
                jacks = {"median": [jmed_r / base.median(), group.median() / jmed_b],
                         "gmean": [np.exp(jlm_r - base.log_mean()), np.exp(group.log_mean() - jlm_b)]}
            for statistic in STATISTICS:
                theta = estimates[statistic]
                if not np.isfinite(theta):
                    records.append({**common, "statistic": statistic, "ratio": math.nan, "ci_low": math.nan,
                                    "ci_high": math.nan, "ci_method": "none",
                                    "note": "undefined: a load_ms <= 0 (geometric mean) or a zero baseline median"})
                    continue
                low, high, method, note = _interval(theta, boots[statistic], jacks[statistic], confidence,
                                                    df=_welch_df(jlm_r, jlm_b))
                records.append({**common, "statistic": statistic, "ratio": theta, "ci_low": low, "ci_high": high,
                                "ci_method": method, "note": "; ".join(x for x in (note, few) if x)})
    columns = ["runtime", "runtime_kind", "baseline", "baseline_kind", *keys, "statistic", "ratio", "ci_low",
               "ci_high", "ci_method", "confidence", "n", "n_baseline", "n_batches", "n_batches_baseline",
               "clustered", "batches_span_modules", "n_resamples", "seed", "note"]
    return pd.DataFrame.from_records(records, columns=columns)


def _resampled(cache: dict[str, tuple], group: _Group, seed: int, key: tuple, runtime: str,
               n_resamples: int) -> tuple:
    """Bootstrap and jackknife draws of one runtime in one cell, computed once (own seeded streams)."""
    if runtime not in cache:
        cache[runtime] = (*_bootstrap(group, _rng(seed, *key, runtime), n_resamples),
                          *_jackknife(group))
    return cache[runtime]


def _no_ratio_reason(runtime: str, group: _Group | None, baseline: str, base: _Group | None) -> str:
    for name, g in ((runtime, group), (baseline, base)):
        if g is None:
            return f"{name} has no trials in this cell"
        if g.n == 0:
            return f"{name} has no ok trials in this cell ({g.n_failed} failed)"
    return ""


def _few_clusters_note(runtime: str, group: _Group, baseline: str, base: _Group) -> str:
    few = [f"{name}: {g.n_clusters} {'batches' if g.clustered else 'trials'}"
           for name, g in ((runtime, group), (baseline, base)) if g.n_clusters < FEW_CLUSTERS]
    return f"few resampling units ({', '.join(few)}): interval likely too narrow" if few else ""


# ---------------------------------------------------------------------------------------------------
# Across modules


def summary_across_modules(ratio_table: pd.DataFrame, confidence: float = CONFIDENCE) -> pd.DataFrame:
    """Geometric mean across modules of the per-module ratios, per runtime x concurrency x factors x statistic.

    The interval combines the module intervals on the log scale: each module's standard error is read
    from its interval, se_m = (log ci_high - log ci_low) / (2 z); the mean of logs has
    se = sqrt(sum se_m^2) / M when module cells are independent (separate processes and batches), and
    the conservative se = mean(se_m) (perfect correlation) when batches span modules (load_mode
    sequence). ``ci_method`` says which. Never an arithmetic mean of ratios.
    Columns: runtime, runtime_kind, baseline, baseline_kind, concurrency, [factors], statistic, n_modules,
    modules, gmean_ratio, ci_low, ci_high, ci_method, min_module_ratio, max_module_ratio, confidence, note.
    """
    required = {"runtime", "baseline", "module", "statistic", "ratio", "ci_low", "ci_high"}
    if missing := required - set(ratio_table.columns):
        raise AnalysisError(f"ratio table lacks column(s) {', '.join(sorted(missing))}; "
                            "make it with shlib.stats.ratios")
    z = float(special.ndtri(0.5 + confidence / 2))
    fixed = ["runtime", "runtime_kind", "baseline", "baseline_kind", "concurrency", *[
        f for f in FACTORS if f in ratio_table.columns], "statistic"]
    fixed = [c for c in fixed if c in ratio_table.columns]
    columns = [*fixed, "n_modules", "modules", "gmean_ratio", "ci_low", "ci_high", "ci_method",
               "min_module_ratio", "max_module_ratio", "confidence", "note"]
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
        record.update(gmean_ratio=float(np.exp(logs.mean())), min_module_ratio=float(np.exp(logs.min())),
                      max_module_ratio=float(np.exp(logs.max())))
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


# ---------------------------------------------------------------------------------------------------
# Tests


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
    work = _ensure_prepared(df)
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


# ---------------------------------------------------------------------------------------------------
# Concurrency


def concurrency_scaling(df: pd.DataFrame, baseline: str = "runc", ratio_table: pd.DataFrame | None = None,
                        statistic: str = "median", seed: int = DEFAULT_SEED,
                        n_resamples: int = DEFAULT_RESAMPLES, confidence: float = CONFIDENCE) -> pd.DataFrame:
    """How load time, and the ratio to the baseline, change with the number of containers at once.

    Per runtime x module x factors: least-squares slopes of load_ms (``slope_ms_per_container``) and of
    log(load_ms) (``pct_per_container`` = 100 (exp(slope) - 1)) against concurrency, with percentile
    intervals from a bootstrap that resamples whole batches within each concurrency level. Then the
    ratio to the baseline at the lowest and highest concurrency (from ``ratio_table``, computed when not
    given) and its trend, ``ratio_pct_per_container``: a weighted least-squares slope of log(ratio) on
    concurrency, weights 1/se^2 read from the cell intervals (normal approximation).
    Columns: runtime, runtime_kind, module, [factors], concurrency_min, concurrency_max, n_levels, n,
    slope_ms_per_container, slope_ci_low, slope_ci_high, pct_per_container, pct_ci_low, pct_ci_high,
    baseline, ratio_at_min_concurrency, ratio_at_max_concurrency, ratio_pct_per_container,
    ratio_pct_ci_low, ratio_pct_ci_high, note.
    """
    work = _ensure_prepared(df)
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
            rng = _rng(seed, "scaling", *key)
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
                counts = _cluster_counts(rng, len(cluster_sums), n_resamples).astype(float)
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
    out = {"baseline": None, "ratio_at_min_concurrency": math.nan, "ratio_at_max_concurrency": math.nan,
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
    out["ratio_at_min_concurrency"] = float(rows["ratio"].iloc[0])
    out["ratio_at_max_concurrency"] = float(rows["ratio"].iloc[-1])
    rows = rows[np.isfinite(rows["ci_low"].astype(float)) & (rows["ci_high"] > rows["ci_low"])]
    if rows["concurrency"].nunique() < 2:
        return out
    x = rows["concurrency"].to_numpy(float)
    y = np.log(rows["ratio"].to_numpy(float))
    se = (np.log(rows["ci_high"].to_numpy(float)) - np.log(rows["ci_low"].to_numpy(float))) / (2 * z)
    w = 1 / se ** 2
    xm = (w * x).sum() / w.sum()
    sxx = (w * (x - xm) ** 2).sum()
    slope = (w * (x - xm) * (y - (w * y).sum() / w.sum())).sum() / sxx
    half = z / math.sqrt(sxx)
    out.update(ratio_pct_per_container=100 * math.expm1(slope), ratio_pct_ci_low=100 * math.expm1(slope - half),
               ratio_pct_ci_high=100 * math.expm1(slope + half))
    return out


# ---------------------------------------------------------------------------------------------------
# Replication of the reference study


def reference_path() -> Path:
    """data/reference/kim-yu-2020.csv in the project checkout."""
    return Path(__file__).resolve().parent.parent / "data" / "reference" / "kim-yu-2020.csv"


def load_reference(path: str | Path | None = None) -> pd.DataFrame:
    """The reference study's claims as a table (default: Kim & Yu 2020)."""
    path = Path(path) if path is not None else reference_path()
    if not path.exists():
        raise AnalysisError(f"reference claims file {path} not found (expected data/reference/kim-yu-2020.csv)")
    return pd.read_csv(path)


def replication(ratio_table: pd.DataFrame, reference: pd.DataFrame | str | Path | None = None,
                statistic: str = "median") -> pd.DataFrame:
    """Each claim of the reference study beside this run's estimate, interval and a verdict.

    ``ratio_table`` holds per-cell ratios (``ratios``), possibly for several baselines concatenated
    (e.g. baseline runc and baseline kata). Runtimes are matched by kind; each gVisor variant (and each
    denominator runtime of the claimed kind) is judged separately. A claim about the maximum (minimum)
    over modules and concurrency levels is compared with this run's max (min) cell ratio; its interval
    is [max of cell lower bounds, max of cell upper bounds] (min likewise), which holds the true max
    whenever every cell interval holds its own ratio (not a simultaneous guarantee). Verdict: "agrees"
    when that interval overlaps the claimed range (the value at its stated precision), "smaller" /
    "larger" when it lies wholly below / above, "not measured (runtime absent)" when no runtime of a
    kind ran. Cells are restricted to the claim's mount mode when the table has a mount column.
    """
    ref = reference if isinstance(reference, pd.DataFrame) else load_reference(reference)
    table = ratio_table[ratio_table["statistic"] == statistic] if len(ratio_table) else ratio_table
    kinds_present = set()
    if len(ratio_table):
        kinds_present = set(ratio_table["runtime_kind"].astype(str)) | set(ratio_table["baseline_kind"].astype(str))
    records = []
    for claim in ref.to_dict("records"):
        base = {"claim_id": claim["claim_id"], "claim": claim["claim"], "numerator_kind": claim["numerator_kind"],
                "denominator_kind": claim["denominator_kind"], "statistic": claim["statistic"],
                "claimed_value": claim["value"], "claimed_low": claim["value_low"],
                "claimed_high": claim["value_high"], "ratio_statistic": statistic}
        absent = [k for k in (claim["numerator_kind"], claim["denominator_kind"]) if k not in kinds_present]
        if absent:
            records.append({**base, "runtime": None, "baseline": None, "verdict": "not measured (runtime absent)",
                            "note": f"no {' or '.join(absent)} runtime in this run"})
            continue
        pairs = table[(table["runtime_kind"].astype(str) == claim["numerator_kind"])
                      & (table["baseline_kind"].astype(str) == claim["denominator_kind"])]
        if len(pairs) == 0:
            records.append({**base, "runtime": None, "baseline": None, "verdict": "not measured (runtime absent)",
                            "note": f"no ratio of {claim['numerator_kind']} to {claim['denominator_kind']} "
                                    "in the ratio table (compute ratios with that baseline)"})
            continue
        for (runtime, baseline), rows in pairs.groupby(["runtime", "baseline"], sort=True, observed=True):
            records.append({**base, "runtime": runtime, "baseline": baseline, **_judge(claim, rows)})
    columns = ["claim_id", "claim", "numerator_kind", "denominator_kind", "runtime", "baseline", "statistic",
               "ratio_statistic", "claimed_value", "claimed_low", "claimed_high", "estimate", "ci_low", "ci_high",
               "n_cells", "cell_of_estimate", "verdict", "note"]
    return pd.DataFrame.from_records(records, columns=columns)


def _judge(claim: dict, rows: pd.DataFrame) -> dict:
    notes = []
    mount = claim.get("mount")
    if isinstance(mount, str) and mount and "mount" in rows.columns:
        matching = rows[rows["mount"].astype(str) == mount]
        if len(matching):
            rows = matching
            notes.append(f"mount={mount} cells only")
    rows = rows[np.isfinite(rows["ratio"].astype(float))]
    if len(rows) == 0:
        return {"estimate": math.nan, "ci_low": math.nan, "ci_high": math.nan, "n_cells": 0, "cell_of_estimate": "",
                "verdict": "not measured (runtime absent)", "note": "no cell has ok trials of both runtimes"}
    take_max = claim["statistic"] == "max"
    ratio = rows["ratio"].to_numpy(float)
    lo, hi = rows["ci_low"].to_numpy(float), rows["ci_high"].to_numpy(float)
    if not (np.isfinite(lo).all() and np.isfinite(hi).all()):
        notes.append("some cells have no interval; bounds use the rest")
    pick = np.nanmax if take_max else np.nanmin
    best = int(np.argmax(ratio) if take_max else np.argmin(ratio))
    estimate, ci_low, ci_high = float(ratio[best]), float(pick(lo)), float(pick(hi))
    cell_cols = [c for c in ("module", "concurrency", *FACTORS) if c in rows.columns]
    cell = ", ".join(f"{c}={rows[c].iloc[best]}" for c in cell_cols)
    if not (np.isfinite(ci_low) and np.isfinite(ci_high)):
        verdict = "agrees" if claim["value_low"] <= estimate <= claim["value_high"] else (
            "smaller" if estimate < claim["value_low"] else "larger")
        notes.append("no interval: verdict from the estimate alone")
    elif ci_high < claim["value_low"]:
        verdict = "smaller"
    elif ci_low > claim["value_high"]:
        verdict = "larger"
    else:
        verdict = "agrees"
        if not claim["value_low"] <= estimate <= claim["value_high"]:
            edge = int(np.nanargmax(hi) if estimate < claim["value_low"] else np.nanargmin(lo)) if take_max else \
                int(np.nanargmin(lo) if estimate > claim["value_high"] else np.nanargmax(hi))
            where = ", ".join(f"{c}={rows[c].iloc[edge]}" for c in cell_cols)
            notes.append(f"agrees only within the uncertainty: the estimate is {estimate:.2f}x and the claim is "
                         f"inside the interval through its widest cell ({where})")
    return {"estimate": estimate, "ci_low": ci_low, "ci_high": ci_high, "n_cells": len(rows),
            "cell_of_estimate": cell, "verdict": verdict, "note": "; ".join(notes)}
