"""Time to answer: the adaptive mode against a fixed-repetition design reaching the same precision,
and the coverage of the intervals it leads to (optional stopping must not make them lie).

    run:       run_experiment with target_rel_halfwidth on a scaled-down paper design. A fixed design
               reaching the same precision with the same data needs, in every cell, as many repetitions as
               the slowest cell needed (a cell that met the target only at rep R had not met it before),
               so its cost is R_max x every cell's batch; its wall time is estimated from the median
               batch time of each cell measured in the adaptive run.
    replay:    the same comparison over 200 simulated replicates of that design (each cell's spread as
               measured in the run), with the fixed design at its oracle size: the fewest repetitions at
               which every cell meets the target in that replicate (the most favourable fixed design).
    coverage:  simulated cells with a known true ratio (shlib.simulate), run to the stopping rule
               (shlib.spec.adaptive.stopping_rep), then shlib.analysis.ratios.ratios on what was collected: how often
               the 95% intervals cover the truth; and the same for the previous rule (order-statistic
               interval of the batch medians) for comparison.
"""

from __future__ import annotations

import math
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from benchmarks.common import RUNTIMES, Row, Setup, verdict
from shlib.analysis.ratios import ratios
from shlib.analysis.summaries import median_ci
from shlib.collect.runner import run_experiment
from shlib.results.store import load_frame
from shlib.simulate import Scenario, simulate_results
from shlib.spec import adaptive

SAVING_GOAL = 0.5
COVERAGE_BAND = (0.93, 0.97)
TRUE_RATIO = 1.8


# ---------------------------------------------------------------------------------------------------
# Coverage by simulation

@dataclass(frozen=True)
class CoverageCase:
    """Simulated cells: lognormal trials (sigma), batches of ``concurrency`` sharing an effect (batch_sd)."""

    name: str
    sigma: float
    concurrency: int
    batch_sd: float
    target: float
    min_reps: int = 5
    max_reps: int = 120


CASES = (CoverageCase("c=1, sigma 0.3, target 0.20", 0.3, 1, 0.0, 0.20),
         CoverageCase("c=4, sigma 0.2 + batch 0.1, target 0.15", 0.2, 4, 0.1, 0.15))


def order_statistic_rep(batch_medians: list[float], target: float, min_reps: int, max_reps: int) -> int:
    """The previous rule: order-statistic 95% interval of the batch medians within target/sqrt(2)."""
    for reps in range(min_reps, min(max_reps, len(batch_medians)) + 1):
        values = np.asarray(batch_medians[:reps])
        low, high = median_ci(values)
        if np.isfinite(low) and (high - low) / 2 / np.median(values) <= target / math.sqrt(2):
            return reps
    return max_reps


def coverage(case: CoverageCase, n_cells: int, seed: int, rule: str = "adaptive",
             n_resamples: int = 1000) -> dict[str, float]:
    """Coverage of ratios' 95% intervals after stopping each simulated cell by ``rule``.

    ``n_cells`` independent ratios (runsc / runc, true ratio 1.8), simulated as that many modules.
    rule: "adaptive" (shlib.spec.adaptive), "order-statistic" (the previous rule) or "fixed:<reps>".
    """
    modules = {f"m{i:05d}": 30.0 for i in range(n_cells)}
    scenario = Scenario(speeds={"runc": 1.0, "runsc": TRUE_RATIO}, modules=modules,
                        concurrency=(case.concurrency,), trials_per_group=case.max_reps * case.concurrency,
                        sigma=case.sigma, batch_sd=case.batch_sd)
    frame = simulate_results(scenario, seed=seed)
    medians = (frame.groupby(["runtime", "module", "rep"], observed=True)["load_ms"].median()
               .reset_index().sort_values("rep"))
    stops: dict[tuple[str, str], int] = {}
    for (runtime, module), group in medians.groupby(["runtime", "module"], observed=True):
        values = group["load_ms"].tolist()
        if rule == "adaptive":
            stops[(runtime, module)] = adaptive.stopping_rep(values, case.target, case.min_reps, case.max_reps)
        elif rule == "order-statistic":
            stops[(runtime, module)] = order_statistic_rep(values, case.target, case.min_reps, case.max_reps)
        else:
            stops[(runtime, module)] = int(rule.split(":")[1])
    stop = pd.Series([stops[(r, m)] for r, m in zip(frame["runtime"], frame["module"], strict=True)],
                     index=frame.index)
    kept = frame[frame["rep"] < stop]
    table = ratios(kept, baseline="runc", seed=seed, n_resamples=n_resamples)
    out: dict[str, float] = {"cells": float(n_cells), "mean_reps": float(np.mean(list(stops.values()))),
                             "capped": float(np.mean([s >= case.max_reps for s in stops.values()]))}
    for statistic in ("median", "gmean"):
        rows = table[table["statistic"] == statistic]
        out[f"{statistic}_coverage"] = float(((rows["ci_low"] <= TRUE_RATIO) & (rows["ci_high"] >= TRUE_RATIO)).mean())
        half = (rows["ci_high"] - rows["ci_low"]) / 2 / rows["ratio"]
        out[f"{statistic}_halfwidth"] = float(half.median())
        out[f"{statistic}_met"] = float((half <= case.target).mean())
    return out


