"""Figures, tables and readings of notebook 05 (where the time goes): the timeline, CPU against wall
ratios, the cost model. Everything reads tables of one ``AnalysisResult``; nothing is computed twice."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from shlib.analysis.costmodel import CostModel, per_file_readings, predict_penalty_ms
from shlib.analysis.frames import FACTORS
from shlib.analysis.timeline import PHASES
from shlib.present.plots import _colours_for, _empty, _grid, _plain_log, runtime_order
from shlib.present.tables import interval_text, ratio_overview

PHASE_COLOURS = {"create_ms": "#9ecae1", "start_ms": "#4292c6", "boot_ms": "#fdd0a2", "load_ms": "#d94801",
                 "teardown_ms": "#bdbdbd"}


def _ms_text(value: Any, low: Any, high: Any) -> str:
    return interval_text(value, low, high, digits=1, unit="")


def phase_table(phases: pd.DataFrame) -> pd.DataFrame:
    """Median ms of each phase (columns) per runtime and concurrency (rows), with its interval."""
    if phases.empty:
        return pd.DataFrame()
    text = [_ms_text(r.median_ms, r.ci_low_ms, r.ci_high_ms) for r in phases.itertuples()]
    index = ["runtime", "concurrency", *_series_keys(phases)[1:]]
    table = phases.assign(text=text).pivot(index=index, columns="phase", values="text")
    table = table[[p for p in PHASES if p in table.columns]].fillna("-")
    order = {r: i for i, r in enumerate(runtime_order(phases["runtime"]))}
    return table.sort_index(key=lambda idx: idx.map(order) if idx.name == "runtime" else idx)


def plot_phases(phases: pd.DataFrame, colors: Mapping[str, str] | None = None) -> Figure:
    """Stacked median phases per runtime, one panel per concurrency; whiskers: each phase's 95% interval."""
    if phases.empty:
        return _empty("no timeline in these results")
    levels = sorted(phases["concurrency"].unique())
    keys = _series_keys(phases)
    phases = phases.assign(series=[r["runtime"] + (f" ({_others(r, keys)})" if len(keys) > 1 else "")
                                   for r in phases.to_dict("records")])
    fig, axes = _grid(len(levels), width=6.0 + 1.5 * (len(keys) > 1),
                      height=0.5 + 0.45 * phases["series"].nunique(), ncols_max=2)
    for ax, level in zip(axes, levels, strict=False):
        rows = phases[phases["concurrency"] == level]
        order = runtime_order(rows["runtime"])
        series = sorted(set(rows["series"]), key=lambda name: (order.index(name.split(" (")[0]), name))
        for y, name in enumerate(series):
            left = 0.0
            mine = rows[rows["series"] == name].set_index("phase")
            for phase in PHASES:
                if phase not in mine.index:
                    continue
                r = mine.loc[phase]
                if phase == "teardown_ms":
                    left += 0.02 * max(left, 1.0)  # after the response: set apart
                ax.barh(y, r["median_ms"], left=left, color=PHASE_COLOURS[phase], edgecolor="white",
                        hatch="//" if phase == "teardown_ms" else None)
                if np.isfinite(r["ci_low_ms"]) and np.isfinite(r["ci_high_ms"]):
                    ax.plot([left + r["ci_low_ms"], left + r["ci_high_ms"]], [y, y], color="black", lw=1)
                left += r["median_ms"]
        ax.set_yticks(range(len(series)), series)
        ax.invert_yaxis()
        ax.set_xlabel("ms (median of each phase)")
        ax.set_title(f"{level} container(s) at once")
    handles = [Line2D([0], [0], color=c, lw=8, label=p.removesuffix("_ms")) for p, c in PHASE_COLOURS.items()
               if p in set(phases["phase"])]
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles))
    return fig


def _series_keys(table: pd.DataFrame) -> list[str]:
    """runtime, then every factor with more than one level in ``table`` (language, engine, ...): one series each."""
    return ["runtime", *[f for f in FACTORS if f in table.columns and table[f].astype(str).nunique() > 1]]


