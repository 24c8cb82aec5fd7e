"""A results frame made ready for analysis: plain factor columns, an ``ok`` flag, a resampling cluster.

A *cell* is one combination of module x concurrency x every other factor with more than one level
(engine, engine_host, language, mount, cache, interpreter_version, load_mode); runtimes are compared within a
cell, so a ratio never crosses engines or languages. Only rows with
status "ok" and a finite load_ms enter the statistics; the rest are counted as failed.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from shlib.errors import AnalysisError
from shlib.results.schema import runtime_kind

FACTORS = ("engine", "engine_host", "language", "mount", "cache", "interpreter_version", "load_mode")
REQUIRED_COLUMNS = ("runtime", "module", "concurrency", "load_ms", "status")
#: Per-trial measurements (ms) an analysis can take in place of load_ms (``with_metric``): the timeline
#: phases and the CPU of the container's cgroup (cpu_ms) or of the probe process (proc_cpu_ms).
METRICS = ("load_ms", "cpu_ms", "proc_cpu_ms", "wall_ms", "create_ms", "start_ms", "boot_ms", "teardown_ms")


def prepare(df: pd.DataFrame) -> pd.DataFrame:
    """A plain working copy of a results frame: str factors, int concurrency, ``ok`` flag, ``cluster`` id.

    Raises AnalysisError naming what is missing when the frame cannot be analysed.
    """
    if not isinstance(df, pd.DataFrame):
        raise AnalysisError(f"expected a results DataFrame, got {type(df).__name__}")
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise AnalysisError(f"results frame lacks column(s) {', '.join(missing)}; "
                            f"load it with shlib.results.store.load_results(run_dir)")
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
    if "interpreter_version" not in df.columns and "node_version" in df.columns:
        df = df.assign(interpreter_version=df["node_version"])  # a frame from before schema v3
    for name in FACTORS:
        if name in df.columns:
            col = df[name].astype(object)
            work[name] = col.where(col.notna(), "NA").astype(str).to_numpy()
    for name in METRICS[1:]:
        if name in df.columns:
            work[name] = pd.to_numeric(df[name], errors="coerce").astype("float64").to_numpy()
    if "rep" in df.columns:  # the repetition a batch belongs to: batch tests permute within it
        work["rep"] = pd.to_numeric(df["rep"], errors="coerce").fillna(-1).astype("int64").to_numpy()
    work["ok"] = (work["status"] == "ok").to_numpy() & np.isfinite(work["load_ms"].to_numpy())
    if "batch_id" in df.columns:
        batch = pd.to_numeric(df["batch_id"], errors="coerce").to_numpy(dtype="float64")
        if "run_id" in df.columns and df["run_id"].nunique() > 1:  # merged runs: batch ids repeat across runs
            runs = pd.factorize(df["run_id"].astype(object))[0].astype("float64")
            batch = np.where(np.isnan(batch), np.nan, runs * 1e9 + batch)
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


def with_metric(work: pd.DataFrame, metric: str) -> pd.DataFrame:
    """``work`` with ``metric`` in the place of load_ms, so that every load_ms statistic applies to it.

    A trial that loaded (status ok) but has no value of ``metric`` was not measured for it (native
    has no cgroup: no cpu_ms; results from before the timeline have none at all) and is left out;
    failed trials stay and are counted as failed. Raises AnalysisError for an unknown metric.
    """
    if metric == "load_ms":
        return work
    if metric not in METRICS:
        raise AnalysisError(f"metric {metric!r} is not one of {', '.join(METRICS)}")
    values = work[metric] if metric in work.columns else pd.Series(np.nan, index=work.index)
    measured = np.isfinite(values.to_numpy(dtype="float64"))
    keep = measured | (work["status"] != "ok").to_numpy()
    out = work[keep].copy()
    out["load_ms"] = values[keep].to_numpy(dtype="float64")
    out["ok"] = (out["status"] == "ok").to_numpy() & np.isfinite(out["load_ms"].to_numpy())
    return out


def has_metric(df: pd.DataFrame, metric: str) -> bool:
    """Whether any trial of ``df`` has a value of ``metric`` (older results have no timeline columns)."""
    return metric in df.columns and bool(pd.to_numeric(df[metric], errors="coerce").notna().any())


def factors_present(work: pd.DataFrame) -> list[str]:
    """Factor columns (besides runtime, module, concurrency) with more than one level."""
    return [f for f in FACTORS if f in work.columns and work[f].nunique() > 1]


def cell_keys(work: pd.DataFrame) -> list[str]:
    return ["module", "concurrency", *factors_present(work)]


def ensure_prepared(df: pd.DataFrame) -> pd.DataFrame:
    return df if {"ok", "cluster", "repeated"} <= set(df.columns) else prepare(df)


def mark_oversubscribed(table: pd.DataFrame, cores: int | dict[str, int | None] | None) -> pd.DataFrame:
    """``table`` with an ``oversubscribed`` column: more loads at once (concurrency) than the host's cores.

    Such cells queue for the CPU under every runtime, so they measure the scheduler as much as the
    sandbox. Without a ``concurrency`` column the table is returned as is; with ``cores`` unknown the
    column is empty (None). ``cores`` may be a dict {engine: cores} (merged runs): each row is judged
    against its engine's host (a table without an ``engine`` column holds one engine's rows).
    """
    if "concurrency" not in table.columns:
        return table
    if isinstance(cores, dict):
        only = next(iter(cores.values())) if len(cores) == 1 else None
        limits = [cores.get(str(e)) for e in table["engine"]] if "engine" in table.columns else [only] * len(table)
        values = [None if c is None else int(level) > int(c)
                  for level, c in zip(table["concurrency"].astype(int), limits, strict=True)]
        return table.assign(oversubscribed=pd.Series(values, index=table.index, dtype=object))
    values = [None] * len(table) if cores is None else (table["concurrency"].astype(int) > int(cores)).tolist()
    return table.assign(oversubscribed=pd.Series(values, index=table.index, dtype=object))
