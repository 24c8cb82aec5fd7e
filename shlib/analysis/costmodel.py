"""A cost model per runtime: what a module's load costs per file and per megabyte.

    metric_ms(module) = base_ms + per_file_ms x files(module) + per_mb_ms x mbytes(module)

fitted by least squares across the modules of a run, once per runtime and concurrency (and every
other factor with more than one level), on each module's median. ``files`` is what the load asks
of the file system: by default the files it opened (the module's syscall profile, measured on the
host with strace; ``per="lookups"`` takes the stat family instead, ``per="syscalls"`` every call),
falling back to the CommonJS files the probe counted. ``mbytes`` is what its reads returned (the
profile), falling back to the closure's size on disk.

Intervals come from the cluster bootstrap (``shlib.analysis.bootstrap``): within each module's cell
whole batches are resampled, the medians re-taken and the model refitted, for every draw; the
draws are kept, so a penalty between two runtimes (``predict_penalty_ms``) gets an interval from
the same draws. Prediction errors are leave-one-module-out: each module predicted by the model
fitted without it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from shlib.analysis.bootstrap import make_group, resample, stream_rng
from shlib.analysis.defaults import CONFIDENCE, DEFAULT_RESAMPLES, DEFAULT_SEED
from shlib.analysis.frames import ensure_prepared, factors_present, with_metric
from shlib.errors import AnalysisError

#: What a file count can mean (a column of the module features).
PER = ("files", "lookups", "syscalls")
TERMS = ("base_ms", "per_file_ms", "per_mb_ms")


def module_features(library: dict[str, Any] | None, frame: pd.DataFrame | None = None) -> pd.DataFrame:
    """Per module: files (opened), lookups (stat family), syscalls, mbytes (read), and where each came from.

    ``library``: the run's library metadata (``RunMetadata.library`` as a dict: ``modules`` with each
    closure's files and bytes, and ``syscall_profile`` when strace was there). ``frame``: results, for
    the probe's own count of files (``files_loaded``) when there is no profile.
    """
    library = library or {}
    profile = ((library.get("syscall_profile") or {}).get("modules") or {})
    closure = {m.get("module"): m for m in library.get("modules", []) if isinstance(m, dict)}
    loaded: dict[str, float] = {}
    if frame is not None and "files_loaded" in frame.columns:
        ok = frame[frame["status"].astype(str) == "ok"]
        loaded = pd.to_numeric(ok["files_loaded"], errors="coerce").groupby(ok["module"].astype(str)).median() \
            .dropna().to_dict()
    modules = sorted(set(profile) | set(closure) | set(loaded))
    rows = []
    for name in modules:
        prof = profile.get(name) or {}
        if prof.get("openat") is not None:
            files, source = float(prof["openat"]), "strace: openat"
        elif name in loaded:
            files, source = float(loaded[name]), "probe: CommonJS files loaded"
        else:
            files, source = (float(closure[name]["files"]) if closure.get(name, {}).get("files") is not None
                             else math.nan), "closure: files on disk"
        if prof.get("read_bytes") is not None:
            mbytes, bytes_source = prof["read_bytes"] / 1e6, "strace: bytes read"
        else:
            size = closure.get(name, {}).get("bytes")
            mbytes, bytes_source = (size / 1e6 if size is not None else math.nan), "closure: bytes on disk"
        rows.append({"module": name, "files": files, "lookups": float(prof.get("stat", math.nan)),
                     "failed_lookups": float(prof.get("failed_lookups", math.nan)),
                     "syscalls": float(prof.get("syscalls", math.nan)), "mbytes": mbytes,
                     "files_source": source, "mbytes_source": bytes_source})
    return pd.DataFrame(rows, columns=["module", "files", "lookups", "failed_lookups", "syscalls", "mbytes",
                                       "files_source", "mbytes_source"])


@dataclass
class CostModel:
    """A fitted cost model: per cell (runtime x concurrency x factors) the terms with intervals, the
    leave-one-module-out errors, and the bootstrap draws of the terms (for penalties between runtimes)."""

    metric: str
    per: str
    confidence: float
    seed: int
    n_resamples: int
    terms: pd.DataFrame
    lomo: pd.DataFrame
    features: pd.DataFrame
    notes: list[str] = field(default_factory=list)
    draws: dict[tuple, np.ndarray] = field(default_factory=dict, repr=False)
    estimates: dict[tuple, np.ndarray] = field(default_factory=dict, repr=False)
    keys: list[str] = field(default_factory=list)

    def cell(self, runtime: str, concurrency: int = 1, **factors: Any) -> tuple:
        """The key of one fitted cell; AnalysisError naming the cells there are when it is absent."""
        values = {"runtime": runtime, "concurrency": int(concurrency), **factors}
        missing = [k for k in self.keys if k not in values]
        if missing:
            levels = sorted({k[self.keys.index(missing[0])] for k in self.estimates})
            raise AnalysisError(f"name the {missing[0]} of the cell (one of {levels})")
        key = tuple(values[k] for k in self.keys)
        if key not in self.estimates:
            there = ", ".join("/".join(map(str, k)) for k in sorted(self.estimates, key=str))
            raise AnalysisError(f"no cost model for {'/'.join(map(str, key))} ({self.metric}); fitted: "
                                f"{there or 'none'}")
        return key


def fit_cost_model(df: pd.DataFrame, features: pd.DataFrame, metric: str = "load_ms", per: str = "files",
                   seed: int = DEFAULT_SEED, n_resamples: int = DEFAULT_RESAMPLES,
                   confidence: float = CONFIDENCE) -> CostModel:
    """Fit ``metric`` = base + per file x files + per MB x mbytes across modules, per runtime x concurrency.

    ``features``: ``module_features``. ``per``: which count is "files" (files opened, lookups, syscalls).
    A cell is fitted when it has at least 4 modules with a median and features (3 terms, one left to
    check them); others are listed in the notes. Terms table: runtime, concurrency, [factors], term
    (base_ms, per_file_ms, per_mb_ms), estimate, ci_low, ci_high, n_modules, n_batches, r2, per, metric.
    LOMO table: the cell, module, observed_ms, predicted_ms, error_ms, rel_error.
    """
    if per not in PER:
        raise AnalysisError(f"per={per!r}: choose one of {', '.join(PER)}")
    work = with_metric(ensure_prepared(df), metric)
    work = work[work["ok"] & ~work["repeated"]]
    feats = features.set_index("module")
    keys = ["runtime", "concurrency", *[f for f in factors_present(work) if f != "module"]]
    alpha = (1 - confidence) / 2
    term_rows: list[dict[str, Any]] = []
    lomo_rows: list[dict[str, Any]] = []
    notes: list[str] = []
    model = CostModel(metric=metric, per=per, confidence=confidence, seed=seed, n_resamples=n_resamples,
                      terms=pd.DataFrame(), lomo=pd.DataFrame(), features=features, keys=keys)
    for key, cell in work.groupby(keys, sort=True, observed=True):
        key = tuple(int(k) if name == "concurrency" else k for name, k in zip(keys, key, strict=True))
        desc = dict(zip(keys, key, strict=True))
        usable = [m for m in sorted(cell["module"].unique()) if m in feats.index
                  and np.isfinite(feats.loc[m, per]) and np.isfinite(feats.loc[m, "mbytes"])]
        if len(usable) < len(TERMS) + 1:
            notes.append(f"{'/'.join(map(str, key))}: {len(usable)} module(s) with features, need at least "
                         f"{len(TERMS) + 1} for {len(TERMS)} terms: not fitted")
            continue
        x = np.column_stack([np.ones(len(usable)), feats.loc[usable, per].to_numpy(float),
                             feats.loc[usable, "mbytes"].to_numpy(float)])
        if np.linalg.matrix_rank(x) < x.shape[1]:
            notes.append(f"{'/'.join(map(str, key))}: the modules' {per} and MB are collinear: not fitted")
            continue
        by_module = [cell[cell["module"] == m] for m in usable]
        groups = [make_group(g["load_ms"].to_numpy(), g["cluster"].to_numpy(), 0) for g in by_module]
        y = np.array([g.median() for g in groups])
        boot_y = np.vstack([resample(g, stream_rng(seed, "costmodel", metric, *key, m), n_resamples)[0]
                            for g, m in zip(groups, usable, strict=True)])  # modules x draws
        pinv = np.linalg.pinv(x)
        beta = pinv @ y
        draws = pinv @ boot_y  # terms x draws
        model.estimates[key], model.draws[key] = beta, draws
        fitted = x @ beta
        ss_res = float(((y - fitted) ** 2).sum())
        ss_tot = float(((y - y.mean()) ** 2).sum())
        r2 = 1 - ss_res / ss_tot if ss_tot > 0 else math.nan
        n_batches = int(sum(g.n_clusters for g in groups))
        lonely = [m for g, m in zip(groups, usable, strict=True) if g.n_clusters < 2]
        if lonely:  # one batch: nothing to resample, the draws would all be the estimate
            model.draws[key] = np.full_like(draws, np.nan)
            notes.append(f"{'/'.join(map(str, key))}: {', '.join(lonely)} had one batch: no interval")
        method = "none (a module with one batch)" if lonely else "cluster bootstrap, percentile"
        for i, term in enumerate(TERMS):
            low, high = (np.nan, np.nan) if lonely else np.quantile(draws[i], [alpha, 1 - alpha])
            term_rows.append({**desc, "term": term, "estimate": float(beta[i]), "ci_low": float(low),
                              "ci_high": float(high), "ci_method": method,
                              "n_modules": len(usable), "n_batches": n_batches, "r2": r2, "per": per,
                              "metric": metric})
        for j, module in enumerate(usable):
            rest = [i for i in range(len(usable)) if i != j]
            b = np.linalg.lstsq(x[rest], y[rest], rcond=None)[0]
            predicted = float(x[j] @ b)
            lomo_rows.append({**desc, "metric": metric, "module": module, "files": float(x[j, 1]),
                              "mbytes": float(x[j, 2]),
                              "observed_ms": float(y[j]), "predicted_ms": predicted,
                              "error_ms": predicted - float(y[j]),
                              "rel_error": (predicted - float(y[j])) / float(y[j]) if y[j] else math.nan})
    model.terms = pd.DataFrame(term_rows, columns=[*keys, "term", "estimate", "ci_low", "ci_high", "ci_method",
                                                   "n_modules", "n_batches", "r2", "per", "metric"])
    model.lomo = pd.DataFrame(lomo_rows, columns=[*keys, "metric", "module", "files", "mbytes", "observed_ms",
                                                  "predicted_ms", "error_ms", "rel_error"])
    model.notes = notes
    return model


@dataclass(frozen=True)
class Penalty:
    """A predicted difference runtime - baseline (ms) for one dependency tree, with its interval."""

    runtime: str
    baseline: str
    files: int
    mbytes: float
    estimate_ms: float
    ci_low_ms: float
    ci_high_ms: float
    confidence: float
    metric: str
    extrapolated: bool

    def __str__(self) -> str:
        more = " (outside the modules the model was fitted on)" if self.extrapolated else ""
        return (f"{self.runtime} vs {self.baseline}: {self.estimate_ms:+.1f} ms {self.metric} "
                f"[{self.ci_low_ms:+.1f}, {self.ci_high_ms:+.1f}] for {self.files} files, {self.mbytes:g} MB{more}")


def predict_penalty_ms(files: int, mbytes: float, runtime: str, baseline: str, model: CostModel,
                       concurrency: int = 1, **factors: Any) -> Penalty:
    """The sandbox penalty (ms) of ``runtime`` over ``baseline`` for a tree of ``files`` and ``mbytes``.

    ``files`` counts what the model's ``per`` counts (files opened by default: ``strace -f -c`` of
    ``node -e "require('x')"`` on your tree, openat minus an empty node's, or roughly the tree's
    JavaScript files). The interval comes from the two runtimes' bootstrap draws, taken independently.
    """
    if files < 0 or not math.isfinite(mbytes) or mbytes < 0:
        raise AnalysisError(f"files ({files}) and mbytes ({mbytes}) must be finite and >= 0")
    x = np.array([1.0, float(files), float(mbytes)])
    k_r = model.cell(runtime, concurrency, **factors)
    k_b = model.cell(baseline, concurrency, **factors)
    estimate = float(x @ (model.estimates[k_r] - model.estimates[k_b]))
    n = min(model.draws[k_r].shape[1], model.draws[k_b].shape[1])
    boot = x @ (model.draws[k_r][:, :n] - model.draws[k_b][:, :n])
    alpha = (1 - model.confidence) / 2
    low, high = np.quantile(boot, [alpha, 1 - alpha])
    seen = model.lomo
    extrapolated = bool(len(seen)) and not (seen["files"].min() <= files <= seen["files"].max()
                                           and seen["mbytes"].min() <= mbytes <= seen["mbytes"].max())
    return Penalty(runtime=runtime, baseline=baseline, files=int(files), mbytes=float(mbytes), estimate_ms=estimate,
                   ci_low_ms=float(low), ci_high_ms=float(high), confidence=model.confidence, metric=model.metric,
                   extrapolated=extrapolated)


def per_file_readings(model: CostModel, concurrency: int = 1) -> list[str]:
    """One sentence per runtime: what it adds per file (us) and per MB (ms), with intervals."""
    terms = model.terms
    if not len(terms):
        return []
    out = []
    rows = terms[terms["concurrency"] == concurrency]
    what = {"files": "file opened", "lookups": "path lookup (stat)", "syscalls": "system call"}[model.per]
    for runtime, cell in rows.groupby("runtime", sort=True):
        t = cell.set_index("term")
        if "per_file_ms" not in t.index or len(t.index) != len(t.index.unique()):
            continue
        f, b = t.loc["per_file_ms"], t.loc["per_mb_ms"]
        out.append(f"{runtime} ({model.metric}, {concurrency} at once): {1000 * f['estimate']:.1f} us "
                   f"[{1000 * f['ci_low']:.1f}, {1000 * f['ci_high']:.1f}] per {what}, {b['estimate']:.2f} ms "
                   f"[{b['ci_low']:.2f}, {b['ci_high']:.2f}] per MB read")
    return out