def _others(row: Mapping[str, Any], keys: Sequence[str]) -> str:
    """The factor levels of a series besides its runtime ("language=python, interpreter_version=3.11.2")."""
    return ", ".join(f"{k}={row[k]}" for k in keys[1:])


def cpu_wall_table(ratio_summary: pd.DataFrame, cpu_ratio_summary: pd.DataFrame, baseline: str | None,
                   statistic: str = "median") -> pd.DataFrame:
    """Per runtime and concurrency: the wall-clock (load_ms) and CPU (cpu_ms) ratio to the baseline."""
    out = []
    for what, table in (("wall (load_ms)", ratio_summary), ("CPU (cpu_ms)", cpu_ratio_summary)):
        if table is None or table.empty:
            continue
        rows = ratio_overview(table, baseline, statistic)
        keys = _series_keys(rows)
        for r in rows.to_dict("records"):
            out.append({**{k: r[k] for k in keys}, "baseline": r["baseline"], "concurrency": int(r["concurrency"]),
                        "metric": what, "ratio": interval_text(r["ratio"], r["ci_low"], r["ci_high"])})
    if not out:
        return pd.DataFrame()
    frame = pd.DataFrame(out)
    index = [c for c in frame.columns if c not in ("concurrency", "ratio", "metric")] + ["metric"]
    table = frame.pivot_table(index=index, columns="concurrency", values="ratio", aggfunc="first")
    table.columns = [f"c={c}" for c in table.columns]
    return table


def plot_cpu_wall(ratio_summary: pd.DataFrame, cpu_ratio_summary: pd.DataFrame, baseline: str | None,
                  colors: Mapping[str, str] | None = None, statistic: str = "median") -> Figure:
    """Ratio to the baseline against concurrency: wall clock (solid) and CPU of the cgroup (dashed)."""
    wall = ratio_overview(ratio_summary, baseline, statistic)
    if wall.empty:
        return _empty("no ratios between runtimes in these results")
    cpu = (ratio_overview(cpu_ratio_summary, None, statistic)
           if cpu_ratio_summary is not None and not cpu_ratio_summary.empty else pd.DataFrame())
    colours = _colours_for(wall["runtime"], colors)
    fig = Figure(figsize=(6.5, 4.2), layout="constrained")
    ax = fig.subplots()
    keys = _series_keys(wall)
    markers = {k: m for k, m in zip(sorted({_others(r, keys) for r in wall.to_dict("records")}), "osD^v<>ph",
                                    strict=False)}
    for (table, style) in ((wall, "-"), (cpu, "--")):
        if table.empty:
            continue
        for key, rows in table.groupby(keys, sort=True):
            runtime = key[0] if isinstance(key, tuple) else key
            other = _others(rows.iloc[0].to_dict(), keys)
            rows = rows.sort_values("concurrency")
            x = rows["concurrency"].to_numpy(float) * (1.03 if style == "--" else 1.0)
            y = rows["ratio"].to_numpy(float)
            err = np.vstack([y - rows["ci_low"].to_numpy(float), rows["ci_high"].to_numpy(float) - y])
            label = f"{runtime}{' ' + other if other else ''} ({'CPU' if style == '--' else 'wall'})"
            ax.errorbar(x, y, yerr=np.where(np.isfinite(err), err, 0), fmt=markers.get(other, "o") + style,
                        color=colours.get(runtime), capsize=3, label=label)
    ax.axhline(1.0, color="grey", lw=0.8)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    _plain_log(ax.yaxis)
    levels = sorted(wall["concurrency"].unique())
    ax.set_xticks(levels, [str(c) for c in levels])
    ax.set_xlabel("containers loading at once")
    baseline = wall["baseline"].iloc[0]
    ax.set_ylabel(f"ratio to {baseline} (geometric mean over modules)")
    ax.set_title("wall clock (solid) and CPU of the sandbox's cgroup (dashed)" if not cpu.empty
                 else "wall clock (no cpu_ms in these results)")
    ax.legend(fontsize=7)
    return fig


