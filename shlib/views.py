"""Tables and text that notebooks and reports show: the host, a run, its runtimes and a reading of the result.

Everything here returns a DataFrame or a Markdown string computed from shlib's own data
(the doctor report, a run's metadata, the tables of ``shlib.analyze``); the notebooks only
call and display. Nothing here measures or tests: see ``shlib.stats`` for that.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

#: Packages whose versions travel with a notebook's output (what produced the numbers).
VERSION_PACKAGES = ("shlib", "numpy", "pandas", "scipy", "pyarrow", "matplotlib", "docker", "pydantic",
                    "papermill", "nbconvert", "ipykernel", "jupyterlab")
#: runsc flags that describe how a gVisor sandbox reaches files (the study's bottleneck).
FILE_ACCESS_FLAGS = ("--file-access", "--file-access-mounts", "--overlay2", "--directfs", "--overlay")


# ---------------------------------------------------------------------------------------------------
# The host


def runtime_catalog(runtimes: Mapping[str, Any]) -> pd.DataFrame:
    """One row per runtime of the catalog (``shlib.runtimes.catalog`` or a doctor report's ``runtimes``)."""
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


# ---------------------------------------------------------------------------------------------------
# A run


def spec_table(spec: Any) -> pd.DataFrame:
    """An experiment spec as a two-column table (field, value)."""
    data = spec.as_dict() if hasattr(spec, "as_dict") else dict(spec)
    return pd.DataFrame({"field": list(data), "value": [_text(v) for v in data.values()]})


def run_facts(metadata: Mapping[str, Any]) -> pd.DataFrame:
    """Provenance of a run: id, status, when, where, with what (from its metadata.json)."""
    host = metadata.get("host") or {}
    engine = metadata.get("engine") or {}
    images = metadata.get("images") or {}
    library = metadata.get("library") or {}
    modules = library.get("modules") or []
    facts = {
        "run_id": metadata.get("run_id"), "status": metadata.get("status"),
        "started_at": metadata.get("started_at"), "finished_at": metadata.get("finished_at"),
        "shlib_version": metadata.get("shlib_version"), "seed": metadata.get("seed"),
        "host": f"{host.get('cpu_model', '?')}, {host.get('cpu_count', '?')} cores, kernel {host.get('kernel', '?')}"
        if host else "", "docker": engine.get("docker_version"), "containerd": engine.get("containerd_version"),
        "node": ", ".join(sorted({str(i.get("node_version")) for i in images.values()})) or host.get("host_node"),
        "modules": ", ".join(f"{m.get('module')}@{m.get('version')}" for m in modules),
        "trials by status": ", ".join(f"{k}: {v}" for k, v in (metadata.get("counts") or {}).items()),
        "simulated": metadata.get("simulated"),
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


def notes_markdown(notes: Sequence[str], title: str = "Notes on this analysis") -> str:
    """Notes (fallbacks, incomplete runs, absent factors) as Markdown; empty when there are none."""
    return f"**{title}:**\n\n" + "\n".join(f"- {n}" for n in notes) if notes else ""


def next_step_markdown(run_dir: str | Path) -> str:
    """How to analyse a results directory next (the analysis notebook with papermill, or the report)."""
    return (f"Results are in `{run_dir}`. Analyse them with\n\n"
            f"    .venv/bin/papermill notebooks/02-analysis.ipynb reports/02-analysis.ipynb -p run_dir {run_dir}\n\n"
            f"or build the whole report: `.venv/bin/shlib report {run_dir}`.")


# ---------------------------------------------------------------------------------------------------
# Runtime variants (gVisor builds, platforms, file access)


def file_access(args: Sequence[str], kind: str | None = None) -> str:
    """The file-access flags of a runtime's arguments ('default' for gVisor without any, '' otherwise)."""
    flags = [a for a in args if a.split("=", 1)[0] in FILE_ACCESS_FLAGS]
    if flags:
        return " ".join(flags)
    return "default" if kind == "gvisor" else ""


def _build_date(version: str | None, name: str) -> str:
    match = re.search(r"(20\d{6})", version or "") or re.search(r"(20\d{6})", name)
    return match.group(1) if match else ""


def runtime_variants(metadata: Mapping[str, Any], runtimes: Iterable[str], frame: pd.DataFrame | None = None
                     ) -> pd.DataFrame:
    """Per runtime: family, build (date in its version), platform, file-access flags, other flags, trials.

    Read from the run's metadata (what the catalog recorded); a runtime missing there (simulated data)
    is described from its name.
    """
    from shlib.results import runtime_kind

    known = metadata.get("runtimes") or {}
    rows = []
    for name in runtimes:
        rt = known.get(name) or {}
        kind = rt.get("kind") or runtime_kind(name)
        args = list(rt.get("args") or [])
        platform = rt.get("platform") or next((a.split("=", 1)[1] for a in args if a.startswith("--platform=")), "")
        if not platform and kind == "gvisor":
            platform = next((p for p in ("systrap", "ptrace", "kvm") if p in name.split("-")), "default")
        access = file_access(args, kind)
        if kind == "gvisor" and access == "default" and "exclusive" in name.split("-") and not rt:
            access = "--file-access-mounts=exclusive"
        other = [a for a in args if not a.startswith("--platform=") and a.split("=", 1)[0] not in FILE_ACCESS_FLAGS]
        row = {"runtime": name, "kind": kind, "build": _build_date(rt.get("version"), name) if kind == "gvisor" else "",
               "version": rt.get("version") or "", "platform": platform, "file_access": access,
               "other_flags": " ".join(other)}
        if frame is not None:
            rows_rt = frame[frame["runtime"].astype(str) == name]
            row["trials"] = int(rows_rt["trial_id"].nunique()) if "trial_id" in rows_rt else len(rows_rt)
            row["ok_loads"] = int((rows_rt["status"].astype(str) == "ok").sum())
        rows.append(row)
    return pd.DataFrame(rows)


def gvisor_reference(variants: pd.DataFrame) -> str | None:
    """The gVisor variant the others are compared with: the oldest build, its default file access, ptrace first."""
    g = variants[variants["kind"] == "gvisor"]
    if len(g) == 0:
        return None
    order = g.assign(_plat=g["platform"].map({"ptrace": 0, "default": 1, "systrap": 2}).fillna(3),
                     _access=(g["file_access"] != "default").astype(int))
    return str(order.sort_values(["build", "_access", "_plat", "runtime"]).iloc[0]["runtime"])


def gvisor_contrasts(variants: pd.DataFrame, ratio_summary: pd.DataFrame, statistic: str = "median"
                     ) -> pd.DataFrame:
    """Pairs of gVisor variants that differ in exactly one of build, platform, file access: the effect of that one.

    ``ratio_summary`` must hold ratios with each gVisor variant as a baseline (``shlib.stats.ratios_against``
    then ``summary_across_modules``). The later build, systrap, and non-default file access are the numerators;
    ``statistic`` picks ratios of medians (default) or of geometric means.
    """
    g = variants[variants["kind"] == "gvisor"].set_index("runtime") if len(variants) else variants
    attrs = ("build", "platform", "file_access")
    rows = []
    names = list(g.index) if len(ratio_summary) else []
    for a in names:
        for b in names:
            if a == b:
                continue
            differ = [x for x in attrs if str(g.at[a, x]) != str(g.at[b, x])]
            if len(differ) != 1:
                continue
            factor = differ[0]
            # numerator: the later build, the later platform name (systrap > ptrace), non-default file access
            newer = (str(g.at[b, factor]) == "default" if factor == "file_access"
                     else str(g.at[a, factor]) > str(g.at[b, factor]))
            if not newer:
                continue
            part = ratio_summary[(ratio_summary["runtime"] == a) & (ratio_summary["baseline"] == b)
                                 & (ratio_summary["statistic"] == statistic)]
            for r in part.itertuples():
                rows.append({"factor": factor, "from_value": str(g.at[b, factor]), "to_value": str(g.at[a, factor]),
                             "runtime": a, "compared_with": b, "concurrency": r.concurrency,
                             "statistic": r.statistic, "ratio": r.gmean_ratio, "ci_low": r.ci_low,
                             "ci_high": r.ci_high, "n_modules": r.n_modules, "note": r.note})
    columns = ["factor", "from_value", "to_value", "runtime", "compared_with", "concurrency", "statistic", "ratio",
               "ci_low", "ci_high", "n_modules", "note"]
    return pd.DataFrame(rows, columns=columns)


def gvisor_comparison(frame: pd.DataFrame, variants: pd.DataFrame, seed: int, n_resamples: int
                      ) -> dict[str, pd.DataFrame]:
    """Ratios among the gVisor variants of a run: every variant against every other, per cell and across modules.

    Returns ``ratios`` (per cell), ``summary`` (geometric mean over modules), ``contrasts`` (pairs that
    differ in one of build / platform / file access) and ``contrast_cells`` (the per-cell rows behind them).
    """
    from shlib import stats

    names = variants.loc[variants["kind"] == "gvisor", "runtime"].astype(str).tolist()
    if len(names) < 2:
        empty = pd.DataFrame(columns=["runtime", "baseline", "concurrency", "statistic", "ratio", "ci_low", "ci_high"])
        return {"ratios": empty, "summary": empty.rename(columns={"ratio": "gmean_ratio"}),
                "contrasts": gvisor_contrasts(variants, pd.DataFrame(columns=["runtime", "baseline"])),
                "contrast_cells": empty}
    rows = frame[frame["runtime"].astype(str).isin(names)]
    table = stats.ratios_against(rows, names, seed=seed, n_resamples=n_resamples)
    table = table[table["runtime"].isin(names)].reset_index(drop=True)
    summary = stats.summary_across_modules(table)
    contrasts = gvisor_contrasts(variants, summary)
    pairs = set(zip(contrasts["runtime"], contrasts["compared_with"], strict=True))
    cells = table[[(r, b) in pairs for r, b in zip(table["runtime"], table["baseline"], strict=True)]]
    return {"ratios": table, "summary": summary, "contrasts": contrasts, "contrast_cells": cells.reset_index(drop=True)}


# ---------------------------------------------------------------------------------------------------
# Ratios and the reading of a result


def inputs_markdown(inputs: Any) -> str:
    """One paragraph on what an analysis notebook is about to analyse (run, status, runtimes, baseline)."""
    frame = inputs.frame
    text = (f"Analysing run **{inputs.run_id}** (status *{inputs.metadata.get('status')}*) from `{inputs.run_dir}`: "
            f"{frame['runtime'].nunique()} runtimes ({', '.join(f'`{r}`' for r in inputs.runtimes)}), "
            f"{frame['module'].nunique()} modules, concurrency "
            f"{', '.join(map(str, sorted(frame['concurrency'].dropna().unique())))}; baseline `{inputs.baseline}`; "
            f"bootstrap seed {inputs.seed}, {inputs.n_resamples} resamples.")
    return text + ("\n\n" + notes_markdown(inputs.notes) if inputs.notes else "")


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
    keep = [c for c in ("runtime", "runtime_kind", "baseline", "concurrency", "mount", "cache", "node_version",
                        "load_mode", "ratio", "ci_low", "ci_high", "n_modules", "min_module_ratio",
                        "max_module_ratio", "ci_method", "note") if c in out.columns]
    return out[keep].reset_index(drop=True)


def module_ratios(ratios: pd.DataFrame, baseline: str | None = None, statistic: str = "median") -> pd.DataFrame:
    """Per-module ratios to ``baseline`` with their intervals (the cells behind the overview)."""
    if len(ratios) == 0:
        return ratios
    rows = ratios[ratios["statistic"] == statistic]
    if baseline is not None:
        rows = rows[rows["baseline"] == baseline]
    keep = [c for c in ("runtime", "baseline", "module", "concurrency", "mount", "cache", "node_version", "load_mode",
                        "ratio", "ci_low", "ci_high", "ci_method", "n", "n_baseline", "n_batches", "note")
            if c in rows.columns]
    return rows[keep].reset_index(drop=True)


def load_time_table(summary: pd.DataFrame) -> pd.DataFrame:
    """Median load time (ms) per module and runtime (rows) and concurrency (columns)."""
    if len(summary) == 0:
        return summary
    index = [c for c in ("module", "mount", "cache", "node_version", "load_mode") if c in summary.columns]
    table = summary.pivot_table(index=[*index, "runtime"], columns="concurrency", values="median_ms",
                                observed=True)
    table.columns = [f"c={c} median_ms" for c in table.columns]
    return table.round(1)


def ratio_by_concurrency(ratio_summary: pd.DataFrame, baseline: str, statistic: str = "median") -> pd.DataFrame:
    """Ratio to the baseline per runtime (rows) and concurrency (columns), as 'ratio [low, high]' text."""
    rows = ratio_overview(ratio_summary, baseline, statistic)
    if len(rows) == 0:
        return rows
    text = [_interval_text(r.ratio, r.ci_low, r.ci_high) for r in rows.itertuples()]
    table = rows.assign(text=text).pivot(index="runtime", columns="concurrency", values="text")
    table.columns = [f"c={c}" for c in table.columns]
    return table


def _interval_text(value: Any, low: Any, high: Any) -> str:
    value, low, high = float(value), float(low), float(high)
    if not np.isfinite(value):
        return "n/a"
    if not (np.isfinite(low) and np.isfinite(high)):
        return f"{value:.2f}x"
    return f"{value:.2f}x [{low:.2f}, {high:.2f}]"


def headline_markdown(result: Any, notes: Sequence[str] = ()) -> str:
    """The analysis headline (``AnalysisResult.headline_lines``) as Markdown: a summary line, then bullets."""
    lines = [*(n for n in notes if n not in result.headline_lines), *result.headline_lines]
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
                        statistic: str = "median") -> str:
    """How load times and ratios change from the lowest to the highest concurrency, in words."""
    rows = ratio_overview(ratio_summary, baseline, statistic)
    lines = []
    if len(scaling):
        growth = scaling.groupby("runtime")["pct_per_container"].agg(lambda s: _gmean_pct(s.to_numpy(float)))
        for runtime, pct in growth.items():
            if np.isfinite(pct):
                lines.append(f"`{runtime}`: median load time changes by {pct:+.1f}% per extra container "
                             "(geometric mean over modules of the fitted slopes)")
    levels = sorted(rows["concurrency"].unique()) if len(rows) else []
    if len(levels) >= 2:
        lo, hi = levels[0], levels[-1]
        for runtime, part in rows.groupby("runtime"):
            a = part[part["concurrency"] == lo]
            b = part[part["concurrency"] == hi]
            if len(a) and len(b):
                ra, rb = a.iloc[0], b.iloc[0]
                lines.append(f"`{runtime!s}` / `{baseline}`: {_interval_text(ra.ratio, ra.ci_low, ra.ci_high)} with "
                             f"{lo} container(s) at once, {_interval_text(rb.ratio, rb.ci_low, rb.ci_high)} with {hi}")
    if not lines:
        return "_Too few concurrency levels or runtimes to say how load time scales._"
    return "**How concurrency changes the result** (computed from the data):\n\n" + "\n".join(f"- {x}" for x in lines)


def _gmean_pct(pcts: np.ndarray) -> float:
    pcts = pcts[np.isfinite(pcts)]
    if len(pcts) == 0:
        return math.nan
    return float(100 * (np.exp(np.mean(np.log1p(pcts / 100))) - 1))


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
                     f"{_interval_text(r.ratio, r.ci_low, r.ci_high)}")
    for r in contrasts.itertuples():
        lines.append(f"{r.factor} {r.from_value} -> {r.to_value} (`{r.runtime}` vs `{r.compared_with}`, "
                     f"concurrency {r.concurrency}): load time x {_interval_text(r.ratio, r.ci_low, r.ci_high)}")
    return "**gVisor variants** (computed from the data):\n\n" + "\n".join(f"- {x}" for x in lines)


# ---------------------------------------------------------------------------------------------------
# Figures


def save_figure(fig: Any, figures_dir: str | Path | None, name: str) -> list[Path]:
    """Save ``fig`` as PNG and SVG under ``figures_dir`` (nothing when it is None); the files written."""
    if figures_dir is None or str(figures_dir) == "":
        return []
    from shlib import plots

    return plots.save_figure(fig, Path(figures_dir) / name)
