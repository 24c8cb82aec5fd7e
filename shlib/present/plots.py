"""Figures of one analysis: load times, ratio forest plot, concurrency scaling, distributions.

Every function takes the tables of ``shlib.analysis.ratios`` (or the results frame), returns a matplotlib Figure
built without pyplot (safe on a headless host, no global state; notebooks display it), and uses one
fixed colour per runtime (``runtime_colors``). ``save_figure`` writes PNG and SVG.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable, Mapping
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, NullFormatter

from shlib.analysis.frames import FACTORS
from shlib.results.schema import runtime_kind

# Families get hues: runc blue, crun teal, native grey, gVisor oranges/reds, Kata greens, other purples.
_FAMILY_COLOURS: dict[str, list[str]] = {
    "native": ["#4d4d4d"],
    "runc": ["#1f77b4", "#6baed6"],
    "crun": ["#17becf", "#0e7c86"],
    "gvisor": ["#d62728", "#ff7f0e", "#8c2d04", "#fdae6b", "#e7298a", "#a50f15"],
    "kata": ["#2ca02c", "#74c476", "#00441b"],
    "other": ["#9467bd", "#8c564b", "#bcbd22", "#e377c2"],
}
_FAMILY_ORDER = ("native", "runc", "crun", "gvisor", "kata", "other")
_MARKERS = ("o", "s", "^", "D", "v", "P", "X")


def runtime_colors(runtimes: Iterable[str], kinds: Mapping[str, str] | None = None) -> dict[str, str]:
    """A colour per runtime name: fixed by family, variants of a family in name order.

    runc, crun and native always get the same colour; gVisor variants take reds/oranges and Kata
    greens in sorted-name order, so passing the run's full runtime list gives every figure the same map.
    """
    kinds = dict(kinds or {})
    colours: dict[str, str] = {}
    by_family: dict[str, list[str]] = {}
    for name in sorted(set(runtimes)):
        by_family.setdefault(kinds.get(name) or runtime_kind(name), []).append(name)
    for family, names in by_family.items():
        palette = _FAMILY_COLOURS.get(family, _FAMILY_COLOURS["other"])
        for i, name in enumerate(names):
            colours[name] = palette[i % len(palette)] if i < len(palette) else _hash_colour(name)
    return colours


def _hash_colour(name: str) -> str:
    import colorsys

    hue = (zlib.crc32(name.encode()) % 360) / 360
    r, g, b = colorsys.hls_to_rgb(hue, 0.45, 0.6)
    return f"#{int(r * 255):02x}{int(g * 255):02x}{int(b * 255):02x}"


def runtime_order(runtimes: Iterable[str]) -> list[str]:
    """Runtimes in a stable reading order: native, runc, crun, gVisor variants, Kata, others."""
    return sorted(set(runtimes), key=lambda r: (_FAMILY_ORDER.index(runtime_kind(r)), r))


def save_figure(fig: Figure, path: str | Path, formats: Iterable[str] = ("png", "svg"), dpi: int = 150) -> list[Path]:
    """Write ``fig`` as PATH.png and PATH.svg (the suffix of ``path`` is ignored); return the paths."""
    stem = Path(path)
    stem = stem.with_suffix("") if stem.suffix in (".png", ".svg", ".pdf") else stem
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = []
    for fmt in formats:
        out = stem.parent / f"{stem.name}.{fmt}"
        fig.savefig(out, format=fmt, dpi=dpi, bbox_inches="tight")
        paths.append(out)
    return paths


def _colours_for(names: Iterable[str], colors: Mapping[str, str] | None) -> dict[str, str]:
    names = list(names)
    found = dict(colors or {})
    missing = [n for n in names if n not in found]
    if missing:
        found.update(runtime_colors(missing))
    return found


def _grid(n_panels: int, width: float = 4.2, height: float = 3.6, ncols_max: int = 4) -> tuple[Figure, np.ndarray]:
    ncols = max(1, min(ncols_max, n_panels))
    nrows = max(1, int(np.ceil(n_panels / ncols)))
    fig = Figure(figsize=(width * ncols, height * nrows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False).ravel())
    for ax in axes[n_panels:]:
        ax.set_visible(False)
    return fig, axes


def _empty(message: str) -> Figure:
    fig = Figure(figsize=(6, 2.5), layout="constrained")
    ax = fig.subplots()
    ax.axis("off")
    ax.text(0.5, 0.5, message, ha="center", va="center", wrap=True)
    return fig


def _panels(table: pd.DataFrame, extra: Iterable[str] = ()) -> list[tuple[str, pd.DataFrame]]:
    """One panel per module (and per level of any other factor column present)."""
    factors = [c for c in (*FACTORS, *extra) if c in table.columns]
    keys = ["module", *factors]
    out = []
    for key, rows in table.groupby(keys, sort=True, observed=True):
        key = key if isinstance(key, tuple) else (key,)
        title = ", ".join([str(key[0]), *(f"{f}={v}" for f, v in zip(factors, key[1:], strict=True))])
        out.append((title, rows))
    return out


def plot_load_times(summary: pd.DataFrame, colors: Mapping[str, str] | None = None, log: bool = True) -> Figure:
    """Median load time per module, runtime and concurrency with its 95% interval (the study's Figure 3)."""
    if len(summary) == 0 or summary["median_ms"].notna().sum() == 0:
        return _empty("no ok trials: nothing to plot")
    runtimes = runtime_order(summary["runtime"].astype(str))
    colours = _colours_for(runtimes, colors)
    panels = _panels(summary)
    fig, axes = _grid(len(panels))
    for ax, (title, rows) in zip(axes, panels, strict=False):
        levels = sorted(rows["concurrency"].unique())
        width = 0.8 / max(1, len(runtimes))
        for i, runtime in enumerate(runtimes):
            r = rows[rows["runtime"].astype(str) == runtime].set_index("concurrency").reindex(levels)
            x = np.arange(len(levels)) + (i - (len(runtimes) - 1) / 2) * width
            y = r["median_ms"].to_numpy(float)
            lo = np.clip(y - r["median_ci_low_ms"].to_numpy(float), 0, None)
            hi = np.clip(r["median_ci_high_ms"].to_numpy(float) - y, 0, None)
            # Points, not bars: a bar's length means nothing on a log axis.
            ax.errorbar(x, y, yerr=[np.nan_to_num(lo), np.nan_to_num(hi)], fmt=_MARKERS[0], color=colours[runtime],
                        ecolor=colours[runtime], elinewidth=1.5, capsize=3, ms=6, label=runtime)
        ax.set_xticks(np.arange(len(levels)), [str(c) for c in levels])
        ax.set_xlabel("containers loading at once (concurrency)")
        ax.set_ylabel("median load time (ms)")
        if log:
            ax.set_yscale("log")
            _plain_log(ax.yaxis)
        ax.set_title(title)
        ax.grid(axis="y", alpha=0.3)
    handles = [Line2D([], [], color=colours[r], marker=_MARKERS[0], label=r) for r in runtimes]
    fig.legend(handles=handles, loc="outside right upper", title="runtime", fontsize="small")
    fig.suptitle("Module load time (points: median; whiskers: 95% batch-aware interval of the median; none: too few "
                 "batches)")
    return fig


def plot_ratios(ratios: pd.DataFrame, replication: pd.DataFrame | None = None,
                colors: Mapping[str, str] | None = None, statistic: str = "median") -> Figure:
    """Forest plot: ratio to the baseline per runtime, module and concurrency, 95% intervals, log axis.

    The study's claims are marked where their denominator is the baseline kind of a panel
    (one panel per baseline).
    """
    rows = ratios[(ratios["statistic"] == statistic)] if len(ratios) else ratios
    rows = rows[np.isfinite(rows["ratio"].astype(float))] if len(rows) else rows
    if len(rows) == 0:
        return _empty("no ratios: one runtime only, or no ok trials in common cells")
    baselines = sorted(rows["baseline"].astype(str).unique())
    colours = _colours_for(rows["runtime"].astype(str).unique(), colors)
    heights = [rows[rows["baseline"] == b].shape[0] for b in baselines]
    fig = Figure(figsize=(8, 1.2 + 0.22 * sum(heights) + 0.8 * len(baselines)), layout="constrained")
    axes = np.atleast_1d(fig.subplots(len(baselines), 1, squeeze=False, height_ratios=heights).ravel())
    for ax, baseline in zip(axes, baselines, strict=True):
        part = rows[rows["baseline"] == baseline].copy()
        part["_order"] = [runtime_order(part["runtime"].astype(str)).index(r) for r in part["runtime"].astype(str)]
        part = part.sort_values(["_order", "module", "concurrency"], ascending=[True, True, True])
        factors = [c for c in FACTORS if c in part.columns]
        labels = [f"{r.runtime} | {r.module} | c={r.concurrency}" + "".join(f" | {getattr(r, f)}" for f in factors)
                  for r in part.itertuples()]
        y = np.arange(len(part))[::-1]
        for yi, r in zip(y, part.itertuples(), strict=True):
            colour = colours[str(r.runtime)]
            if np.isfinite(r.ci_low):
                ax.plot([r.ci_low, r.ci_high], [yi, yi], color=colour, lw=2)
            ax.plot([r.ratio], [yi], "o", color=colour, ms=5)
        ax.axvline(1.0, color="black", lw=0.8)
        ax.set_xscale("log")
        _plain_log(ax.xaxis)
        ax.set_yticks(y, labels, fontsize="small")
        ax.set_xlabel(f"ratio of {'medians' if statistic == 'median' else 'geometric means'} of load time "
                      f"to {baseline} (x, log scale)")
        ax.grid(axis="x", which="both", alpha=0.3)
        base_kind = str(part["baseline_kind"].iloc[0]) if "baseline_kind" in part.columns else ""
        if replication is not None and len(replication):
            claims = replication[replication["denominator_kind"] == base_kind].drop_duplicates("claim_id")
            for claim in claims.itertuples():
                ax.axvspan(claim.claimed_low, claim.claimed_high, color="grey", alpha=0.25)
                ax.axvline(claim.claimed_value, color="grey", ls="--", lw=1)
                ax.annotate(f"Kim & Yu 2020: {claim.statistic} {claim.claimed_value:g}x", (claim.claimed_value, 1.0),
                            xycoords=("data", "axes fraction"), rotation=90, va="top", ha="right",
                            fontsize="x-small", color="dimgrey")
                lo, hi = ax.get_xlim()
                ax.set_xlim(min(lo, claim.claimed_low / 1.3), max(hi, claim.claimed_high * 1.3))
        ax.set_title(f"Load time relative to {baseline} (95% cluster-bootstrap intervals)")
    return fig


#: Marker per language in the figure that compares them.
LANGUAGE_MARKERS = {"node": "o", "python": "s"}


def plot_language_penalty(ratio_summary: pd.DataFrame, baseline: str | None, colors: Mapping[str, str] | None = None,
                          statistic: str = "median") -> Figure:
    """The sandbox penalty per language: each runtime's geometric-mean ratio to ``baseline`` over the modules of
    each language (Node: npm modules, Python: packages), 95% intervals, one panel per concurrency level."""
    if baseline is None or len(ratio_summary) == 0:
        return _empty("no ratios: one runtime only, or no ok trials in common cells")
    if "language" not in ratio_summary.columns:
        return _empty("one language only in this run: nothing to compare (measure npm and py: modules together "
                      "to compare the sandbox penalty of Node.js and Python)")
    rows = ratio_summary[(ratio_summary["baseline"] == baseline) & (ratio_summary["statistic"] == statistic)]
    rows = rows[np.isfinite(rows["gmean_ratio"].astype(float))]
    if len(rows) == 0:
        return _empty(f"no ratio to {baseline} in either language")
    runtimes = runtime_order(rows["runtime"].astype(str))
    colours = _colours_for(runtimes, colors)
    languages = sorted(rows["language"].astype(str).unique())
    levels = sorted(rows["concurrency"].astype(int).unique())
    fig, axes = _grid(len(levels), width=4.6)
    width = 0.7 / max(1, len(languages))
    for ax, level in zip(axes, levels, strict=False):
        at = rows[rows["concurrency"].astype(int) == level]
        for j, language in enumerate(languages):
            for i, runtime in enumerate(runtimes):
                r = at[(at["runtime"].astype(str) == runtime) & (at["language"].astype(str) == language)]
                if len(r) == 0:
                    continue
                r = r.iloc[0]
                x = i + (j - (len(languages) - 1) / 2) * width
                lo = max(0.0, float(r["gmean_ratio"]) - float(r["ci_low"])) if np.isfinite(r["ci_low"]) else 0.0
                hi = max(0.0, float(r["ci_high"]) - float(r["gmean_ratio"])) if np.isfinite(r["ci_high"]) else 0.0
                ax.errorbar([x], [r["gmean_ratio"]], yerr=[[lo], [hi]], fmt=LANGUAGE_MARKERS.get(language, "D"),
                            color=colours[runtime], capsize=3, ms=7, mfc="white" if language == "python" else None)
        ax.axhline(1.0, color="black", lw=0.8)
        ax.set_yscale("log")
        _plain_log(ax.yaxis)
        ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if f"{v:g}"[0] in "1235" else ""))
        ax.set_xticks(np.arange(len(runtimes)), runtimes, rotation=30, ha="right", fontsize="small")
        ax.set_ylabel(f"load time / {baseline} (x, log)")
        ax.set_title(f"{level} container{'s' if level != 1 else ''} at once")
        ax.grid(axis="y", which="both", alpha=0.3)
    handles = [Line2D([], [], color="black", ls="", marker=LANGUAGE_MARKERS.get(lang, "D"),
                      mfc="white" if lang == "python" else None, label=lang) for lang in languages]
    fig.legend(handles=handles, loc="outside right upper", title="language", fontsize="small")
    fig.suptitle(f"Sandbox penalty by language\n(geometric mean over each language's modules of the ratio of "
                 f"{'medians' if statistic == 'median' else 'geometric means'}\nto {baseline}, 95% intervals)",
                 fontsize="medium")
    return fig