def coverage_rows(n_cells: int, seed: int, log: Callable[[str], None] = print) -> list[Row]:
    rows = []
    for i, case in enumerate(CASES):
        new = coverage(case, n_cells, seed + i)
        old = coverage(case, n_cells, seed + i, rule="order-statistic")
        se = math.sqrt(0.95 * 0.05 / n_cells)
        n = f"{n_cells} sim. ratios (MC s.e. {se:.3f})"
        for label, res in (("adaptive rule", new), ("previous order-statistic rule", old)):
            goal = f"{COVERAGE_BAND[0]:.2f}-{COVERAGE_BAND[1]:.2f}" if label == "adaptive rule" else ""
            for statistic in ("median", "gmean"):
                cov = res[f"{statistic}_coverage"]
                rows.append(Row("4 time to answer", f"coverage of 95% {statistic}-ratio intervals, {label}, "
                                f"{case.name}", "simulated", cov, n=n, goal=goal,
                                verdict=verdict(COVERAGE_BAND[0] <= cov <= COVERAGE_BAND[1]) if goal else ""))
            rows.append(Row("4 time to answer", f"mean batches per cell / ratio intervals within target, {label}, "
                            f"{case.name}", "simulated", res["mean_reps"], n=n,
                            goal=f"{res['median_met']:.0%} of median ratios within target"))
        log(f"  coverage: {case.name}: adaptive {new['median_coverage']:.3f} (median) "
            f"{new['gmean_coverage']:.3f} (gmean); previous rule {old['median_coverage']:.3f}")
    return rows


# ---------------------------------------------------------------------------------------------------
# The adaptive mode on a real (scaled-down) paper design

def adaptive_spec(quick: bool, target: float, seed: int) -> dict[str, Any]:
    if quick:
        return {"name": "bench-adaptive", "runtimes": list(RUNTIMES), "modules": ["lodash@4.17.20"],
                "concurrency": [1], "target_rel_halfwidth": target, "min_repetitions": 3, "repetitions": 6,
                "seed": seed, "timeout_s": 120}
    return {"name": "bench-adaptive", "runtimes": list(RUNTIMES), "modules": "paper", "concurrency": [1, 4],
            "target_rel_halfwidth": target, "min_repetitions": 5, "repetitions": 30, "seed": seed,
            "timeout_s": 120}


