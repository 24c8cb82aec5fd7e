"""The claims of the reference study (Kim & Yu 2020) beside this run's estimates, with verdicts.

A claim about a maximum ("up to ~16x") or a minimum ("at least 2.7x") ranges over cells (module x
concurrency). The quantity judged is the largest (smallest) true cell ratio over the claim's cells:
the claim's mount, and only cells where the host had a core per load (``cores``) unless every cell
is oversubscribed. Its interval is simultaneous over those cells, not the envelope of pointwise
intervals (which lets the noisiest cell decide and makes every added cell push toward agreement):

    max claim   upper = max over cells of the cell's 95% upper bound (one-sided 97.5%: the cell that
                        is the true max is below its own upper bound with that chance, so the max is
                        too, whichever cell it is);
                lower = max over the cells that can still be the max of Bonferroni-adjusted lower
                        bounds (one-sided 1 - alpha/(2k) each, k such cells: all k hold at once with
                        chance >= 97.5%, and the true max is at least each of them). A cell can still
                        be the max when its adjusted upper bound reaches the largest adjusted lower
                        bound over all cells (a conservative first step, as in Chernozhukov, Lee &
                        Rosen 2013's adaptive inequality selection).
    min claim   the mirror image.

An adjusted bound rescales the cell's BCa half-width on the log scale by the ratio of Student-t
quantiles (Welch df of the cell, normal when unknown), which keeps the interval's asymmetry.
Verdicts: "smaller" / "larger" when the interval lies below / above the claimed range (the value at
its stated precision); "inconclusive" when it overlaps the claim but also holds half or double the
claimed value (it cannot tell the claim from half or twice it), or when the cell that decides is
itself unresolved (its own interval holds both half and double its estimate) or has no interval;
"consistent" otherwise. A claim twice the true maximum is then called consistent only when the lower
bound exceeds the truth: at most 2.5% of the time by construction. Each verdict has a one-line reason
naming the cells, and beside it the geometric mean over modules at the lowest concurrency, with its
interval: the summary a reader can trust.
"""

from __future__ import annotations

import math
from importlib import resources
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import stats

from shlib.analysis.defaults import CONFIDENCE
from shlib.analysis.frames import FACTORS
from shlib.analysis.ratios import summary_across_modules
from shlib.errors import AnalysisError

VERDICTS = ("consistent", "smaller", "larger", "inconclusive", "not measured (runtime absent)")
#: A cell whose interval holds both half and double its estimate (high / low >= 4) cannot decide a claim.
UNRESOLVED_SPAN = 4.0


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


COLUMNS = ["claim_id", "claim", "numerator_kind", "denominator_kind", "runtime", "baseline", "statistic",
           "ratio_statistic", "claimed_value", "claimed_low", "claimed_high", "engine", "estimate", "ci_low", "ci_high",
           "ci_method", "n_cells", "n_cells_set_aside", "mount_fallback", "cell_of_estimate", "deciding_cell",
           "verdict", "reason", "gmean_concurrency", "gmean_ratio", "gmean_ci_low", "gmean_ci_high", "note"]


