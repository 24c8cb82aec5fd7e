"""Each runtime's ratio to its baseline on each engine: the engine x runtime comparison of merged runs.

Ratios are computed within an engine (``engine`` is a cell factor, ``shlib.analysis.frames``): a
runtime on one host is never divided by a baseline measured on another. This table sets those
within-engine ratios side by side, so that a reader sees whether gVisor's cost relative to runc is
the same on a 2-core VM and on a bare-metal server; comparing raw load times across engines would
mix the sandbox with the machine.
"""

from __future__ import annotations

import pandas as pd

from shlib.analysis.frames import ensure_prepared

COLUMNS = ["engine", "engine_host", "engine_kind", "runtime", "runtime_kind", "baseline", "concurrency",
           "statistic", "gmean_ratio", "ci_low", "ci_high", "ci_method", "n_modules", "modules", "n_engines",
           "note"]


def engines_of(df: pd.DataFrame) -> pd.DataFrame:
    """One row per engine of a results frame: engine, engine_host, engine_kind (native rows aside)."""
    work = df if "engine" in df.columns else ensure_prepared(df)
    rows = work[work["runtime_kind"].astype(str) != "native"] if "runtime_kind" in work.columns else work
    rows = rows if len(rows) else work
    columns = [c for c in ("engine", "engine_host", "engine_kind") if c in rows.columns]
    if "engine" not in columns:
        return pd.DataFrame(columns=["engine", "engine_host", "engine_kind"])
    found = rows[columns].astype(object).drop_duplicates("engine").sort_values("engine")
    return found.reindex(columns=["engine", "engine_host", "engine_kind"]).reset_index(drop=True)


def across_engines(ratio_summary: pd.DataFrame, df: pd.DataFrame, statistic: str = "median") -> pd.DataFrame:
    """Each runtime's geometric-mean ratio (over modules, with its interval) per engine and concurrency.

    ``ratio_summary``: ``ratios.summary_across_modules`` of a (merged) analysis; ``df``: its results
    frame, which names the engines (with one engine the summary has no ``engine`` column). Only the
    main comparisons are kept (the baseline of the summary's first row where several are present).
    ``n_engines``: on how many engines that runtime has a ratio at that concurrency; ``note`` says when
    the engines' module sets differ (their geometric means then cover different modules).
    """
    engines = engines_of(df)
    if len(ratio_summary) == 0 or len(engines) == 0:
        return pd.DataFrame(columns=COLUMNS)
    table = ratio_summary[ratio_summary["statistic"] == statistic].copy()
    if "engine" not in table.columns:
        table["engine"] = str(engines["engine"].iloc[0])
    extra = [c for c in engines.columns if c == "engine" or c not in table.columns]
    table = table.merge(engines[extra], on="engine", how="left")
    group = ["runtime", "baseline", "concurrency"]
    table["n_engines"] = table.groupby(group, observed=True)["engine"].transform("nunique")
    modules = table.groupby(group, observed=True)["modules"].transform("nunique")
    note = table["note"].astype(object).where(table["note"].notna(), "") if "note" in table.columns else ""
    differ = modules.gt(1).map({True: "engines measured different modules: the means are not like for like",
                               False: ""})
    table["note"] = [("; ".join(x for x in (a, b) if x)) for a, b in zip(note, differ, strict=True)]
    table = table.reindex(columns=COLUMNS)
    return table.sort_values(["runtime", "concurrency", "engine"]).reset_index(drop=True)