def cpu_wall_reading(ratio_summary: pd.DataFrame, cpu_ratio_summary: pd.DataFrame, baseline: str | None,
                     statistic: str = "median") -> str:
    """Whether each runtime's CPU ratio holds from the lowest to the highest concurrency while the wall ratio falls."""
    if cpu_ratio_summary is None or cpu_ratio_summary.empty:
        return ("**No CPU ratios:** these results have no `cpu_ms` (the cgroup's CPU is recorded from schema v3 on, "
                "for containers whose cgroup is on the harness's host). Wall-clock ratios only.")
    lines = []
    walls = ratio_overview(ratio_summary, baseline, statistic)
    cpus = ratio_overview(cpu_ratio_summary, None, statistic)
    keys = _series_keys(cpus)
    for key, cpu in cpus.groupby(keys, sort=True):
        key = key if isinstance(key, tuple) else (key,)
        wall = walls[np.logical_and.reduce([walls[k].astype(str) == str(v) for k, v in zip(keys, key, strict=True)])]
        runtime, other = key[0], _others(cpu.iloc[0].to_dict(), keys)
        levels = sorted(set(cpu["concurrency"]) & set(wall["concurrency"]))
        if len(levels) < 2:
            continue
        lo, hi = levels[0], levels[-1]
        c = cpu.set_index("concurrency")
        w = wall.set_index("concurrency")
        bounds = [c.loc[lo, "ci_low"], c.loc[lo, "ci_high"], c.loc[hi, "ci_low"], c.loc[hi, "ci_high"]]
        overlap = c.loc[hi, "ci_low"] <= c.loc[lo, "ci_high"] and c.loc[lo, "ci_low"] <= c.loc[hi, "ci_high"]
        verdict = ("no interval: cannot tell" if not np.isfinite(np.asarray(bounds, dtype=float)).all()
                   else "intervals overlap: steady" if overlap else "intervals apart: it moved")
        lines.append(
            f"- **{runtime}**{' (' + other + ')' if other else ''} vs {c.loc[lo, 'baseline']}: CPU {interval_text(c.loc[lo, 'ratio'], c.loc[lo, 'ci_low'], c.loc[lo, 'ci_high'])}"  # noqa: E501
            f" at {lo} -> {interval_text(c.loc[hi, 'ratio'], c.loc[hi, 'ci_low'], c.loc[hi, 'ci_high'])} at {hi}"
            f" ({verdict}); wall "
            f"{interval_text(w.loc[lo, 'ratio'], w.loc[lo, 'ci_low'], w.loc[lo, 'ci_high'])} -> "
            f"{interval_text(w.loc[hi, 'ratio'], w.loc[hi, 'ci_low'], w.loc[hi, 'ci_high'])}")
    if not lines:
        return "CPU ratios exist at one concurrency level only: nothing to compare across levels."
    return "Computed from the data (geometric mean over modules of the ratio of medians, 95% interval):\n\n" + \
        "\n".join(lines)


def cost_table(terms: pd.DataFrame) -> pd.DataFrame:
    """The cost model's terms per runtime, concurrency and metric: base ms, us per file, ms per MB, R^2."""
    if terms is None or terms.empty:
        return pd.DataFrame()
    keys = [c for c in terms.columns if c not in ("term", "estimate", "ci_low", "ci_high", "ci_method", "n_modules",
                                                   "n_batches", "r2", "per", "oversubscribed")]
    rows = []
    for key, cell in terms.groupby(keys, sort=True):
        t = cell.set_index("term")
        scale = {"base_ms": (1.0, "base ms"), "per_file_ms": (1000.0, f"us per {cell['per'].iloc[0]}"),
                 "per_mb_ms": (1.0, "ms per MB")}
        row = dict(zip(keys, key if isinstance(key, tuple) else (key,), strict=True))
        for term, (factor, label) in scale.items():
            r = t.loc[term]
            row["us per file" if term == "per_file_ms" else label] = _ms_text(
                factor * r["estimate"], factor * r["ci_low"], factor * r["ci_high"])
        row["R^2"] = round(float(t["r2"].iloc[0]), 3)
        row["modules"] = int(t["n_modules"].iloc[0])
        rows.append(row)
    return pd.DataFrame(rows)


