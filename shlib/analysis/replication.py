"""The claims of the reference study (Kim & Yu 2020) beside this run's estimates, with verdicts."""

from __future__ import annotations

import math
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd

from shlib.analysis.frames import FACTORS
from shlib.errors import AnalysisError


def reference_path() -> Path:
    """The claims of Kim & Yu 2020, shipped with the package (shlib/analysis/reference/kim-yu-2020.csv)."""
    return Path(str(resources.files("shlib.analysis.reference").joinpath("kim-yu-2020.csv")))


def load_reference(path: str | Path | None = None) -> pd.DataFrame:
    """The reference study's claims as a table (default: Kim & Yu 2020)."""
    path = Path(path) if path is not None else reference_path()
    if not path.exists():
        raise AnalysisError(f"reference claims file {path} not found "
                            "(the package's own is shlib/analysis/reference/kim-yu-2020.csv)")
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
