"""Tables that notebooks and reports show: the host, a run, its runtimes, load times and ratios.

Each returns a DataFrame computed from shlib's own data (the doctor report, a run's metadata, the
tables of ``shlib.analysis.analyze``); nothing here measures or estimates.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from importlib import metadata as importlib_metadata
from typing import Any

import numpy as np
import pandas as pd

from shlib.analysis.frames import FACTORS
from shlib.analysis.variants import file_access
from shlib.results.metadata import RunMetadata

#: Packages whose versions travel with a notebook's output (what produced the numbers).
VERSION_PACKAGES = ("shlib", "numpy", "pandas", "scipy", "pyarrow", "matplotlib", "docker", "pydantic",
                    "papermill", "nbconvert", "ipykernel", "jupyterlab")


def runtime_catalog(runtimes: Mapping[str, Any]) -> pd.DataFrame:
    """One row per runtime of the catalog (``shlib.collect.runtimes.catalog`` or a doctor report's ``runtimes``)."""
    rows = []
    for name, rt in runtimes.items():
        rt = rt if isinstance(rt, Mapping) else rt.as_dict()
        args = list(rt.get("args") or [])
        rows.append({
            "runtime": name, "kind": rt.get("kind"), "available": bool(rt.get("available")),
            "version": rt.get("version") or "", "platform": rt.get("platform") or "",
            "file_access": file_access(args, rt.get("kind")), "args": " ".join(args),
            "why_unavailable": rt.get("reason") or "", "to_install": rt.get("hint") or "",
        })
    columns = ["runtime", "kind", "available", "version", "platform", "file_access", "args", "why_unavailable",
               "to_install"]
    return pd.DataFrame(rows, columns=columns)


def doctor_tables(report: Mapping[str, Any]) -> dict[str, pd.DataFrame]:
    """``shlib.cli.doctor_report()`` as three tables: engine, runtimes, host."""
    engine = dict(report.get("engine") or {})
    if "registered_runtimes" in engine:
        engine["registered_runtimes"] = ", ".join(engine["registered_runtimes"])
    host = dict(report.get("host") or {})
    if host.get("mem_total_bytes"):
        host["mem_total_gib"] = round(host.pop("mem_total_bytes") / 2**30, 1)
    return {"engine": _facts(engine), "runtimes": runtime_catalog(report.get("runtimes") or {}),
            "host": _facts(host)}


def _facts(values: Mapping[str, Any]) -> pd.DataFrame:
    return pd.DataFrame({"fact": list(values), "value": [_text(v) for v in values.values()]})


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list | tuple):
        return ", ".join(map(str, value))
    return str(value)


def versions(packages: Iterable[str] = VERSION_PACKAGES) -> pd.DataFrame:
    """Installed versions of the packages that produce and analyse the numbers (Python included)."""
    import platform
    import sys

    rows = [{"package": "python", "version": platform.python_version(), "where": sys.executable}]
    for name in packages:
        try:
            version = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            version = "not installed"
        rows.append({"package": name, "version": version, "where": ""})
    return pd.DataFrame(rows)


def spec_table(spec: Any) -> pd.DataFrame:
    """An experiment spec as a two-column table (field, value)."""
    data = spec.as_dict() if hasattr(spec, "as_dict") else dict(spec)
    return pd.DataFrame({"field": list(data), "value": [_text(v) for v in data.values()]})


def run_facts(metadata: RunMetadata) -> pd.DataFrame:
    """Provenance of a run: id, status, when, where, with what (from its metadata.json)."""
    host, engine = metadata.host, metadata.engine or {}
    facts = {
        "run_id": metadata.run_id, "status": metadata.status, "schema_version": metadata.schema_version,
        "started_at": metadata.started_at, "finished_at": metadata.finished_at,
        "shlib_version": metadata.shlib_version, "seed": metadata.seed,
        "host": f"{host.cpu_model or '?'}, {host.cpu_count or '?'} cores, kernel {host.kernel or '?'}"
        if host.kernel else "", "docker": engine.get("docker_version"), "containerd": engine.get("containerd_version"),
        "node": ", ".join(sorted({str(i.node_version) for i in metadata.images.values()})) or host.host_node,
        "modules": ", ".join(f"{m.get('module')}@{m.get('version')}" for m in metadata.library.modules),
        "trials by status": ", ".join(f"{k}: {v}" for k, v in metadata.counts.items()),
        "simulated": metadata.simulated or None,
    }
    return _facts({k: v for k, v in facts.items() if v not in (None, "")})