def replication(ratio_table: pd.DataFrame, reference: pd.DataFrame | str | Path | None = None,
                statistic: str = "median", cores: int | dict[str, int | None] | None = None,
                confidence: float = CONFIDENCE) -> pd.DataFrame:
    """Each claim of the reference study beside this run's simultaneous interval and a verdict (module doc).

    ``ratio_table`` holds per-cell ratios (``ratios``), possibly for several baselines concatenated. Only its
    Node cells are judged (``language`` node, when the column is there: the study measured Node.js).
    Runtimes are matched by kind; each gVisor variant (and each denominator runtime of the claimed kind)
    is judged separately. ``cores``: the host's core count; cells with more loads at once than cores
    are set aside (and counted) unless every cell is; for merged runs a dict {engine: cores}.
    With several engines (an ``engine`` column), each engine gets its own verdict: a claim is
    replicated, or not, on one machine and engine at a time.
    Columns: see ``COLUMNS``; ``reason`` is the verdict's one-line reason, ``note`` what else was done.
    """
    ref = reference if isinstance(reference, pd.DataFrame) else load_reference(reference)
    # The study loaded npm modules in Node.js: its claims are judged on Node cells only, never on Python imports.
    other_language = ""
    if "language" in ratio_table.columns and len(ratio_table):
        languages = set(ratio_table["language"].astype(str))
        if "node" not in languages:
            other_language = ", ".join(sorted(languages))
        ratio_table = ratio_table[ratio_table["language"].astype(str) == "node"]
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
        if other_language:
            records.append({**base, "verdict": VERDICTS[-1], "reason": f"no Node.js cell in this run (only "
                            f"{other_language}): the study's claims are about Node.js module loading"})
            continue
        if absent:
            records.append({**base, "verdict": VERDICTS[-1], "reason": f"no {' or '.join(absent)} runtime in this run"})
            continue
        pairs = table[(table["runtime_kind"].astype(str) == claim["numerator_kind"])
                      & (table["baseline_kind"].astype(str) == claim["denominator_kind"])]
        if len(pairs) == 0:
            records.append({**base, "verdict": VERDICTS[-1],
                            "reason": f"no ratio of {claim['numerator_kind']} to {claim['denominator_kind']} in the "
                                      "ratio table (compute ratios with that baseline)"})
            continue
        by = ["runtime", "baseline", *(["engine"] if "engine" in pairs.columns else [])]
        for key, rows in pairs.groupby(by, sort=True, observed=True):
            runtime, baseline, engine = (*key, None)[:3]
            engine_cores = cores.get(str(engine)) if isinstance(cores, dict) else cores
            records.append({**base, "runtime": runtime, "baseline": baseline, "engine": engine,
                            **judge(claim, rows, cores=engine_cores, confidence=confidence)})
    return pd.DataFrame.from_records(records, columns=COLUMNS)


def _cell_name(row: pd.Series | dict) -> str:
    where = f"{row['module']} at {int(row['concurrency'])} container{'s' if int(row['concurrency']) != 1 else ''}" \
        if "module" in row and "concurrency" in row else "a cell"
    # the claims are Node's and judged per engine (its own column): neither needs naming in a cell
    named = [f for f in FACTORS if f not in ("mount", "language", "engine")]
    extra = "".join(f", {f}={row[f]}" for f in named if f in row and isinstance(row[f], str))
    return where + extra


def _cell_text(row: pd.Series | dict) -> str:
    lo, hi = float(row["ci_low"]), float(row["ci_high"])
    ci = f" [{lo:.2f}, {hi:.2f}]" if np.isfinite(lo) and np.isfinite(hi) else " (no interval)"
    return f"{_cell_name(row)} ({float(row['ratio']):.2f}x{ci})"