def plot_scaling(summary: pd.DataFrame, ratios: pd.DataFrame | None = None,
                 colors: Mapping[str, str] | None = None, statistic: str = "median") -> Figure:
    """Load time (top) and ratio to the baseline (bottom) against concurrency, one column per module."""
    if len(summary) == 0 or summary["median_ms"].notna().sum() == 0:
        return _empty("no ok trials: nothing to plot")
    runtimes = runtime_order(summary["runtime"].astype(str))
    colours = _colours_for(runtimes, colors)
    panels = _panels(summary)
    ratio_rows = None
    if ratios is not None and len(ratios):
        ratio_rows = ratios[(ratios["statistic"] == statistic)]
        main = ratio_rows["baseline"].mode().iloc[0] if len(ratio_rows) else None
        ratio_rows = ratio_rows[ratio_rows["baseline"] == main]
    nrows = 2 if ratio_rows is not None and len(ratio_rows) else 1
    fig = Figure(figsize=(4.2 * len(panels), 3.4 * nrows), layout="constrained")
    axes = fig.subplots(nrows, len(panels), squeeze=False)
    for col, (title, rows) in enumerate(panels):
        ax = axes[0, col]
        for runtime in runtimes:
            r = rows[rows["runtime"].astype(str) == runtime].sort_values("concurrency")
            if r["median_ms"].notna().sum() == 0:
                continue
            x = r["concurrency"].to_numpy(float)
            y = r["median_ms"].to_numpy(float)
            ax.errorbar(x, y, yerr=[np.nan_to_num(np.clip(y - r["median_ci_low_ms"], 0, None)),
                                    np.nan_to_num(np.clip(r["median_ci_high_ms"] - y, 0, None))],
                        color=colours[runtime], marker="o", capsize=2, label=runtime)
        _concurrency_axis(ax, rows["concurrency"])
        ax.set_yscale("log")
        _plain_log(ax.yaxis)
        ax.set_xlabel("containers loading at once")
        ax.set_ylabel("median load time (ms)")
        ax.set_title(title)
        ax.grid(alpha=0.3, which="both")
        if nrows == 2:
            ax = axes[1, col]
            module = rows["module"].iloc[0]
            part = ratio_rows[ratio_rows["module"] == module]
            for f in FACTORS:
                if f in part.columns and f in rows.columns:
                    part = part[part[f] == rows[f].iloc[0]]
            for runtime in runtime_order(part["runtime"].astype(str)):
                r = part[part["runtime"] == runtime].sort_values("concurrency")
                r = r[np.isfinite(r["ratio"].astype(float))]
                if len(r) == 0:
                    continue
                y = r["ratio"].to_numpy(float)
                ax.errorbar(r["concurrency"].to_numpy(float), y,
                            yerr=[np.nan_to_num(np.clip(y - r["ci_low"], 0, None)),
                                  np.nan_to_num(np.clip(r["ci_high"] - y, 0, None))],
                            color=colours[runtime], marker="s", capsize=2, label=runtime)
            ax.axhline(1.0, color="black", lw=0.8)
            _concurrency_axis(ax, rows["concurrency"])
            ax.set_yscale("log")
            _plain_log(ax.yaxis)
            ax.set_xlabel("containers loading at once")
            ax.set_ylabel(f"ratio to {part['baseline'].iloc[0] if len(part) else 'baseline'} (x)")
            ax.grid(alpha=0.3, which="both")
    handles = [Line2D([], [], color=colours[r], marker="o", label=r) for r in runtimes]
    fig.legend(handles=handles, loc="outside right upper", title="runtime", fontsize="small")
    fig.suptitle("Scaling with concurrency (95% intervals)")
    return fig