def lomo_table(lomo: pd.DataFrame) -> pd.DataFrame:
    """Leave-one-module-out errors summarised per runtime, concurrency and metric: median and worst |error|."""
    if lomo is None or lomo.empty:
        return pd.DataFrame()
    keys = [c for c in ("runtime", "concurrency", "metric") if c in lomo.columns]
    g = lomo.assign(abs_rel=lomo["rel_error"].abs(), abs_ms=lomo["error_ms"].abs()).groupby(keys, sort=True)
    out = pd.DataFrame({"modules": g.size(), "median |error| %": (100 * g["abs_rel"].median()).round(1),
                        "median |error| ms": g["abs_ms"].median().round(1),
                        "worst module": g.apply(lambda d: d.loc[d["abs_rel"].idxmax(), "module"],
                                                include_groups=False),
                        "worst |error| %": (100 * g["abs_rel"].max()).round(1)})
    return out.reset_index()


def plot_lomo(lomo: pd.DataFrame, colors: Mapping[str, str] | None = None) -> Figure:
    """Each held-out module: observed median against the prediction of the model fitted without it."""
    if lomo is None or lomo.empty:
        return _empty("no cost model: too few modules with features in these results")
    metrics = sorted(lomo["metric"].unique()) if "metric" in lomo.columns else ["load_ms"]
    fig, axes = _grid(len(metrics), width=4.8, height=4.4, ncols_max=2)
    colours = _colours_for(lomo["runtime"], colors)
    markers = {c: m for c, m in zip(sorted(lomo["concurrency"].unique()), "os^Dv", strict=False)}
    for ax, metric in zip(axes, metrics, strict=False):
        rows = lomo[lomo["metric"] == metric] if "metric" in lomo.columns else lomo
        for r in rows.itertuples():
            ax.scatter(max(r.observed_ms, 1e-3), max(r.predicted_ms, 1e-3), color=colours[r.runtime],
                       marker=markers[r.concurrency], s=22)
        top = float(np.nanmax(rows[["observed_ms", "predicted_ms"]].to_numpy())) * 1.3
        ax.plot([0.1, top], [0.1, top], color="grey", lw=0.8)
        ax.set_xscale("log")
        ax.set_yscale("log")
        _plain_log(ax.xaxis)
        _plain_log(ax.yaxis)
        ax.set_xlabel(f"observed median {metric}")
        ax.set_ylabel("predicted without that module")
        ax.set_title(f"leave-one-module-out, {metric}")
    handles = [Line2D([0], [0], marker="o", lw=0, color=c, label=r) for r, c in colours.items()]
    handles += [Line2D([0], [0], marker=m, lw=0, color="black", label=f"c={c}") for c, m in markers.items()]
    fig.legend(handles=handles, loc="outside right center", fontsize=7)
    return fig


def cost_reading(models: Mapping[str, CostModel], lomo: pd.DataFrame, notes: Sequence[str] = ()) -> str:
    """What each runtime adds per file and per MB (lowest concurrency), and how well held-out modules are predicted."""
    if not models:
        why = next((n for n in notes if n.startswith("cost model")), "no module features in these results")
        return f"**No cost model:** {why}."
    lines = []
    for metric, model in models.items():
        level = int(model.terms["concurrency"].min())
        lines += [f"- {line}" for line in per_file_readings(model, level)]
        held = lomo[(lomo["metric"] == metric) & (lomo["concurrency"] == level)] if not lomo.empty else lomo
        if len(held):
            errors, worst = held["error_ms"].abs(), held.loc[held["error_ms"].abs().idxmax()]
            lines.append(f"  - {metric}: held-out modules predicted within {errors.median():.1f} ms (median "
                         f"{100 * held['rel_error'].abs().median():.0f}% of their own time); worst "
                         f"{worst['module']} at {worst['runtime']}, off by {worst['error_ms']:+.1f} ms")
    source = next(iter(models.values())).features
    how = ", ".join(sorted(set(source["files_source"]))) if len(source) else "?"
    return (f"Per file = per file the load opened ({how}). Computed from the data, 95% cluster-bootstrap "
            "intervals:\n\n" + "\n".join(lines))