def real_run(setup: Setup, quick: bool, target: float, seed: int,
             log: Callable[[str], None] = print) -> tuple[list[Row], pd.DataFrame]:
    spec = adaptive_spec(quick, target, seed)
    durations: dict[int, float] = {}
    last = [time.perf_counter()]

    def on_batch(batch: Any, rows: list[dict[str, Any]]) -> None:
        now = time.perf_counter()
        durations[batch.batch_id] = now - last[0]
        last[0] = now

    with tempfile.TemporaryDirectory(prefix="shlib-bench-") as tmp:
        t0 = time.perf_counter()
        last[0] = t0
        out = run_experiment(spec, Path(tmp) / "run", client=setup.client, progress=False, on_batch=on_batch,
                             library=setup.library)
        wall = time.perf_counter() - t0
        frame = load_frame(out)
    frame["batch_s"] = frame["batch_id"].map(durations)
    keys = ["runtime", "module", "concurrency"]
    trials = frame[frame["position"] == 0]
    cells = trials.groupby(keys, observed=True).agg(reps=("batch_id", "nunique"), containers=("trial_id", "size"),
                                                     batch_s=("batch_s", "median")).reset_index()
    r_max = int(cells["reps"].max())
    capped = int((cells["reps"] >= spec["repetitions"]).sum())
    fixed_containers = int((r_max * cells["concurrency"]).sum())
    fixed_wall = float((r_max * cells["batch_s"]).sum())
    adaptive_containers = int(len(trials))
    run_wall = float(sum(durations.values()))  # batches only: the same set-up would precede either design
    ratio_table = ratios(frame, baseline="runc", seed=seed)
    med = ratio_table[ratio_table["statistic"] == "median"]
    half = ((med["ci_high"] - med["ci_low"]) / 2 / med["ratio"]).dropna()
    design = (f"{len(RUNTIMES)} runtimes x {frame['module'].nunique()} modules x concurrency "
              f"{sorted(frame['concurrency'].unique().tolist())} = {len(cells)} cells; target +-{target:.0%}, "
              f"reps {spec['min_repetitions']}-{spec['repetitions']}")
    n = f"{len(cells)} cells, {capped} capped"
    rows = [
        Row("4 time to answer", f"adaptive run: containers ({design})", "both", adaptive_containers, n=n),
        Row("4 time to answer", "fixed design, same precision: containers (R_max x every cell)", "both",
            fixed_containers, n=f"R_max = {r_max}"),
        Row("4 time to answer", "containers, adaptive / fixed", "both", adaptive_containers / fixed_containers,
            n=n, goal=f"<= {SAVING_GOAL}", verdict=verdict(adaptive_containers / fixed_containers <= SAVING_GOAL)),
        Row("4 time to answer", "batch wall time, adaptive / fixed (fixed estimated from the run's batch times)",
            "both", run_wall / fixed_wall if fixed_wall else math.nan, n=n, goal=f"<= {SAVING_GOAL}",
            verdict=verdict(run_wall / fixed_wall <= SAVING_GOAL) if fixed_wall else ""),
        Row("4 time to answer", "adaptive run: batches per cell, min / median / max", "both",
            float(cells["reps"].median()), float(cells["reps"].min()), float(cells["reps"].max()), n),
        Row("4 time to answer", "adaptive run: median-ratio 95% half-width (median over cells)", "runsc/runc",
            float(half.median()) if len(half) else math.nan, float(half.min()) if len(half) else math.nan,
            float(half.max()) if len(half) else math.nan, f"{len(half)} ratios", f"<= {target}",
            verdict(bool(len(half)) and float(half.median()) <= target)),
    ]
    log(f"  adaptive: {adaptive_containers} containers in {wall:.0f} s; fixed would need {fixed_containers}")
    return rows, trials.assign(batch_s=trials["batch_s"])


def replay_rows(trials: pd.DataFrame, target: float, min_reps: int, max_reps: int, replicates: int,
                seed: int) -> list[Row]:
    """Adaptive vs the oracle fixed design over simulated replicates with each cell's measured spread."""
    keys = ["runtime", "module", "concurrency"]
    medians = trials[trials["status"] == "ok"].groupby([*keys, "batch_id"], observed=True)["load_ms"].median()
    spreads = medians.groupby(level=keys, observed=True).apply(
        lambda s: float(np.std(np.log(s), ddof=1)) if len(s) > 2 else math.nan).dropna()
    if spreads.empty:
        return []
    conc = np.array([k[2] for k in spreads.index], dtype=float)
    sd = spreads.to_numpy()
    rng = np.random.default_rng(seed)
    ratios = []
    for _ in range(replicates):
        logs = rng.normal(0.0, 1.0, (len(sd), max_reps)) * sd[:, None]
        values = np.exp(logs)
        stops = np.array([adaptive.stopping_rep(list(v), target, min_reps, max_reps) for v in values])
        fixed = max_reps
        for reps in range(int(stops.max()), max_reps + 1):  # every cell must meet the target at the same R
            if all(adaptive.cell_done(list(v[:reps]), target) for v in values):
                fixed = reps
                break
        ratios.append(float((stops * conc).sum() / (fixed * conc).sum()))
    value = statistics.median(ratios)
    return [Row("4 time to answer", "containers, adaptive / oracle fixed design, simulated replicates of this design",
                "both", value, float(np.quantile(ratios, 0.1)), float(np.quantile(ratios, 0.9)),
                f"{replicates} replicates (10-90%)", f"<= {SAVING_GOAL}", verdict(value <= SAVING_GOAL))]


def run(setup: Setup, quick: bool, target: float, n_cells: int, replicates: int, seed: int,
        log: Callable[[str], None] = print) -> list[Row]:
    rows, trials = real_run(setup, quick, target, seed, log)
    spec = adaptive_spec(quick, target, seed)
    rows += replay_rows(trials, target, spec["min_repetitions"], spec["repetitions"], replicates, seed)
    rows += coverage_rows(n_cells, seed, log)
    return rows