def _plain_log(axis: object) -> None:
    """Log-scale ticks as plain numbers (50, 100, 200), no minor labels."""
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def _concurrency_axis(ax: object, levels: pd.Series) -> None:
    values = sorted({int(v) for v in levels})
    ax.set_xscale("log", base=2)
    ax.set_xticks(values, [str(v) for v in values])
    ax.minorticks_off()


def plot_distributions(df: pd.DataFrame, colors: Mapping[str, str] | None = None) -> Figure:
    """ECDF of load_ms per runtime, one panel per module; line style per concurrency level.

    Levels of other factors (mount, cache, ...) are pooled within a curve.
    """
    ok = df[(df["status"].astype(str) == "ok") & np.isfinite(df["load_ms"].astype(float))] if len(df) else df
    if len(ok) == 0:
        return _empty("no ok trials: nothing to plot")
    runtimes = runtime_order(ok["runtime"].astype(str))
    colours = _colours_for(runtimes, colors)
    levels = sorted(ok["concurrency"].astype(int).unique())
    styles = ["-", "--", ":", "-."]
    modules = sorted(ok["module"].astype(str).unique())
    fig, axes = _grid(len(modules))
    for ax, module in zip(axes, modules, strict=False):
        rows = ok[ok["module"].astype(str) == module]
        for runtime in runtimes:
            for i, level in enumerate(levels):
                x = np.sort(rows.loc[(rows["runtime"].astype(str) == runtime)
                                     & (rows["concurrency"].astype(int) == level), "load_ms"].to_numpy(float))
                if len(x) == 0:
                    continue
                ax.step(x, np.arange(1, len(x) + 1) / len(x), where="post", color=colours[runtime],
                        ls=styles[i % len(styles)], lw=1.2)
        ax.set_xscale("log")
        _plain_log(ax.xaxis)
        ax.set_xlabel("load time (ms, log scale)")
        ax.set_ylabel("fraction of trials <= x")
        ax.set_title(module)
        ax.grid(alpha=0.3, which="both")
    handles = [Line2D([], [], color=colours[r], label=r) for r in runtimes]
    handles += [Line2D([], [], color="black", ls=styles[i % len(styles)], label=f"concurrency {c}")
                for i, c in enumerate(levels)]
    fig.legend(handles=handles, loc="outside right upper", fontsize="small")
    fig.suptitle("Distribution of module load times (ECDF, ok trials)")
    return fig


