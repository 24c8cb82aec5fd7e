"""The reading of a result in words, for notebooks, reports and the CLI: every sentence from the data.

Each function returns Markdown (or lines of text) computed from the tables of
``shlib.analysis.analyze``; nothing here estimates anything new.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from shlib.analysis.analyze import HEADLINE_STATISTIC, AnalysisResult
from shlib.analysis.frames import FACTORS
from shlib.present.analysis_cache import analysis_key
from shlib.present.params import AnalysisInputs
from shlib.present.tables import FACTOR_LABELS, effect_word, interval_text, ratio_overview


def capability_markdown(report: Mapping[str, Any]) -> str:
    """What this host can measure, in words: engine, runtimes available, and why the others are not."""
    engine = report.get("engine") or {}
    runtimes = report.get("runtimes") or {}
    ok = [n for n, rt in runtimes.items() if rt.get("available")]
    missing = {n: rt.get("reason") or "unavailable" for n, rt in runtimes.items() if not rt.get("available")}
    lines = []
    if engine.get("reachable"):
        lines.append(f"The Docker engine is reachable (Docker {engine.get('docker_version')}, "
                     f"cgroup v{engine.get('cgroup_version')}, storage {engine.get('storage_driver')}).")
    else:
        lines.append(f"**The Docker engine is not reachable** ({engine.get('error', 'no reason given')}): only "
                     "`native` can be measured. Start it with `bash scripts/setup-host.sh` (as root).")
    kinds = sorted({runtimes[n].get("kind") for n in ok})
    lines.append(f"This host can measure **{len(ok)} runtime(s)**: {', '.join(f'`{n}`' for n in ok) or 'none'} "
                 f"(families: {', '.join(kinds) or 'none'}).")
    for family, label in (("gvisor", "gVisor"), ("kata", "Kata Containers")):
        if not any(runtimes[n].get("kind") == family for n in ok):
            lines.append(f"No {label} runtime is available: the study's {label} comparisons cannot be measured here.")
    text = "\n\n".join(lines)
    if missing:
        text += "\n\nNot measurable here:\n\n" + "\n".join(f"- `{n}`: {why}" for n, why in missing.items())
    return text


def notes_markdown(notes: Sequence[str], title: str = "Notes on this analysis") -> str:
    """Notes (fallbacks, incomplete runs, absent factors) as Markdown; empty when there are none."""
    return f"**{title}:**\n\n" + "\n".join(f"- {n}" for n in notes) if notes else ""


def next_step_markdown(run_dir: str | Path) -> str:
    """How to analyse a results directory next (the analysis notebook with papermill, or the report)."""
    return (f"Results are in `{run_dir}`. Analyse them with\n\n"
            f"    .venv/bin/papermill notebooks/02-analysis.ipynb reports/02-analysis.ipynb -p run_dir {run_dir}\n\n"
            f"or build the whole report: `.venv/bin/shlib report {run_dir}`.")


def inputs_markdown(inputs: AnalysisInputs) -> str:
    """One paragraph on what an analysis notebook is about to analyse (run, status, runtimes, baseline)."""
    frame = inputs.frame
    runs = (f"Analysing run **{inputs.run_id}** (status *{inputs.metadata.status}*) from `{inputs.run_dir}`"
            if len(inputs.metadatas) <= 1 else
            f"Analysing {len(inputs.metadatas)} runs merged ({', '.join(f'**{m.run_id}**' for m in inputs.metadatas)}; "
            f"engines {', '.join(f'`{e}`' for e in sorted(frame['engine'].dropna().astype(str).unique()))})")
    text = (f"{runs}: "
            f"{frame['runtime'].nunique()} runtimes ({', '.join(f'`{r}`' for r in inputs.runtimes)}), "
            f"{frame['module'].nunique()} modules, concurrency "
            f"{', '.join(map(str, sorted(frame['concurrency'].dropna().unique())))}; baseline `{inputs.baseline}`; "
            f"bootstrap seed {inputs.seed}, {inputs.n_resamples} resamples; analysis `{analysis_key(inputs)}` "
            "(computed once per run and parameters, then read from shlib's cache).")
    return text + ("\n\n" + notes_markdown(inputs.notes) if inputs.notes else "")


def headline_markdown(result: AnalysisResult, notes: Sequence[str] = ()) -> str:
    """The analysis headline (``headline_lines``) as Markdown: a summary line, then bullets."""
    own = headline_lines(result)
    lines = [*(n for n in notes if n not in own), *own]
    if not lines:
        return "_No result to report._"
    first, rest = lines[0], lines[1:]
    return "**Reading of this run** (computed from the data):\n\n" + "\n".join(f"- {line}" for line in [first, *rest])


def factor_note(frame: pd.DataFrame, factor: str, needed: int = 2, what: str = "") -> str:
    """'' when ``factor`` has at least ``needed`` levels in the data, else a sentence saying what is missing."""
    if factor not in frame.columns:
        return f"This run has no `{factor}` column: {what or 'its effect'} cannot be studied here."
    levels = sorted(frame[factor].dropna().astype(str).unique())
    if len(levels) >= needed:
        return ""
    shown = ", ".join(levels) or "none"
    return (f"This run has {len(levels)} level(s) of `{factor}` ({shown}); {what or 'its effect'} needs at least "
            f"{needed}. The tables below show what there is.")


def concurrency_reading(ratio_summary: pd.DataFrame, scaling: pd.DataFrame, baseline: str,
                        statistic: str = "median", growth: pd.DataFrame | None = None) -> str:
    """How load times and ratios change from the lowest to the highest concurrency, in words, each with its interval.

    ``growth`` (``AnalysisResult.growth``): each runtime's load time at its highest level over its lowest.
    The trend of each ratio is given per module only where a log-linear trend fits (``scaling``'s
    lack-of-fit test); elsewhere the per-level ratios are the reading. Oversubscribed cells are labelled.
    """
    rows = ratio_overview(ratio_summary, baseline, statistic)
    lines = []
    if growth is not None and len(growth):
        for runtime, part in growth.groupby("runtime", sort=True):
            top = part.sort_values("concurrency").iloc[-1]
            lines.append(f"`{runtime}`: median load time with {int(top['concurrency'])} containers at once is "
                         f"{interval_text(top['ratio'], top['ci_low'], top['ci_high'])} that with "
                         f"{int(top['from_concurrency'])} (geometric mean over {int(top['n_modules'])} modules)"
                         + _crowded(top))
    levels = sorted(rows["concurrency"].unique()) if len(rows) else []
    if len(levels) >= 2:
        lo, hi = levels[0], levels[-1]
        for runtime, part in rows.groupby("runtime"):
            a = part[part["concurrency"] == lo]
            b = part[part["concurrency"] == hi]
            if len(a) and len(b):
                ra, rb = a.iloc[0], b.iloc[0]
                lines.append(f"`{runtime!s}` / `{baseline}`: {interval_text(ra.ratio, ra.ci_low, ra.ci_high)} with "
                             f"{lo} container(s) at once, {interval_text(rb.ratio, rb.ci_low, rb.ci_high)} with {hi}"
                             + _crowded(rb))
    if len(scaling) and "ratio_trend_fits" in scaling.columns:
        for runtime, part in scaling[scaling["ratio_trend_fits"].notna()].groupby("runtime", sort=True):
            fits = part[part["ratio_trend_fits"].astype(bool)]
            bent = part[~part["ratio_trend_fits"].astype(bool)]
            said = [f"{r.module} {r.ratio_pct_per_container:+.1f}% [{r.ratio_pct_ci_low:+.1f}%, "
                    f"{r.ratio_pct_ci_high:+.1f}%] per extra container" for r in fits.itertuples()
                    if np.isfinite(r.ratio_pct_per_container)]
            text = f"`{runtime}` / `{baseline}` trend: " + "; ".join(said)
            if len(bent):
                text += ("; " if said else "") + (f"no log-linear trend fits for {', '.join(bent['module'])} "
                                                  "(lack-of-fit p < 0.05): read the per-level ratios")
            lines.append(text)
    if not lines:
        return "_Too few concurrency levels or runtimes to say how load time scales._"
    return "**How concurrency changes the result** (computed from the data):\n\n" + "\n".join(f"- {x}" for x in lines)


def _crowded(row: Any) -> str:
    flag = row.get("oversubscribed") if hasattr(row, "get") else getattr(row, "oversubscribed", None)
    return " (CPU oversubscribed: more loads at once than cores)" if flag is True else ""


def gvisor_reading(variants: pd.DataFrame, overview: pd.DataFrame, contrasts: pd.DataFrame, baseline: str) -> str:
    """What the gVisor variants show, in words: each against the baseline, and each single-factor contrast."""
    g = variants[variants["kind"] == "gvisor"]
    if len(g) == 0:
        return ("**No gVisor runtime in this run**: there is nothing to compare here. Run a spec with a `runsc-*` "
                "runtime (see `shlib doctor`) to fill this notebook.")
    lines = []
    builds = sorted(set(g["build"]) - {""})
    if len(builds) < 2:
        lines.append(f"Only one gVisor build in this run ({', '.join(builds) or 'unknown'}): the generations "
                     "cannot be compared; platforms and file access still can where they vary.")
    for r in overview.itertuples():
        lines.append(f"`{r.runtime}` / `{baseline}` at concurrency {r.concurrency}: "
                     f"{interval_text(r.ratio, r.ci_low, r.ci_high)}")
    for r in contrasts.itertuples():
        lines.append(f"{FACTOR_LABELS.get(r.factor, r.factor)} {r.from_value} -> {r.to_value} (`{r.runtime}` vs "
                     f"`{r.compared_with}`, concurrency {r.concurrency}): load time x "
                     f"{interval_text(r.ratio, r.ci_low, r.ci_high)}, {effect_word(r.ci_low, r.ci_high)}")
    return "**gVisor variants** (computed from the data):\n\n" + "\n".join(f"- {x}" for x in lines)


def switch_reading(contrasts: pd.DataFrame) -> str:
    """Which gVisor switches matter for loading, in words: per switch (against its build's default), the
    load-time ratio at each concurrency level with its interval, the ones that matter first."""
    switches = contrasts[~contrasts["factor"].isin(["gvisor_build", "platform"])] if len(contrasts) else contrasts
    if len(switches) == 0:
        return ("**No switch variant in this run**: run the `gvisor-settings` preset (a 2024 systrap default and "
                "one variant per switch) to see which switches matter.")
    lines = []
    for (factor, build, to_value), part in switches.groupby(["factor", "gvisor_build", "to_value"], sort=False):
        cells = "; ".join(f"{interval_text(r.ratio, r.ci_low, r.ci_high)} at concurrency {r.concurrency}"
                          for r in part.sort_values("concurrency").itertuples())
        words = sorted({effect_word(r.ci_low, r.ci_high) for r in part.itertuples()})
        first = part.iloc[0]
        lines.append((max(abs(math.log(float(x))) for x in part["ratio"] if float(x) > 0) if len(part) else 0.0,
                      f"{FACTOR_LABELS.get(factor, factor)} {first['from_value']} -> {to_value} (build {build}): "
                      f"load time x {cells}: {', '.join(words)}"))
    lines.sort(key=lambda x: -x[0])
    return ("**Which switches matter** (each against its build's default, largest effect first; a ratio below 1 "
            "means the switch made loading faster):\n\n" + "\n".join(f"- {text}" for _, text in lines))


def _times(ratio: float, low: float, high: float, baseline: str) -> str:
    if low <= 1 <= high:
        return f"{ratio:.2f}x [{low:.2f}, {high:.2f}] the time of {baseline} (no clear difference: interval holds 1)"
    if ratio >= 1:
        return f"{ratio:.2f}x [{low:.2f}, {high:.2f}] slower than {baseline}"
    return f"{1 / ratio:.2f}x [{1 / high:.2f}, {1 / low:.2f}] faster than {baseline}"


def headline_lines(result: AnalysisResult) -> list[str]:
    """A short reading of an analysis, computed from its tables: a summary line, then one line per finding."""
    tables, baseline, facts = result.tables, result.baseline, result.overview
    levels = facts["concurrency"]
    lines = [f"{len(facts['runtimes'])} runtimes ({', '.join(facts['runtimes'])}), {facts['n_modules']} modules, "
             f"concurrency {', '.join(map(str, levels))}; {facts['n_ok']} ok module loads, {facts['n_failed']} failed.",
             *result.notes]
    summary = tables["ratio_summary"]
    if baseline is not None and len(summary):
        rows = summary[(summary["baseline"] == baseline) & (summary["statistic"] == HEADLINE_STATISTIC)]
        factors = [f for f in FACTORS if f in rows.columns]
        every = facts.get("cores")  # merged runs: {engine: cores}
        known = [c for c in every.values() if c is not None] if isinstance(every, dict) else []
        least = (min(known) if known else None) if isinstance(every, dict) else every
        fit = [c for c in levels if least is None or c <= least]
        shown = sorted({levels[0], fit[-1] if fit else levels[0], levels[-1]})
        for _, row in rows[rows["concurrency"].isin(shown)].iterrows():
            where = "".join(f", {f}={row[f]}" for f in factors)
            cores = every.get(str(row.get("engine"))) if isinstance(every, dict) else every
            if isinstance(every, dict) and "engine" not in row:
                cores = least
            if cores is not None and row["concurrency"] > cores:
                where += f" (CPU oversubscribed: {row['concurrency']} loads at once on {cores} cores)"
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
    if "gvisor" not in facts["kinds"]:
        lines.append("No gVisor runtime in this run: the study's gVisor claims are not measured.")
    for _, row in tables["replication"].iterrows():
        lines.append(replication_line(row))
    return lines


def language_reading(result: AnalysisResult) -> str:
    """The sandbox penalty of each language in words (one language only: says so), lowest concurrency."""
    languages = result.overview.get("languages", ["node"])
    if len(languages) < 2:
        return (f"**One language only** ({', '.join(languages)}): this run cannot compare the sandbox penalty of "
                "Node.js and Python. A spec that lists npm and `py:` modules together measures both.")
    summary, baseline = result.tables["ratio_summary"], result.baseline
    if baseline is None or len(summary) == 0 or "language" not in summary.columns:
        return "**Two languages**, but no ratio between runtimes to compare."
    rows = summary[(summary["baseline"] == baseline) & (summary["statistic"] == HEADLINE_STATISTIC)]
    level = int(rows["concurrency"].min()) if len(rows) else 1
    lines = []
    for _, row in rows[rows["concurrency"] == level].sort_values(["runtime", "language"]).iterrows():
        if np.isfinite(row["gmean_ratio"]):
            lines.append(f"- {row['runtime']}, {row['language']} ({row['n_modules']} modules: {row['modules']}): "
                         f"{interval_text(row['gmean_ratio'], row['ci_low'], row['ci_high'])} the load time of "
                         f"{baseline}")
    return (f"**Sandbox penalty by language** at {level} container(s) at once (geometric mean over each "
            f"language's modules of the ratio of medians, 95% interval; the study's claims are judged on Node "
            f"only):\n\n" + "\n".join(lines))


def replication_line(row: Any) -> str:
    """One replication verdict in words: the claim, the pair, the verdict and its reason (with its interval)."""
    if str(row["verdict"]).startswith("not measured"):
        return f"Claim '{row['claim']}': {row['verdict']} ({row['reason']})."
    text = (f"Claim '{row['claim']}': {row['runtime']} / {row['baseline']} -> {str(row['verdict']).upper()}: "
            f"{row['reason']}.")
    if np.isfinite(float(row.get("gmean_ratio", math.nan))):
        text += (f" Geometric mean over modules at {int(row['gmean_concurrency'])} container(s): "
                 f"{interval_text(row['gmean_ratio'], row['gmean_ci_low'], row['gmean_ci_high'])}.")
    note = row.get("note")
    return text + (f" ({note})" if isinstance(note, str) and note else "")


def engines_reading(engines: pd.DataFrame) -> str:
    """What the engine x runtime comparison says, in words; 'one engine only' when there is nothing to compare."""
    names = sorted(engines["engine"].dropna().astype(str).unique()) if len(engines) else []
    if len(names) <= 1:
        which = f" (`{names[0]}`)" if names else ""
        return (f"**One engine only**{which}: every ratio below was measured on one engine and its host, so there "
                "is no comparison across engines. Merge runs from other engines (`shlib analyze DIR DIR...`, or a "
                "campaign with `engines: [...]` in the spec) to compare them.")
    lines = [f"**{len(names)} engines** ({', '.join(f'`{n}`' for n in names)}); each ratio is computed within its "
             "engine, so what differs below is what each sandbox costs relative to the baseline on that machine."]
    for (runtime, level), rows in engines.groupby(["runtime", "concurrency"], observed=True, sort=True):
        ok = rows[np.isfinite(rows["gmean_ratio"].astype(float))]
        if len(ok) < 2:
            continue
        cells = ", ".join(f"{r.engine} {interval_text(r.gmean_ratio, r.ci_low, r.ci_high)}" for r in ok.itertuples())
        lows, highs = ok["ci_low"].astype(float), ok["ci_high"].astype(float)
        apart = bool(lows.max() > highs.min())
        verdict = ("the intervals do not all overlap: the engines disagree" if apart else
                   "the intervals overlap: no difference between engines is shown")
        lines.append(f"- `{runtime}` at concurrency {int(level)}: {cells}; {verdict}.")
    return "\n".join(lines)