def _adjusted(rows: pd.DataFrame, k: int, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """Cell bounds adjusted to one-sided 1 - alpha/(2k) each: BCa half-widths rescaled on the log scale."""
    alpha = 1 - confidence
    df = rows["df"].to_numpy(float) if "df" in rows.columns else np.full(len(rows), np.inf)
    df = np.where(np.isfinite(df) & (df > 0), df, np.inf)
    scale = np.where(np.isinf(df), stats.norm.ppf(1 - alpha / (2 * k)) / stats.norm.ppf(1 - alpha / 2),
                     stats.t.ppf(1 - alpha / (2 * k), np.where(np.isinf(df), 1.0, df))
                     / stats.t.ppf(1 - alpha / 2, np.where(np.isinf(df), 1.0, df)))
    logr = np.log(rows["ratio"].to_numpy(float))
    lo = np.log(rows["ci_low"].to_numpy(float))
    hi = np.log(rows["ci_high"].to_numpy(float))
    return np.exp(logr - scale * (logr - lo)), np.exp(logr + scale * (hi - logr))


def simultaneous_extreme(rows: pd.DataFrame, take_max: bool, confidence: float = CONFIDENCE
                         ) -> tuple[float, float, int, int, int, int]:
    """(low, high, i_low, i_high, n_candidates, i_estimate) for the max (min) of the cells' true ratios.

    ``rows`` need finite positive ratio, ci_low, ci_high (and optionally ``df``). i_low / i_high are the
    positions of the cells that give each bound. See the module doc for the construction.
    """
    ratio = rows["ratio"].to_numpy(float)
    lo, hi = rows["ci_low"].to_numpy(float), rows["ci_high"].to_numpy(float)
    sign = 1.0 if take_max else -1.0
    # work with the max of sign*log: a min claim is the max of the reciprocals
    pt_hi = np.log(hi) if take_max else -np.log(lo)  # pointwise one-sided bound on the side that caps the max
    adj_lo_all, adj_hi_all = _adjusted(rows, len(rows), confidence)
    s_lo_all = np.log(adj_lo_all) if take_max else -np.log(adj_hi_all)
    s_hi_all = np.log(adj_hi_all) if take_max else -np.log(adj_lo_all)
    candidates = np.flatnonzero(s_hi_all >= s_lo_all.max())
    adj_lo, adj_hi = _adjusted(rows.iloc[candidates], len(candidates), confidence)
    s_lo = np.log(adj_lo) if take_max else -np.log(adj_hi)
    i_low = int(candidates[np.argmax(s_lo)])
    i_high = int(np.argmax(pt_hi))
    bound_low, bound_high = float(np.exp(sign * s_lo.max())), float(np.exp(sign * pt_hi.max()))
    i_est = int(np.argmax(sign * np.log(ratio)))
    if take_max:
        return bound_low, bound_high, i_low, i_high, len(candidates), i_est
    return bound_high, bound_low, i_high, i_low, len(candidates), i_est


def judge(claim: dict, rows: pd.DataFrame, cores: int | None = None, confidence: float = CONFIDENCE) -> dict:
    """The verdict on one claim for one runtime pair, from its cells (module doc)."""
    notes: list[str] = []
    out = {"estimate": math.nan, "ci_low": math.nan, "ci_high": math.nan, "ci_method": "none", "n_cells": 0,
           "n_cells_set_aside": 0, "mount_fallback": False, "cell_of_estimate": "", "deciding_cell": "",
           "gmean_concurrency": math.nan, "gmean_ratio": math.nan, "gmean_ci_low": math.nan,
           "gmean_ci_high": math.nan}
    mount = claim.get("mount")
    if isinstance(mount, str) and mount and "mount" in rows.columns:
        matching = rows[rows["mount"].astype(str) == mount]
        if len(matching):
            rows = matching
        else:
            out["mount_fallback"] = True
            notes.append(f"MOUNT FALLBACK: no cell has the claim's mount ({mount}); cells of mount "
                         f"{', '.join(sorted(set(rows['mount'].astype(str))))} used instead, not like for like")
    if cores is not None and "concurrency" in rows.columns and len(rows):
        crowded = rows["concurrency"].astype(int) > int(cores)
        if crowded.all():
            notes.append(f"every cell has more loads at once than the host's {cores} cores (CPU oversubscribed): "
                         "used anyway")
        elif crowded.any():
            levels = sorted(set(rows.loc[crowded, "concurrency"].astype(int)))
            out["n_cells_set_aside"] = int(crowded.sum())
            notes.append(f"{int(crowded.sum())} cell(s) at concurrency {', '.join(map(str, levels))} set aside: more "
                         f"loads at once than the host's {cores} cores (CPU oversubscribed)")
            rows = rows[~crowded]
    elif cores is None:
        notes.append("host core count unknown: CPU oversubscription not checked")
    rows = rows[np.isfinite(rows["ratio"].astype(float)) & (rows["ratio"].astype(float) > 0)].reset_index(drop=True)
    if len(rows) == 0:
        return {**out, "verdict": VERDICTS[-1], "reason": "no cell has ok trials of both runtimes",
                "note": "; ".join(notes)}
    out.update(_reader_summary(rows, confidence))
    take_max = claim["statistic"] == "max"
    ratio = rows["ratio"].to_numpy(float)
    i_est = int(np.argmax(ratio) if take_max else np.argmin(ratio))
    out.update(estimate=float(ratio[i_est]), n_cells=len(rows), cell_of_estimate=_cell_name(rows.iloc[i_est]))
    v, v_low, v_high = float(claim["value"]), float(claim["value_low"]), float(claim["value_high"])
    what = "largest" if take_max else "smallest"
    lo, hi = rows["ci_low"].to_numpy(float), rows["ci_high"].to_numpy(float)
    no_ci = ~(np.isfinite(lo) & np.isfinite(hi) & (lo > 0))
    if no_ci.any():
        names = "; ".join(_cell_name(rows.iloc[i]) for i in np.flatnonzero(no_ci))
        return {**out, "deciding_cell": names, "verdict": "inconclusive",
                "reason": f"no interval for {names}: the {what} cell ratio cannot be bounded "
                          f"(estimate alone {ratio[i_est]:.2f}x (no interval) at {_cell_name(rows.iloc[i_est])})",
                "note": "; ".join(notes)}
    low, high, i_low, i_high, k, _ = simultaneous_extreme(rows, take_max, confidence)
    out.update(ci_low=low, ci_high=high, ci_method=f"simultaneous over {len(rows)} cells "
               f"(Bonferroni over the {k} that can be the {'max' if take_max else 'min'})")
    span = f"{what} cell ratio {ratio[i_est]:.2f}x, simultaneous interval [{low:.2f}, {high:.2f}] "
    span += f"over {len(rows)} cells"
    cell_low, cell_high = rows.iloc[i_low], rows.iloc[i_high]
    if high < v_low:
        decider = cell_high if take_max else cell_low
        verdict, reason = "smaller", (f"{span} lies below the claimed {v:g}x; its upper end comes from "
                                      f"{_cell_text(decider)}")
    elif low > v_high:
        decider = cell_low if take_max else cell_high
        verdict, reason = "larger", (f"{span} lies above the claimed {v:g}x; its lower end comes from "
                                     f"{_cell_text(decider)}")
    else:
        decider = cell_high if take_max else cell_low
        own = float(decider["ci_high"]) / float(decider["ci_low"])
        if low <= v / 2 or high >= 2 * v:
            which = " and ".join(x for x, hit in ((f"half the claim ({v / 2:g}x)", low <= v / 2),
                                                  (f"double it ({2 * v:g}x)", high >= 2 * v)) if hit)
            ends = f"lower end from {_cell_text(cell_low)}, upper end from {_cell_text(cell_high)}"
            verdict, reason = "inconclusive", f"{span} holds the claimed {v:g}x but also {which}; {ends}"
        elif own >= UNRESOLVED_SPAN:
            verdict, reason = "inconclusive", (f"{span} holds the claimed {v:g}x only through "
                                               f"{_cell_text(decider)}, a cell too noisy to decide")
        else:
            verdict, reason = "consistent", (f"{span} holds the claimed {v:g}x and excludes half and double it "
                                             f"(deciding cell {_cell_text(decider)})")
    return {**out, "deciding_cell": _cell_name(decider), "verdict": verdict, "reason": reason,
            "note": "; ".join(notes)}


def _reader_summary(rows: pd.DataFrame, confidence: float) -> dict:
    """Geometric mean over modules of the ratio at the lowest concurrency among the cells judged, with interval."""
    if "concurrency" not in rows.columns or "module" not in rows.columns:
        return {}
    level = int(rows["concurrency"].min())
    at = rows[rows["concurrency"] == level]
    if "batches_span_modules" not in at.columns:
        at = at.assign(batches_span_modules=False)
    summary = summary_across_modules(at, confidence=confidence)
    if len(summary) != 1:
        return {"gmean_concurrency": level}
    s = summary.iloc[0]
    return {"gmean_concurrency": level, "gmean_ratio": float(s["gmean_ratio"]), "gmean_ci_low": float(s["ci_low"]),
            "gmean_ci_high": float(s["ci_high"])}
