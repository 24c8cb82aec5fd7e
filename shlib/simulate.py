"""Synthetic results with a known answer, in the real results schema.

Load times are lognormal: ``load_ms = base_ms[module] * speed[runtime] * exp(contention[runtime] *
(concurrency - 1)) * exp(batch_effect + noise)`` with ``noise ~ N(0, sigma)`` per trial and
``batch_effect ~ N(0, batch_sd)`` shared by every trial of a batch (containers of a batch share a time
window). The log of a load time is then normal, so its median and its geometric mean are both
``base_ms * speed * ...``: the true ratio of medians and of geometric means between two runtimes is
``Scenario.true_ratio``. Used by tests (coverage of the intervals) and benchmarks.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from shlib.results.metadata import RunMetadata
from shlib.results.schema import COLUMNS, SCHEMA, runtime_kind
from shlib.results.store import ResultsStore, frame_of, write_table

DEFAULT_MODULES: dict[str, float] = {"lodash": 40.0, "express": 80.0, "react": 30.0}
DEFAULT_SPEEDS: dict[str, float] = {"runc": 1.0, "runsc-sim": 3.0}


@dataclass
class Scenario:
    """A synthetic experiment whose true ratios are known.

    speeds: runtime name -> multiplier of the module's base load time (runc 1.0, runsc 3.0, ...).
    modules: module name -> median load time in ms for speed 1.0 at concurrency 1.
    contention: runtime name -> added log(load_ms) per extra container at once (0 when absent).
    trials_per_group: trials per cell (runtime x module x concurrency); rounded up to whole batches.
    sigma: sd of log(load_ms) within a batch; batch_sd: sd of the log-scale effect a batch shares.
    load_mode: "isolated" (one module per process, a batch per module) or "sequence" (every
    process loads every module in turn, so a batch spans all modules).
    fail_rate: probability that a trial fails (status "error", load_ms NaN); fail: runtimes whose
    every trial fails.
    factors: extra factor columns -> levels (e.g. {"cache": ["warm", "cold"]}); crossed with the rest,
    with no effect on load times.

    Harder conditions (each keeps the population median of log(load_ms) of a cell, hence the true
    ratios, as stated): module_speeds: runtime -> module -> extra multiplier (cells with different true
    ratios); tails_df: within-batch noise is Student-t with this many degrees of freedom times sigma
    (heavy tails; None: normal); drift: log-scale change from the first batch run to the last, shared by
    every runtime (the host slows down or speeds up over the run; batches are shuffled, so it is noise,
    not bias); deadline_ms: a trial slower than this times out (status "timeout", load_ms NaN), so
    timeouts hit the slowest runtime hardest; cores and oversubscribed_shift: in cells with more
    containers than cores each batch is shifted by +-oversubscribed_shift on the log scale with equal
    chance (bimodal batch effects of a queue for the CPU).
    """

    speeds: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_SPEEDS))
    modules: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_MODULES))
    concurrency: Sequence[int] = (1,)
    trials_per_group: int = 30
    sigma: float = 0.35
    batch_sd: float = 0.0
    contention: Mapping[str, float] = field(default_factory=dict)
    load_mode: str = "isolated"
    fail_rate: float = 0.0
    fail: Sequence[str] = ()
    factors: Mapping[str, Sequence[str]] = field(default_factory=dict)
    module_speeds: Mapping[str, Mapping[str, float]] = field(default_factory=dict)
    tails_df: float | None = None
    drift: float = 0.0
    deadline_ms: float | None = None
    cores: int | None = None
    oversubscribed_shift: float = 0.0
    run_id: str = "sim"

    def true_median_ms(self, runtime: str, module: str, concurrency: int) -> float:
        """Population median (= geometric mean without timeouts) of load_ms in one cell."""
        slope = self.contention.get(runtime, 0.0)
        extra = self.module_speeds.get(runtime, {}).get(module, 1.0)
        return self.modules[module] * self.speeds[runtime] * extra * math.exp(slope * (concurrency - 1))

    def true_ratio(self, runtime: str, baseline: str, concurrency: int = 1, module: str | None = None) -> float:
        """True ratio of medians (and of geometric means) of runtime to baseline in one cell (default: first module)."""
        module = module if module is not None else next(iter(self.modules))
        return self.true_median_ms(runtime, module, concurrency) / self.true_median_ms(baseline, module, concurrency)

    def frame(self, seed: int = 0) -> pd.DataFrame:
        """One synthetic run as a DataFrame with the dtypes ``shlib.results.store.load_results`` gives."""
        return simulate_results(self, seed=seed)


def _batches(scenario: Scenario) -> list[dict[str, Any]]:
    """Every batch of the plan: runtime, concurrency, factor levels, module (isolated mode), rep."""
    module_groups: list[tuple[str, ...]] = (
        [(m,) for m in scenario.modules] if scenario.load_mode == "isolated" else [tuple(scenario.modules)]
    )
    factor_names = list(scenario.factors)
    factor_levels = [list(v) for v in scenario.factors.values()]
    combos = [dict(zip(factor_names, combo, strict=True)) for combo in _product(factor_levels)]
    plan = []
    for runtime in scenario.speeds:
        for conc in scenario.concurrency:
            n_batches = math.ceil(scenario.trials_per_group / conc)
            for combo in combos:
                for modules in module_groups:
                    for rep in range(n_batches):
                        plan.append({"runtime": runtime, "concurrency": int(conc), "modules": modules,
                                     "rep": rep, **combo})
    return plan


def _product(levels: list[list[str]]) -> list[tuple[str, ...]]:
    out: list[tuple[str, ...]] = [()]
    for values in levels:
        out = [prefix + (v,) for prefix in out for v in values]
    return out


def simulate_results(scenario: Scenario | None = None, seed: int = 0, **kwargs: Any) -> pd.DataFrame:
    """A synthetic results frame (one row per module load) drawn from ``scenario`` (or Scenario(**kwargs)).

    Batches are shuffled into a random order (as the runner interleaves runtimes), so batch_id carries
    no runtime information. Seeded: the same seed gives the same frame.
    """
    scenario = scenario if scenario is not None else Scenario(**kwargs)
    if scenario.load_mode not in ("isolated", "sequence"):
        raise ValueError(f"load_mode must be 'isolated' or 'sequence', not {scenario.load_mode!r}")
    rng = np.random.default_rng(seed)
    plan = _batches(scenario)
    order = rng.permutation(len(plan))
    batch_effect = rng.normal(0.0, scenario.batch_sd, len(plan)) if scenario.batch_sd > 0 else np.zeros(len(plan))
    if scenario.drift:
        batch_effect = batch_effect + scenario.drift * (order / max(len(plan) - 1, 1) - 0.5)
    if scenario.oversubscribed_shift and scenario.cores is not None:
        crowded = np.array([b["concurrency"] > scenario.cores for b in plan])
        signs = rng.choice([-1.0, 1.0], size=len(plan))
        batch_effect = batch_effect + np.where(crowded, signs * scenario.oversubscribed_shift, 0.0)

    # One entry per (batch, slot, module) row, built as flat arrays.
    sizes = np.array([b["concurrency"] * len(b["modules"]) for b in plan])
    batch_of_row = np.repeat(np.arange(len(plan)), sizes)
    slot = np.concatenate([np.repeat(np.arange(b["concurrency"]), len(b["modules"])) for b in plan])
    position = np.concatenate([np.tile(np.arange(len(b["modules"])), b["concurrency"]) for b in plan])
    module = np.concatenate([np.tile(np.array(b["modules"], dtype=object), b["concurrency"]) for b in plan])
    runtime = np.array([b["runtime"] for b in plan], dtype=object)[batch_of_row]
    conc = np.array([b["concurrency"] for b in plan])[batch_of_row]
    rep = np.array([b["rep"] for b in plan])[batch_of_row]
    batch_id = order[batch_of_row]

    base = np.array([scenario.modules[m] for m in module])
    speed = np.array([scenario.speeds[r] for r in runtime])
    slope = np.array([scenario.contention.get(r, 0.0) for r in runtime])
    extra = np.array([scenario.module_speeds.get(r, {}).get(m, 1.0) for r, m in zip(runtime, module, strict=True)])
    log_ms = np.log(base * speed * extra) + slope * (conc - 1) + batch_effect[batch_of_row]
    noise = (rng.standard_t(scenario.tails_df, len(log_ms)) if scenario.tails_df
             else rng.standard_normal(len(log_ms)))
    log_ms = log_ms + scenario.sigma * noise
    load_ms = np.exp(log_ms)

    # Failure is per process: every module of a failed process fails.
    process_key = batch_of_row * 10_000 + slot
    _, process_index = np.unique(process_key, return_inverse=True)
    process_failed = rng.random(process_index.max() + 1) < scenario.fail_rate
    failed = process_failed[process_index] | np.isin(runtime, list(scenario.fail))
    timed_out = ~failed & (load_ms > scenario.deadline_ms) if scenario.deadline_ms else np.zeros(len(load_ms), bool)
    status = np.where(failed, "error", np.where(timed_out, "timeout", "ok")).astype(object)
    failed = failed | timed_out
    load_ms = np.where(failed, np.nan, load_ms)

    n = len(load_ms)
    t0 = pd.Timestamp("2024-01-01T00:00:00Z")
    started = t0 + pd.to_timedelta(batch_id * 2.0, unit="s")
    columns: dict[str, Any] = {
        "run_id": np.full(n, scenario.run_id, dtype=object),
        "batch_id": batch_id,
        "trial_id": [f"b{b:06d}-s{s:02d}" for b, s in zip(batch_id, slot, strict=True)],
        "rep": rep,
        "slot": slot,
        "runtime": runtime,
        "runtime_kind": np.array([runtime_kind(r) for r in runtime], dtype=object),
        "concurrency": conc,
        "module": module,
        "module_version": np.full(n, "0.0.0-sim", dtype=object),
        "load_mode": np.full(n, scenario.load_mode, dtype=object),
        "position": position,
        "mount": np.where(runtime == "native", "host", "volume").astype(object),
        "cache": np.full(n, "warm", dtype=object),
        "node_version": np.full(n, "v20.0.0", dtype=object),
        "language": np.full(n, "node", dtype=object),
        "interpreter_version": np.full(n, "v20.0.0", dtype=object),
        "engine": np.full(n, "simulated", dtype=object),
        "engine_kind": np.where(runtime == "native", "native", "docker").astype(object),
        "image_id": np.full(n, "sha256:sim", dtype=object),
        "load_ms": load_ms,
        "status": status,
        "error": np.where(failed, "simulated " + status.astype(str), None).astype(object),
        "files_loaded": np.full(n, 10),
        "start_skew_ms": np.where(slot == 0, 0.0, 1.0),
        "batch_skew_ms": np.ones(n),
        "started_at": started,
        "finished_at": (started + pd.to_timedelta(np.nan_to_num(load_ms) + 50.0, unit="ms")).floor("us"),
        "exit_code": np.where(failed, 1, 0),
    }
    for name in scenario.factors:
        if name not in COLUMNS:
            raise ValueError(f"factor {name!r} is not a results column ({', '.join(COLUMNS)})")
        columns[name] = np.array([plan[i][name] for i in batch_of_row], dtype=object)
    return _as_results_frame(columns, n)


def _as_results_frame(columns: dict[str, Any], n: int) -> pd.DataFrame:
    """Columns -> arrow (the results SCHEMA, missing columns null) -> pandas with load_results' dtypes."""
    arrays = {}
    for name in COLUMNS:
        if name in columns:
            arrays[name] = pa.array(columns[name], type=SCHEMA.field(name).type, from_pandas=True)
        else:
            arrays[name] = pa.nulls(n, type=SCHEMA.field(name).type)
    return frame_of(pa.Table.from_pydict(arrays, schema=SCHEMA))


def write_results_dir(frame: pd.DataFrame, run_dir: str | Path, metadata: Mapping[str, Any] | None = None) -> Path:
    """Write a frame as a shlib results directory (results.parquet + metadata.json) and return its path."""
    run_dir = Path(run_dir)
    store = ResultsStore(run_dir)
    counts = frame["status"].astype(str).value_counts().to_dict()
    fields = {"run_id": str(frame["run_id"].iloc[0]) if len(frame) else "sim", "simulated": True, "counts": counts,
              "runtime_set": sorted(frame["runtime"].astype(str).unique()), **(metadata or {})}
    store.write_metadata(RunMetadata.from_dict(fields, "simulated metadata"))
    table = pa.Table.from_pandas(frame[COLUMNS], schema=SCHEMA, preserve_index=False)
    write_table(run_dir / "results.parquet", table)
    return run_dir