def run_overview(frame: pd.DataFrame) -> pd.DataFrame:
    """Trials (processes) per runtime and status, with the number of module loads that were ok."""
    if len(frame) == 0:
        return pd.DataFrame(columns=["runtime"])
    trials = frame.drop_duplicates("trial_id") if "trial_id" in frame.columns else frame
    table = pd.crosstab(trials["runtime"].astype(str), trials["status"].astype(str)).rename_axis(columns=None)
    table.insert(0, "trials", table.sum(axis=1))
    ok = frame[frame["status"].astype(str) == "ok"]
    table["ok_module_loads"] = ok.groupby(ok["runtime"].astype(str)).size().reindex(table.index).fillna(0).astype(int)
    table["concurrency"] = frame.groupby(frame["runtime"].astype(str), observed=True)["concurrency"].agg(
        lambda s: ", ".join(map(str, sorted(set(s))))).reindex(table.index)
    return table.reset_index().rename(columns={"index": "runtime"})


def skew_table(frame: pd.DataFrame) -> pd.DataFrame:
    """How 'at once' the containers of a batch started: batch start skew (ms) per runtime and concurrency."""
    if "batch_skew_ms" not in frame.columns or len(frame) == 0:
        return pd.DataFrame(columns=["runtime", "concurrency", "batches", "median_skew_ms", "max_skew_ms"])
    batches = frame.drop_duplicates("batch_id") if "batch_id" in frame.columns else frame
    grouped = batches.groupby([batches["runtime"].astype(str), "concurrency"], observed=True)["batch_skew_ms"]
    out = grouped.agg(batches="size", median_skew_ms="median", max_skew_ms="max").reset_index()
    return out.round({"median_skew_ms": 1, "max_skew_ms": 1})


def ratio_overview(ratio_summary: pd.DataFrame, baseline: str | None = None, statistic: str = "median",
                   runtimes: Iterable[str] | None = None) -> pd.DataFrame:
    """Ratio to ``baseline`` per runtime and concurrency (geometric mean over modules), with its interval."""
    if len(ratio_summary) == 0:
        return pd.DataFrame(columns=["runtime", "baseline", "concurrency", "ratio", "ci_low", "ci_high",
                                     "n_modules", "note"])
    rows = ratio_summary[ratio_summary["statistic"] == statistic]
    if baseline is not None:
        rows = rows[rows["baseline"] == baseline]
    if runtimes is not None:
        rows = rows[rows["runtime"].isin(list(runtimes))]
    out = rows.rename(columns={"gmean_ratio": "ratio"})
    keep = [c for c in ("runtime", "runtime_kind", "baseline", "concurrency", "oversubscribed", *FACTORS,
                        "ratio", "ci_low", "ci_high", "n_modules", "ci_method", "note")
            if c in out.columns]
    return out[keep].reset_index(drop=True)


def module_ratios(ratios: pd.DataFrame, baseline: str | None = None, statistic: str = "median") -> pd.DataFrame:
    """Per-module ratios to ``baseline`` with their intervals (the cells behind the overview)."""
    if len(ratios) == 0:
        return ratios
    rows = ratios[ratios["statistic"] == statistic]
    if baseline is not None:
        rows = rows[rows["baseline"] == baseline]
    keep = [c for c in ("runtime", "baseline", "module", "concurrency", *FACTORS,
                        "ratio", "ci_low", "ci_high", "ci_method", "n", "n_baseline", "n_batches", "note")
            if c in rows.columns]
    return rows[keep].reset_index(drop=True)


