"""Where a cold start's time goes: each phase of the trials' timeline, and the share spent loading.

Phases (columns of the results; clocks in ``shlib.collect.records``): create_ms, start_ms, boot_ms,
load_ms, teardown_ms. A runtime's cold start here is create + start + boot + load (what a function
waits for before its handler can run; native has no create); teardown comes after the response and is
shown beside it. Statistics are medians over the trials of a runtime x concurrency cell (and every other
factor with more than one level: language, engine, ...; boot_ms does not mean the same for Node and
Python), all modules together unless one is named, with cluster-bootstrap intervals (batches resampled
whole).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from shlib.analysis.bootstrap import make_group, resample, stream_rng
from shlib.analysis.defaults import CONFIDENCE, DEFAULT_RESAMPLES, DEFAULT_SEED
from shlib.analysis.frames import ensure_prepared, factors_present

PHASES = ("create_ms", "start_ms", "boot_ms", "load_ms", "teardown_ms")
COLD_START = ("create_ms", "start_ms", "boot_ms", "load_ms")
COLUMNS = ["runtime", "runtime_kind", "concurrency", "phase", "n", "n_batches", "median_ms", "ci_low_ms",
           "ci_high_ms"]
SHARE_COLUMNS = ["runtime", "runtime_kind", "concurrency", "n", "n_batches", "cold_start_ms", "load_share",
                 "ci_low", "ci_high", "phases"]


def _interval(values: np.ndarray, clusters: np.ndarray, seed: int, key: tuple, n_resamples: int,
              confidence: float) -> tuple[float, float, float, int]:
    group = make_group(values, clusters, 0)
    if group.n_clusters < 2:
        return group.median(), math.nan, math.nan, group.n_clusters
    draws = resample(group, stream_rng(seed, "timeline", *key), n_resamples)[0]
    alpha = (1 - confidence) / 2
    low, high = np.nanquantile(draws, [alpha, 1 - alpha])
    return group.median(), float(low), float(high), group.n_clusters


def _ok_trials(df: pd.DataFrame, module: str | None) -> pd.DataFrame:
    work = ensure_prepared(df)
    work = work[work["ok"] & ~work["repeated"]]
    return work[work["module"] == module] if module is not None else work


def phase_summary(df: pd.DataFrame, module: str | None = None, seed: int = DEFAULT_SEED,
                  n_resamples: int = DEFAULT_RESAMPLES, confidence: float = CONFIDENCE) -> pd.DataFrame:
    """Median of each phase per runtime x concurrency, with a cluster-bootstrap interval (ms).

    ``module``: one module's trials; None pools every module (a typical trial of the run's mix). A phase
    a runtime does not have (native: create, teardown) or the results lack (older runs) has no row.
    """
    work = _ok_trials(df, module)
    factors = factors_present(work)
    rows = []
    for key, cell in work.groupby(["runtime", "runtime_kind", "concurrency", *factors], sort=True):
        (runtime, kind, conc), levels = key[:3], dict(zip(factors, key[3:], strict=True))
        for phase in PHASES:
            if phase not in cell.columns:
                continue
            values = cell[phase].to_numpy(dtype="float64")
            keep = np.isfinite(values)
            if not keep.any():
                continue
            med, low, high, n_batches = _interval(values[keep], cell["cluster"].to_numpy()[keep], seed,
                                                  (runtime, conc, phase, module, *levels.values()), n_resamples,
                                                  confidence)
            rows.append({"runtime": runtime, "runtime_kind": kind, "concurrency": int(conc), **levels,
                         "phase": phase, "n": int(keep.sum()), "n_batches": n_batches, "median_ms": med,
                         "ci_low_ms": low, "ci_high_ms": high})
    return pd.DataFrame(rows, columns=[*COLUMNS[:3], *factors, *COLUMNS[3:]])


def load_share(df: pd.DataFrame, module: str | None = None, seed: int = DEFAULT_SEED,
               n_resamples: int = DEFAULT_RESAMPLES, confidence: float = CONFIDENCE) -> pd.DataFrame:
    """The share of the cold start spent loading: per trial load / (create + start + boot + load), its median.

    Only the phases a runtime has are summed (``phases`` names them: native has no create); trials that
    lack one of them are left out. Rows only for results that recorded start_ms (the timeline).
    """
    work = _ok_trials(df, module)
    rows = []
    if "start_ms" not in work.columns:
        return pd.DataFrame(rows, columns=SHARE_COLUMNS)
    factors = factors_present(work)
    for key, cell in work.groupby(["runtime", "runtime_kind", "concurrency", *factors], sort=True):
        (runtime, kind, conc), levels = key[:3], dict(zip(factors, key[3:], strict=True))
        have = [p for p in COLD_START if p in cell.columns and cell[p].notna().any()]
        if "start_ms" not in have:
            continue
        parts = cell[have].to_numpy(dtype="float64")
        keep = np.isfinite(parts).all(axis=1)
        if not keep.any():
            continue
        total = parts[keep].sum(axis=1)
        share = cell["load_ms"].to_numpy(dtype="float64")[keep] / total
        med, low, high, n_batches = _interval(share, cell["cluster"].to_numpy()[keep], seed,
                                              (runtime, conc, "share", module, *levels.values()), n_resamples,
                                              confidence)
        rows.append({"runtime": runtime, "runtime_kind": kind, "concurrency": int(conc), **levels, "n": int(keep.sum()),
                     "n_batches": n_batches, "cold_start_ms": float(np.median(total)), "load_share": med,
                     "ci_low": low, "ci_high": high, "phases": " + ".join(p.removesuffix("_ms") for p in have)})
    return pd.DataFrame(rows, columns=[*SHARE_COLUMNS[:3], *factors, *SHARE_COLUMNS[3:]])


def missing_phases(df: pd.DataFrame) -> list[str]:
    """The timeline columns these results have no value in (older runs: all but boot_ms and load_ms)."""
    return [p for p in (*PHASES, "cpu_ms", "proc_cpu_ms", "mem_peak_mb", "clock_offset_ms")
            if p not in df.columns or not pd.to_numeric(df[p], errors="coerce").notna().any()]
