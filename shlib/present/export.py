"""An analysis written to disk: CSV tables, figures (PNG + SVG), the headline and analysis.json.

    RUN_DIR/analysis/
      summary.csv ratios.csv ratio_summary.csv tests.csv scaling.csv replication.csv, and the gVisor
      variants and contrasts (variants.csv, gvisor_*.csv)
      figures/*.png|svg
      headline.txt           the reading of the result (``shlib.present.readings``)
      analysis.json          provenance: run, baseline, seed, resamples, notes, files
"""

from __future__ import annotations

import datetime as dt
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from shlib import __version__
from shlib.analysis.analyze import HEADLINE_STATISTIC, TABLES, AnalysisResult, analyze_frame, analyze_runs
from shlib.analysis.defaults import CONFIDENCE, DEFAULT_BASELINE, DEFAULT_RESAMPLES, DEFAULT_SEED
from shlib.analysis.replication import reference_path
from shlib.errors import ResultsError
from shlib.present.readings import headline_lines
from shlib.results.metadata import RunMetadata
from shlib.results.store import CAMPAIGN_FILE, load_results, run_dirs, write_json


@dataclass
class ExportedAnalysis:
    """An analysis and where it was written."""

    result: AnalysisResult
    run_dir: Path
    out_dir: Path
    headline_lines: list[str]
    files: list[Path] = field(default_factory=list)

    @property
    def tables(self) -> dict[str, pd.DataFrame]:
        return self.result.tables

    def headline(self) -> str:
        return "\n".join(self.headline_lines)


def analyze_run(run_dir: str | os.PathLike[str] | list[str | os.PathLike[str]],
                out_dir: str | os.PathLike[str] | None = None,
                baseline: str = DEFAULT_BASELINE, seed: int = DEFAULT_SEED,
                n_resamples: int = DEFAULT_RESAMPLES, figures: bool = True) -> ExportedAnalysis:
    """Analyse RUN_DIR: write the CSV tables, figures/*.png|svg, headline.txt and analysis.json to out_dir.

    out_dir defaults to RUN_DIR/analysis. Returns the tables, the files written and the headline.
    ``run_dir`` may be a list of results directories (or a campaign directory): the runs are merged,
    engine as a factor (``analysis.analyze.analyze_runs``); out_dir is then required unless the
    list is one campaign (whose analysis/ it defaults to).
    """
    given = run_dir if isinstance(run_dir, list | tuple) else [run_dir]
    dirs = run_dirs(given)
    merged = len(dirs) > 1 or (Path(given[0]) / CAMPAIGN_FILE).exists()
    if merged:
        if out_dir is None and not (len(given) == 1 and (Path(given[0]) / CAMPAIGN_FILE).exists()):
            raise ResultsError("several results directories: give --out, where the merged analysis goes")
        frame, metas = load_results(dirs)
        meta = metas[0]
        run_dir = Path(given[0])
        analysis = analyze_runs(frame, metas, baseline=baseline, seed=seed, n_resamples=n_resamples)
    else:
        run_dir = dirs[0]
        frame, meta = load_results(run_dir)
        metas = [meta]
        analysis = analyze_frame(frame, baseline=baseline, seed=seed, n_resamples=n_resamples, metadata=meta)
    out = Path(out_dir) if out_dir is not None else Path(run_dir) / "analysis"
    result = ExportedAnalysis(analysis, run_dir, out, headline_lines(analysis))
    out.mkdir(parents=True, exist_ok=True)
    for name in [*TABLES, *(n for n in analysis.tables if n not in TABLES)]:
        path = out / f"{name}.csv"
        result.tables[name].to_csv(path, index=False)
        result.files.append(path)
    if figures:
        result.files += _write_figures(result, frame, out / "figures")
    (out / "headline.txt").write_text(result.headline() + "\n")
    result.files.append(out / "headline.txt")
    write_json(out / "analysis.json", {**_provenance(result, meta), "runs": [
        {"run_id": m.run_id, "run_dir": str(d), "engine": (m.engine or {}).get("label")}
        for m, d in zip(metas, dirs, strict=True)]})
    result.files.append(out / "analysis.json")
    return result


def _write_figures(result: ExportedAnalysis, frame: pd.DataFrame, fig_dir: Path) -> list[Path]:
    from shlib.present import plots  # matplotlib only when figures are asked for

    colours = plots.runtime_colors(sorted(frame["runtime"].astype(str).unique()))
    t = result.tables
    made = {
        "load_times": plots.plot_load_times(t["summary"], colors=colours),
        "ratios": plots.plot_ratios(t["ratios"], replication=t["replication"], colors=colours),
        "scaling": plots.plot_scaling(t["summary"], t["ratios"], colors=colours),
        "distributions": plots.plot_distributions(frame, colors=colours),
        "engines": plots.plot_engines(t["engines"]),
    }
    files: list[Path] = []
    for name, fig in made.items():
        files += plots.save_figure(fig, fig_dir / name)
    return files


def _provenance(result: ExportedAnalysis, meta: RunMetadata) -> dict[str, Any]:
    return {
        "shlib_version": __version__,
        "analysed_at": dt.datetime.now(dt.UTC).isoformat(),
        "run_dir": str(result.run_dir),
        "run_id": meta.run_id,
        "schema_version": meta.schema_version,
        "baseline": result.result.baseline,
        "seed": result.result.seed,
        "n_resamples": result.result.n_resamples,
        "confidence": CONFIDENCE,
        "headline_statistic": HEADLINE_STATISTIC,
        "reference": str(reference_path()),
        "notes": result.result.notes,
        "files": [str(p.relative_to(result.out_dir)) for p in result.files if result.out_dir],
    }
