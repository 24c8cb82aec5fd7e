"""Analyse one results directory: tables (CSV), figures (PNG + SVG) and a short headline.

Reads only what ``shlib.results.load_results`` gives (results.parquet + metadata.json).

Baseline: ratios are to ``baseline`` (default runc). When that runtime is absent and the other
designated baseline is present (runc <-> native), the analysis falls back to it and says so in the
headline and in analysis.json, since a run without runc (e.g. native vs gVisor only) should still be
readable; any other absent baseline is an error naming the runtimes present.
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from shlib import __version__, stats
from shlib.errors import AnalysisError
from shlib.results import load_results, write_json

FALLBACK_BASELINES = {"runc": "native", "native": "runc"}
TABLES = ("summary", "ratios", "ratio_summary", "tests", "scaling", "replication")
HEADLINE_STATISTIC = "median"


@dataclass
class AnalysisResult:
    """Tables, files written and the headline of one analysis."""

    run_dir: Path | None
    out_dir: Path | None
    baseline: str | None
    seed: int
    n_resamples: int
    tables: dict[str, pd.DataFrame]
    headline_lines: list[str]
    notes: list[str] = field(default_factory=list)
    files: list[Path] = field(default_factory=list)

    def headline(self) -> str:
        return "\n".join(self.headline_lines)

    def __getattr__(self, name: str) -> pd.DataFrame:
        tables = self.__dict__.get("tables", {})
        if name in tables:
            return tables[name]
        raise AttributeError(name)


def resolve_baseline(runtimes: list[str], baseline: str) -> tuple[str, list[str]]:
    """The baseline to use and notes: ``baseline`` if present, else its designated fallback (runc <-> native)."""
    if baseline in runtimes:
        return baseline, []
    fallback = FALLBACK_BASELINES.get(baseline)
    if fallback in runtimes:
        return fallback, [f"baseline {baseline} is absent from this run: ratios are to {fallback} instead"]
    raise AnalysisError(f"baseline runtime {baseline!r} is not in the results (runtimes present: "
                        f"{', '.join(sorted(runtimes))}); pass one of them as baseline")


def analyze_frame(df: pd.DataFrame, baseline: str = "runc", seed: int = stats.DEFAULT_SEED,
                  n_resamples: int = stats.DEFAULT_RESAMPLES,
                  reference: pd.DataFrame | str | Path | None = None) -> AnalysisResult:
    """Every table and the headline for a results frame (no files written)."""
    work = stats.prepare(df)
    runtimes = sorted(work["runtime"].unique())
    notes: list[str] = []
    used: str | None
    if len(runtimes) == 1:
        used = None
        notes.append(f"only one runtime ({runtimes[0]}): no ratios or tests between runtimes")
    else:
        used, fallback_notes = resolve_baseline(runtimes, baseline)
        notes += fallback_notes
    ref = reference if isinstance(reference, pd.DataFrame) else stats.load_reference(reference)

    summary = stats.summarize(work)
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
        ratio_table = stats.ratios_against(work, baselines, seed=seed, n_resamples=n_resamples)
        wanted_rows = np.array([kind in numerators.get(base, ()) for base, kind in
                                zip(ratio_table["baseline"], ratio_table["runtime_kind"], strict=True)], dtype=bool)
        keep = (ratio_table["baseline"] == used).to_numpy() | wanted_rows
        ratio_table = ratio_table[keep].reset_index(drop=True)
    else:
        ratio_table = _empty_ratios(work)
    main = ratio_table[ratio_table["baseline"] == used] if used else ratio_table
    tables = {
        "summary": summary,
        "ratios": ratio_table,
        "ratio_summary": stats.summary_across_modules(ratio_table),
        "tests": stats.pairwise_tests(work),
        "scaling": stats.concurrency_scaling(work, baseline=used or runtimes[0], ratio_table=main if used else None,
                                             seed=seed, n_resamples=n_resamples),
        "replication": stats.replication(ratio_table, ref, statistic=HEADLINE_STATISTIC),
    }
    lines = headline(tables, work, used, notes)
    return AnalysisResult(run_dir=None, out_dir=None, baseline=used, seed=seed, n_resamples=n_resamples,
                          tables=tables, headline_lines=lines, notes=notes)


def _empty_ratios(work: pd.DataFrame) -> pd.DataFrame:
    columns = ["runtime", "runtime_kind", "baseline", "baseline_kind", *stats.cell_keys(work), "statistic", "ratio",
               "ci_low", "ci_high", "ci_method", "confidence", "n", "n_baseline", "n_batches", "n_batches_baseline",
               "clustered", "batches_span_modules", "n_resamples", "seed", "note"]
    return pd.DataFrame(columns=columns)


def _times(ratio: float, low: float, high: float, baseline: str) -> str:
    if low <= 1 <= high:
        return f"{ratio:.2f}x [{low:.2f}, {high:.2f}] the time of {baseline} (no clear difference: interval holds 1)"
    if ratio >= 1:
        return f"{ratio:.2f}x [{low:.2f}, {high:.2f}] slower than {baseline}"
    return f"{1 / ratio:.2f}x [{1 / high:.2f}, {1 / low:.2f}] faster than {baseline}"


def headline(tables: dict[str, pd.DataFrame], work: pd.DataFrame, baseline: str | None,
             notes: list[str] | None = None) -> list[str]:
    """A short reading of the result, computed from the tables."""
    lines = list(notes or [])
    ok = work[work["ok"]]
    levels = sorted(work["concurrency"].unique())
    lines.insert(0, f"{work['runtime'].nunique()} runtimes ({', '.join(sorted(work['runtime'].unique()))}), "
                    f"{work['module'].nunique()} modules, concurrency {', '.join(map(str, levels))}; "
                    f"{len(ok)} ok module loads, {len(work) - len(ok)} failed.")
    summary = tables["ratio_summary"]
    if baseline is not None and len(summary):
        rows = summary[(summary["baseline"] == baseline) & (summary["statistic"] == HEADLINE_STATISTIC)]
        factors = [f for f in stats.FACTORS if f in rows.columns]
        for _, row in rows[rows["concurrency"].isin([levels[0], levels[-1]])].iterrows():
            where = "".join(f", {f}={row[f]}" for f in factors)
            if not np.isfinite(row["gmean_ratio"]):
                lines.append(f"{row['runtime']}: no ratio to {baseline} at concurrency {row['concurrency']}{where} "
                             f"({row['note']})")
                continue
            if np.isfinite(row["ci_low"]):
                text = _times(row["gmean_ratio"], row["ci_low"], row["ci_high"], baseline)
            else:
                text = f"{row['gmean_ratio']:.2f}x (no interval) the load time of {baseline}"
            lines.append(f"{row['runtime']} loads modules {text} at concurrency {row['concurrency']}{where} "
                         f"(geometric mean over {row['n_modules']} modules of the ratio of medians)")
    if len(levels) == 1:
        lines.append(f"Only one concurrency level ({levels[0]}): scaling with concurrency not measured.")
    kinds = set(work["runtime_kind"])
    if "gvisor" not in kinds:
        lines.append("No gVisor runtime in this run: the study's gVisor claims are not measured.")
    for _, row in tables["replication"].iterrows():
        if row["verdict"].startswith("not measured"):
            lines.append(f"Claim '{row['claim']}': {row['verdict']}.")
        else:
            lines.append(f"Claim '{row['claim']}': {row['runtime']} / {row['baseline']} {row['statistic']} cell ratio "
                         f"{row['estimate']:.2f}x [{row['ci_low']:.2f}, {row['ci_high']:.2f}] vs claimed "
                         f"{row['claimed_value']:g}x -> {row['verdict']}"
                         + (f" ({row['note']})." if isinstance(row["note"], str) and row["note"] else "."))
    return lines


def analyze_run(run_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str] | None = None,
                baseline: str = "runc", seed: int = stats.DEFAULT_SEED,
                n_resamples: int = stats.DEFAULT_RESAMPLES, figures: bool = True) -> AnalysisResult:
    """Analyse RUN_DIR: write the CSV tables, figures/*.png|svg, headline.txt and analysis.json to out_dir.

    out_dir defaults to RUN_DIR/analysis. Returns the tables, the files written and the headline.
    """
    run_dir = Path(run_dir)
    frame, meta = load_results(run_dir)
    result = analyze_frame(frame, baseline=baseline, seed=seed, n_resamples=n_resamples)
    out = Path(out_dir) if out_dir is not None else run_dir / "analysis"
    out.mkdir(parents=True, exist_ok=True)
    result.run_dir, result.out_dir = run_dir, out
    for name in TABLES:
        path = out / f"{name}.csv"
        result.tables[name].to_csv(path, index=False)
        result.files.append(path)
    if figures:
        result.files += _write_figures(result, frame, out / "figures")
    (out / "headline.txt").write_text(result.headline() + "\n")
    result.files.append(out / "headline.txt")
    write_json(out / "analysis.json", _provenance(result, meta))
    result.files.append(out / "analysis.json")
    return result


def _write_figures(result: AnalysisResult, frame: pd.DataFrame, fig_dir: Path) -> list[Path]:
    from shlib import plots  # matplotlib only when figures are asked for

    colours = plots.runtime_colors(sorted(frame["runtime"].astype(str).unique()))
    t = result.tables
    made = {
        "load_times": plots.plot_load_times(t["summary"], colors=colours),
        "ratios": plots.plot_ratios(t["ratios"], replication=t["replication"], colors=colours),
        "scaling": plots.plot_scaling(t["summary"], t["ratios"], colors=colours),
        "distributions": plots.plot_distributions(frame, colors=colours),
    }
    files: list[Path] = []
    for name, fig in made.items():
        files += plots.save_figure(fig, fig_dir / name)
    return files


def _provenance(result: AnalysisResult, meta: dict[str, Any]) -> dict[str, Any]:
    return {
        "shlib_version": __version__,
        "analysed_at": dt.datetime.now(dt.UTC).isoformat(),
        "run_dir": str(result.run_dir),
        "run_id": meta.get("run_id"),
        "schema_version": meta.get("schema_version"),
        "baseline": result.baseline,
        "seed": result.seed,
        "n_resamples": result.n_resamples,
        "confidence": stats.CONFIDENCE,
        "headline_statistic": HEADLINE_STATISTIC,
        "reference": str(stats.reference_path()),
        "notes": result.notes,
        "files": [str(p.relative_to(result.out_dir)) for p in result.files if result.out_dir],
    }