def share_table(share: pd.DataFrame) -> pd.DataFrame:
    """The share of the cold start spent loading, per runtime and concurrency."""
    if share is None or share.empty:
        return pd.DataFrame()
    out = share[["runtime", "concurrency", *_series_keys(share)[1:], "phases", "cold_start_ms"]].copy()
    out["cold_start_ms"] = out["cold_start_ms"].round(1)
    out["load share"] = [f"{100 * r.load_share:.0f}% [{100 * r.ci_low:.0f}, {100 * r.ci_high:.0f}]"
                         if np.isfinite(r.ci_low) else f"{100 * r.load_share:.0f}% (no interval)"
                         for r in share.itertuples()]
    return out.reset_index(drop=True)


def timeline_reading(missing: Sequence[str], share: pd.DataFrame) -> str:
    """What the timeline of these results holds, and what it lacks."""
    parts = []
    if missing:
        parts.append(f"**These results lack** {', '.join(f'`{m}`' for m in missing)}: they were collected before "
                     "the timeline (schema v3 harness), or on an engine whose cgroups are not on the harness's host "
                     "(no `cpu_ms`/`mem_peak_mb`), or by native trials only (no create/teardown). What they have is "
                     "shown; the rest of this notebook says where it is missing.")
    if share is not None and not share.empty:
        keys = _series_keys(share)
        first = share.sort_values(["concurrency", *keys]).groupby(keys, sort=False).first().reset_index()
        parts.append("Share of the cold start spent loading modules (lowest concurrency): " + "; ".join(
            f"{r['runtime']}{' (' + _others(r, keys) + ')' if len(keys) > 1 else ''} {100 * r['load_share']:.0f}% "
            f"of {r['cold_start_ms']:.0f} ms" for r in first.to_dict("records")) + ".")
    return "\n\n".join(parts) or "The timeline is complete in these results."


#: Dependency trees a reader may have: (files opened, MB read).
EXAMPLE_TREES = ((50, 0.5), (300, 3.0), (1000, 10.0), (3000, 30.0))


def penalty_table(models: Mapping[str, CostModel], baseline: str | None,
                  trees: Sequence[tuple[int, float]] = EXAMPLE_TREES) -> pd.DataFrame:
    """The predicted penalty over ``baseline`` of each runtime for a few dependency trees (lowest concurrency).

    ``costmodel.predict_penalty_ms`` gives it for any tree; a prediction outside the files and MB the
    model was fitted on is marked (extrapolated).
    """
    rows = []
    for metric, model in models.items():
        level = int(model.terms["concurrency"].min())
        runtimes = sorted(set(model.terms.loc[model.terms["concurrency"] == level, "runtime"]))
        if baseline not in runtimes:
            continue
        for runtime in runtimes:
            if runtime == baseline:
                continue
            for files, mbytes in trees:
                p = predict_penalty_ms(files, mbytes, runtime, baseline, model, concurrency=level)
                rows.append({"metric": metric, "runtime": runtime, "baseline": baseline, "concurrency": level,
                             "tree": f"{files} files, {mbytes:g} MB",
                             "penalty ms": _ms_text(p.estimate_ms, p.ci_low_ms, p.ci_high_ms)
                             + (" (extrapolated)" if p.extrapolated else "")})
    return pd.DataFrame(rows)