def load_time_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Median load time (ms) per module and runtime (rows) and concurrency (columns)."""
    if len(summary) == 0:
        return summary
    index = [c for c in ("module", *FACTORS) if c in summary.columns]
    table = summary.pivot_table(index=[*index, "runtime"], columns="concurrency", values="median_ms",
                                observed=True)
    table.columns = [f"c={c} median_ms" for c in table.columns]
    return table.round(1)


def ratio_by_concurrency(ratio_summary: pd.DataFrame, baseline: str, statistic: str = "median") -> pd.DataFrame:
    """Ratio to the baseline per runtime (rows) and concurrency (columns), as 'ratio [low, high]' text."""
    rows = ratio_overview(ratio_summary, baseline, statistic)
    if len(rows) == 0:
        return rows
    text = [interval_text(r.ratio, r.ci_low, r.ci_high) for r in rows.itertuples()]
    index = ["runtime", *(f for f in FACTORS if f in rows.columns)]  # e.g. one row per runtime and language
    table = rows.assign(text=text).pivot(index=index, columns="concurrency", values="text")
    crowded = set(rows.loc[rows["oversubscribed"] == True, "concurrency"]) if "oversubscribed" in rows else set()  # noqa: E712
    table.columns = [f"c={c}" + (" (CPU oversubscribed)" if c in crowded else "") for c in table.columns]
    return table


def interval_text(value: Any, low: Any, high: Any, digits: int = 2, unit: str = "x") -> str:
    """'3.20x [2.71, 3.80]' (a ratio; ``unit=""`` for a time); an estimate without an interval says so."""
    value, low, high = float(value), float(low), float(high)
    if not np.isfinite(value):
        return "n/a"
    if not (np.isfinite(low) and np.isfinite(high)):
        return f"{value:.{digits}f}{unit} (no interval)"
    return f"{value:.{digits}f}{unit} [{low:.{digits}f}, {high:.{digits}f}]"


#: How the gVisor contrast factors read in tables and sentences.
FACTOR_LABELS = {"gvisor_build": "build", "platform": "platform", "directfs": "directfs",
                 "file_access_mounts": "file-access-mounts", "overlay2": "overlay2", "dcache": "dcache"}


def effect_word(low: Any, high: Any) -> str:
    """'faster' / 'slower' when a load-time ratio's interval excludes 1, else 'no clear effect'."""
    low, high = float(low), float(high)
    if not (np.isfinite(low) and np.isfinite(high)):
        return "no interval"
    return "faster" if high < 1 else "slower" if low > 1 else "no clear effect (interval spans 1)"


def switch_effects(contrasts: pd.DataFrame) -> pd.DataFrame:
    """Each single-factor gVisor contrast at a glance: the change, the build it was made on, the load-time ratio
    (changed / default) with its interval, and whether the interval says faster, slower or neither."""
    columns = ["factor", "change", "build", "concurrency", "load_time_ratio", "effect", "runtime", "compared_with"]
    rows = [{"factor": FACTOR_LABELS.get(r.factor, r.factor), "change": f"{r.from_value} -> {r.to_value}",
             "build": r.gvisor_build if "gvisor_build" in contrasts.columns else "", "concurrency": r.concurrency,
             "load_time_ratio": interval_text(r.ratio, r.ci_low, r.ci_high), "effect": effect_word(r.ci_low, r.ci_high),
             "runtime": r.runtime, "compared_with": r.compared_with} for r in contrasts.itertuples()]
    return pd.DataFrame(rows, columns=columns)


def tests_overview(tests: pd.DataFrame) -> pd.DataFrame:
    """The tests table at a glance: runtime (rows) x concurrency (columns), 'ratio [low, high] *' where * marks
    a difference from the baseline significant after Holm's correction (the CSV keeps every column)."""
    if len(tests) == 0:
        return pd.DataFrame(columns=["runtime"])
    text = [interval_text(r.ratio, r.ci_low, r.ci_high) + (" *" if r.significant else "")
            + (" (oversubscribed)" if getattr(r, "oversubscribed", None) is True else "") for r in tests.itertuples()]
    index = ["runtime", *(f for f in FACTORS if f in tests.columns)]
    table = tests.assign(text=text).pivot_table(index=index, columns="concurrency", values="text",
                                                aggfunc="first")
    table.columns = [f"c={c}" for c in table.columns]
    return table


