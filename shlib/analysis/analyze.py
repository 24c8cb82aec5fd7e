"""The whole analysis of one run's results frame, computed once: every table a reading or figure needs.

Baseline: ratios are to ``baseline`` (default runc). When that runtime is absent and the other
designated baseline is present (runc <-> native), the analysis falls back to it and says so in its
notes, since a run without runc (e.g. native vs gVisor only) should still be readable; any other
absent baseline is an error naming the runtimes present.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from shlib.analysis.costmodel import CostModel, fit_cost_model, module_features
from shlib.analysis.defaults import DEFAULT_BASELINE, DEFAULT_RESAMPLES, DEFAULT_SEED, resolve_baseline
from shlib.analysis.engines import across_engines
from shlib.analysis.frames import cell_keys, has_metric, mark_oversubscribed, prepare
from shlib.analysis.ratios import ratio_columns, ratios_against, summary_across_modules
from shlib.analysis.replication import load_reference, replication
from shlib.analysis.scaling import concurrency_scaling, load_time_growth
from shlib.analysis.significance import baseline_tests
from shlib.analysis.summaries import summarize
from shlib.analysis.timeline import load_share, missing_phases, phase_summary
from shlib.analysis.variants import gvisor_comparison, runtime_variants
from shlib.results.metadata import RunMetadata

TABLES = ("summary", "ratios", "ratio_summary", "tests", "scaling", "growth", "replication")
HEADLINE_STATISTIC = "median"


@dataclass
class AnalysisResult:
    """The tables of one analysis, the baseline used, the bootstrap settings and notes on what was done.

    ``overview``: runtimes, n_modules, concurrency levels, n_ok / n_failed module loads, runtime kinds.
    """

    baseline: str | None
    seed: int
    n_resamples: int
    tables: dict[str, pd.DataFrame]
    notes: list[str] = field(default_factory=list)
    overview: dict[str, Any] = field(default_factory=dict)
    #: Cost models by metric (load_ms, cpu_ms), for ``costmodel.predict_penalty_ms``.
    cost_models: dict[str, CostModel] = field(default_factory=dict)

    def __getattr__(self, name: str) -> pd.DataFrame:
        tables = self.__dict__.get("tables", {})
        if name in tables:
            return tables[name]
        raise AttributeError(name)


def analyze_frame(df: pd.DataFrame, baseline: str = DEFAULT_BASELINE, seed: int = DEFAULT_SEED,
                  n_resamples: int = DEFAULT_RESAMPLES,
                  reference: pd.DataFrame | str | Path | None = None, metadata: RunMetadata | None = None,
                  cores: int | dict[str, int | None] | None = None, deadline_ms: float | None = None
                  ) -> AnalysisResult:
    """Every table of the analysis of a results frame (pure: no files read or written but the reference claims).

    ``metadata``: the run's. It describes the runtimes (gVisor build, platform, flags) for the variant
    contrasts (without it they are described from their names) and gives ``cores`` and ``deadline_ms``
    when they are not passed.
    ``cores``: the host's CPU count (metadata ``host.cpu_count``); cells with more loads at once are
    marked CPU oversubscribed and set aside by the replication verdicts. None: not checked (and said).
    ``deadline_ms``: the run's trial timeout (metadata ``spec.timeout_s`` x 1000), where timeouts are
    censored in the medians; None: +inf.
    Merged runs (several engines): ``cores`` a dict {engine: cores}; see ``analyze_runs``.
    Tables: summary, ratios, ratio_summary, tests, scaling, growth, replication, engines, variants,
    gvisor_ratios, gvisor_summary, gvisor_contrasts, gvisor_contrast_cells; cpu_ratios and cpu_ratio_summary
    (the same ratios of cpu_ms, the CPU of the container's whole cgroup; empty, with a note, when the results
    have none); costmodel_terms and costmodel_lomo (``shlib.analysis.costmodel``, of load_ms and cpu_ms);
    phases and load_share (``shlib.analysis.timeline``: each phase's median, the share of the cold start loading).
    """
    if metadata is not None:
        cores = cores if cores is not None else metadata.host.cpu_count
        timeout_s = metadata.spec.get("timeout_s")
        deadline_ms = deadline_ms if deadline_ms is not None else (1000.0 * timeout_s if timeout_s else None)
    work = prepare(df)
    runtimes = sorted(work["runtime"].unique())
    notes: list[str] = []
    used: str | None
    if len(runtimes) == 1:
        used = None
        notes.append(f"only one runtime ({runtimes[0]}): no ratios or tests between runtimes")
    else:
        used, fallback_notes = resolve_baseline(runtimes, baseline)
        notes += fallback_notes
    ref = reference if isinstance(reference, pd.DataFrame) else load_reference(reference)

    summary = summarize(work, seed=seed, n_resamples=n_resamples)
    baselines = [used] if used else []
    kinds = work.groupby("runtime")["runtime_kind"].first()
    numerators: dict[str, set[str]] = {}
    for kind in sorted(set(ref["denominator_kind"])):
        wanted = set(ref.loc[ref["denominator_kind"] == kind, "numerator_kind"])
        for runtime in kinds.index[kinds == kind]:
            if runtime != used and set(kinds) & wanted:
                baselines.append(runtime)
                numerators[runtime] = wanted
    if baselines:
        ratio_table = ratios_against(work, baselines, seed=seed, n_resamples=n_resamples, deadline_ms=deadline_ms)
        wanted_rows = np.array([kind in numerators.get(base, ()) for base, kind in
                                zip(ratio_table["baseline"], ratio_table["runtime_kind"], strict=True)], dtype=bool)
        keep = (ratio_table["baseline"] == used).to_numpy() | wanted_rows
        ratio_table = ratio_table[keep].reset_index(drop=True)
    else:
        ratio_table = _empty_ratios(work)
    main = ratio_table[ratio_table["baseline"] == used] if used else ratio_table
    ratio_summary = summary_across_modules(ratio_table)
    tables = {
        "summary": summary,
        "ratios": ratio_table,
        "ratio_summary": ratio_summary,
        "tests": baseline_tests(work, used, ratio_summary, seed=seed) if used else baseline_tests(work.iloc[0:0], ""),
        "scaling": concurrency_scaling(work, baseline=used or runtimes[0], ratio_table=main if used else None,
                                             seed=seed, n_resamples=n_resamples),
        "growth": load_time_growth(work, seed=seed, n_resamples=n_resamples),
        "replication": replication(_with_language(ratio_table, work), ref, statistic=HEADLINE_STATISTIC,
                                   cores=cores),
        "engines": across_engines(ratio_summary[ratio_summary["baseline"] == used] if used else ratio_summary,
                                  df, statistic=HEADLINE_STATISTIC),
    }
    tables = {name: mark_oversubscribed(table, cores) for name, table in tables.items()}
    levels = sorted(int(c) for c in work["concurrency"].unique())
    if cores is None:
        notes.append("host core count unknown: cells with more loads at once than cores (CPU oversubscribed) "
                     "are not marked")
    elif isinstance(cores, dict):
        for engine, n in sorted(cores.items()):
            crowded = [c for c in levels if n is not None and c > n]
            if crowded:
                notes.append(f"engine {engine}'s host has {n} cores: its cells at concurrency "
                             f"{', '.join(map(str, crowded))} are CPU oversubscribed; the replication verdicts set "
                             "them aside")
    elif any(c > cores for c in levels):
        crowded = [c for c in levels if c > cores]
        notes.append(f"the host has {cores} cores: cells at concurrency {', '.join(map(str, crowded))} are CPU "
                     "oversubscribed (more loads at once than cores; every runtime queues for the CPU, so they "
                     "measure the scheduler as much as the sandbox); the replication verdicts set them aside")
    cpu_tables, cpu_notes = _cpu_ratios(df, work, used, seed, n_resamples)
    tables.update({name: mark_oversubscribed(table, cores) for name, table in cpu_tables.items()})
    notes += cpu_notes
    models, model_notes = _cost_models(df, work, metadata, seed, n_resamples)
    tables["costmodel_terms"] = mark_oversubscribed(
        pd.concat([m.terms for m in models.values()], ignore_index=True) if models else pd.DataFrame(), cores)
    tables["costmodel_lomo"] = mark_oversubscribed(
        pd.concat([m.lomo for m in models.values()], ignore_index=True) if models else pd.DataFrame(), cores)
    notes += model_notes
    tables["phases"] = mark_oversubscribed(phase_summary(work, seed=seed, n_resamples=n_resamples), cores)
    tables["load_share"] = mark_oversubscribed(load_share(work, seed=seed, n_resamples=n_resamples), cores)
    lacking = missing_phases(df)
    if lacking:
        notes.append(f"these results have no {', '.join(lacking)} (the timeline and the cgroup's CPU and memory "
                     "are recorded from schema v3 on)")
    variants = runtime_variants(metadata, runtimes, df)
    gvisor = gvisor_comparison(df, variants, seed=seed, n_resamples=n_resamples)
    tables.update(variants=variants, gvisor_ratios=gvisor["ratios"], gvisor_summary=gvisor["summary"],
                  gvisor_contrasts=gvisor["contrasts"], gvisor_contrast_cells=gvisor["contrast_cells"])
    ok = work[work["ok"]]
    languages = sorted(set(work["language"])) if "language" in work.columns else ["node"]
    if languages != ["node"]:
        notes.append(f"languages: {', '.join(languages)}; every ratio compares runtimes within one language, and "
                     "the replication of Kim & Yu (2020) uses the Node.js cells only")
    overview = {"runtimes": runtimes, "n_modules": int(work["module"].nunique()), "languages": languages,
                "concurrency": sorted(int(c) for c in work["concurrency"].unique()), "n_ok": len(ok),
                "n_failed": len(work) - len(ok), "kinds": sorted(set(work["runtime_kind"])), "cores": cores,
                "timeline_missing": lacking}
    return AnalysisResult(baseline=used, seed=seed, n_resamples=n_resamples, tables=tables, notes=notes,
                          overview=overview, cost_models=models)


def _cpu_ratios(df: pd.DataFrame, work: pd.DataFrame, used: str | None, seed: int,
                n_resamples: int) -> tuple[dict[str, pd.DataFrame], list[str]]:
    """The ratios of cpu_ms to the baseline (containers only: native has no cgroup), or why there are none."""
    empty = {"cpu_ratios": _empty_ratios(work), "cpu_ratio_summary": summary_across_modules(_empty_ratios(work))}
    if not has_metric(df, "cpu_ms"):
        return empty, ["no cpu_ms in these results (recorded from schema v3 on, by a harness that reads the "
                       "containers' cgroups on their host): no CPU ratios"]
    with_cpu = sorted(work.loc[np.isfinite(work.get("cpu_ms", pd.Series(np.nan, index=work.index))), "runtime"]
                      .unique())
    base = used if used in with_cpu else ("runc" if "runc" in with_cpu else None)
    if base is None or len(with_cpu) < 2:
        return empty, [f"cpu_ms is recorded for {', '.join(with_cpu) or 'no runtime'}: no CPU ratio to "
                       f"{used or 'a baseline'}"]
    table = ratios_against(work, [base], seed=seed, n_resamples=n_resamples, metric="cpu_ms")
    notes = [] if base == used else [f"CPU ratios are to {base}: {used} has no cpu_ms (no cgroup of its own)"]
    return {"cpu_ratios": table, "cpu_ratio_summary": summary_across_modules(table)}, notes


def _cost_models(df: pd.DataFrame, work: pd.DataFrame, metadata: RunMetadata | None, seed: int,
                 n_resamples: int) -> tuple[dict[str, CostModel], list[str]]:
    library = metadata.library.model_dump() if metadata is not None else None
    features = module_features(library, df)
    models: dict[str, CostModel] = {}
    notes: list[str] = []
    for metric in ("load_ms", "cpu_ms"):
        if not has_metric(df, metric):
            continue
        model = fit_cost_model(work, features, metric=metric, seed=seed, n_resamples=n_resamples)
        if len(model.terms):
            models[metric] = model
        elif model.notes:
            notes.append(f"cost model of {metric}: {model.notes[0]}" + (
                f" (and {len(model.notes) - 1} more cells)" if len(model.notes) > 1 else ""))
    return models, notes


def analyze_runs(df: pd.DataFrame, metadata: list[RunMetadata], baseline: str = DEFAULT_BASELINE,
                 seed: int = DEFAULT_SEED, n_resamples: int = DEFAULT_RESAMPLES,
                 reference: pd.DataFrame | str | Path | None = None) -> AnalysisResult:
    """The analysis of merged runs (``shlib.results.store.load_results([...])``): engine as a factor.

    Each engine's host sets its own core count (oversubscribed cells, replication verdicts per
    engine); the deadline is the longest timeout of the runs; the runtimes are described from the
    first run that recorded each. With one run this is ``analyze_frame`` with its metadata.
    """
    if len(metadata) == 1:
        return analyze_frame(df, baseline, seed, n_resamples, reference, metadata=metadata[0])
    cores: dict[str, int | None] = {}
    for meta in metadata:
        label = str((meta.engine or {}).get("label") or "default")
        cores[label] = meta.host.cpu_count
    timeouts = [m.spec.get("timeout_s") for m in metadata if m.spec.get("timeout_s")]
    runtimes: dict[str, Any] = {}
    for meta in metadata:
        for name, record in meta.runtimes.items():
            runtimes.setdefault(name, record)
    merged = metadata[0].model_copy(update={"runtimes": runtimes})
    result = analyze_frame(df, baseline, seed, n_resamples, reference, metadata=merged, cores=cores,
                           deadline_ms=1000.0 * max(timeouts) if timeouts else None)
    result.overview["engines"] = sorted(cores)
    result.overview["run_ids"] = [m.run_id for m in metadata]
    return result


def _with_language(ratio_table: pd.DataFrame, work: pd.DataFrame) -> pd.DataFrame:
    """The ratio table with its language named even when the run has one (a single level is no factor column),
    so that the replication judges Node cells only."""
    if "language" in ratio_table.columns or "language" not in work.columns or work["language"].nunique() != 1:
        return ratio_table
    return ratio_table.assign(language=str(work["language"].iloc[0]))


def _empty_ratios(work: pd.DataFrame) -> pd.DataFrame:
    return pd.DataFrame(columns=ratio_columns(cell_keys(work)))