def save_named(fig: Figure, figures_dir: str | Path | None, name: str) -> list[Path]:
    """Save ``fig`` as PNG and SVG under ``figures_dir`` (nothing when it is None); the files written."""
    if figures_dir is None or str(figures_dir) == "":
        return []
    return save_figure(fig, Path(figures_dir) / name)


def plot_engines(engines: pd.DataFrame) -> Figure:
    """Each runtime's ratio to the baseline on each engine (engine x runtime), 95% intervals, log axis.

    One panel per concurrency level; within a runtime's row, one marker per engine (ratios are
    computed within each engine, so the engines' rows compare what each sandbox costs on its machine).
    """
    rows = engines[np.isfinite(engines["gmean_ratio"].astype(float))] if len(engines) else engines
    if len(rows) == 0:
        return _empty("no ratios to compare across engines: one runtime only, or no ok trials in common cells")
    levels = sorted(int(c) for c in rows["concurrency"].unique())
    names = sorted(rows["engine"].astype(str).unique())
    palette = ["#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf"]
    colour = {e: palette[i % len(palette)] for i, e in enumerate(names)}
    runtimes = runtime_order(rows["runtime"].astype(str).unique())
    fig, axes = _grid(len(levels), width=5.0, height=1.4 + 0.45 * len(runtimes))
    step = 0.6 / max(len(names), 1)
    for ax, level in zip(axes.ravel(), levels, strict=False):
        part = rows[rows["concurrency"].astype(int) == level]
        for i, runtime in enumerate(runtimes):
            for j, engine in enumerate(names):
                row = part[(part["runtime"].astype(str) == runtime) & (part["engine"].astype(str) == engine)]
                if len(row) == 0:
                    continue
                r = row.iloc[0]
                y = len(runtimes) - 1 - i + 0.3 - j * step
                if np.isfinite(r["ci_low"]) and np.isfinite(r["ci_high"]):
                    ax.plot([r["ci_low"], r["ci_high"]], [y, y], color=colour[engine], lw=2)
                ax.plot([r["gmean_ratio"]], [y], "o", color=colour[engine], ms=5,
                        label=engine if i == 0 or engine not in ax.get_legend_handles_labels()[1] else None)
        ax.axvline(1.0, color="black", lw=0.8)
        ax.set_xscale("log")
        _plain_log(ax.xaxis)
        ax.set_yticks(np.arange(len(runtimes))[::-1], runtimes, fontsize="small")
        baseline = str(part["baseline"].iloc[0]) if len(part) else ""
        ax.set_xlabel(f"ratio to {baseline} within each engine (x, log scale)")
        ax.set_title(f"{level} container{'s' if level != 1 else ''} at once", fontsize="medium")
        ax.grid(axis="x", which="both", alpha=0.3)
        handles, labels = ax.get_legend_handles_labels()
        unique = dict(zip(labels, handles, strict=True))
        ax.legend(unique.values(), unique.keys(), title="engine", fontsize="x-small", loc="best")
    for ax in axes.ravel()[len(levels):]:
        ax.set_visible(False)
    fig.suptitle("Each runtime's cost relative to the baseline, engine by engine (95% intervals)")
    return fig