def replication_overview(replication: pd.DataFrame) -> pd.DataFrame:
    """The replication table at a glance: claim, runtime pair, verdict, the interval it rests on and its reason."""
    if len(replication) == 0:
        return replication
    rows = []
    for r in replication.itertuples():
        measured = isinstance(r.runtime, str) and bool(r.runtime)
        engine = getattr(r, "engine", None)
        rows.append({"claim": r.claim, **({"engine": engine} if isinstance(engine, str) else {}),
                     "runtime": r.runtime if measured else "", "baseline": r.baseline if measured
                     else "", "verdict": r.verdict,
                     "max/min cell ratio [simultaneous interval]": interval_text(r.estimate, r.ci_low, r.ci_high)
                     if measured else "",
                     "gmean over modules [interval]": interval_text(r.gmean_ratio, r.gmean_ci_low, r.gmean_ci_high)
                     if measured else "", "reason": r.reason, "note": r.note if isinstance(r.note, str) else ""})
    return pd.DataFrame(rows)


def trend_overview(scaling: pd.DataFrame) -> pd.DataFrame:
    """The ratio's trend with concurrency per runtime and module: per-level ratios, the lack-of-fit p and the slope
    (given only where a log-linear trend fits)."""
    if len(scaling) == 0 or "ratio_by_level" not in scaling.columns:
        return pd.DataFrame(columns=["runtime", "module"])
    rows = scaling[scaling["ratio_by_level"].astype(str) != ""]
    slope = [f"{r.ratio_pct_per_container:+.1f}% [{r.ratio_pct_ci_low:+.1f}%, {r.ratio_pct_ci_high:+.1f}%]"
             if np.isfinite(r.ratio_pct_per_container) else "no slope: a log-linear trend does not fit"
             if r.ratio_trend_fits is False else "" for r in rows.itertuples()]
    keep = [c for c in ("runtime", "module", *FACTORS) if c in rows.columns]
    return rows[keep].assign(ratio_by_level=rows["ratio_by_level"], lack_of_fit_p=rows["ratio_trend_p"].round(4),
                             ratio_change_per_container=slope).reset_index(drop=True)


def engine_runtime_table(engines: pd.DataFrame) -> pd.DataFrame:
    """The engine x runtime comparison (``analysis.engines.across_engines``) as a grid: one row per runtime
    and concurrency, one column per engine, each cell the ratio to the baseline with its 95% interval."""
    if len(engines) == 0:
        return pd.DataFrame(columns=["runtime", "baseline", "concurrency"])
    cells = engines.assign(cell=[interval_text(v, lo, hi) for v, lo, hi in
                                 zip(engines["gmean_ratio"], engines["ci_low"], engines["ci_high"], strict=True)])
    grid = cells.pivot_table(index=["runtime", "baseline", "concurrency"], columns="engine", values="cell",
                             aggfunc="first", observed=True)
    grid.columns = [str(c) for c in grid.columns]
    return grid.reset_index().fillna("")


def engine_facts_table(metadatas: Iterable[RunMetadata]) -> pd.DataFrame:
    """One row per run: its engine (label, kind, version, host) and that host's cores, memory and kernel."""
    rows = []
    for meta in metadatas:
        engine = meta.engine or {}
        rows.append({"run_id": meta.run_id, "engine": engine.get("label"), "kind": engine.get("kind"),
                     "version": engine.get("version"), "engine_host": engine.get("name"),
                     "engine_id": engine.get("id"), "cpu_model": meta.host.cpu_model, "cores": meta.host.cpu_count,
                     "mem_gib": round(meta.host.mem_total_bytes / 2**30, 1) if meta.host.mem_total_bytes else None,
                     "kernel": meta.host.kernel, "status": meta.status})
    return pd.DataFrame(rows, columns=["run_id", "engine", "kind", "version", "engine_host", "engine_id",
                                       "cpu_model", "cores", "mem_gib", "kernel", "status"])
