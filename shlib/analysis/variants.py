"""Runtime variants (gVisor builds, platforms, file-access flags) and the contrasts between them.

The variants are read from a run's metadata (what the catalog recorded); the contrasts are ratios
between variants that differ in exactly one of build, platform, file access.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import pandas as pd

from shlib.analysis.ratios import ratios_against, summary_across_modules
from shlib.results.metadata import RunMetadata
from shlib.results.schema import runtime_kind

#: runsc flags that describe how a gVisor sandbox reaches files (the study's bottleneck).
FILE_ACCESS_FLAGS = ("--file-access", "--file-access-mounts", "--overlay2", "--directfs", "--overlay")


def file_access(args: Sequence[str], kind: str | None = None) -> str:
    """The file-access flags of a runtime's arguments ('default' for gVisor without any, '' otherwise)."""
    flags = [a for a in args if a.split("=", 1)[0] in FILE_ACCESS_FLAGS]
    if flags:
        return " ".join(flags)
    return "default" if kind == "gvisor" else ""


def _build_date(version: str | None, name: str) -> str:
    match = re.search(r"(20\d{6})", version or "") or re.search(r"(20\d{6})", name)
    return match.group(1) if match else ""


def runtime_variants(metadata: RunMetadata | None, runtimes: Iterable[str], frame: pd.DataFrame | None = None
                     ) -> pd.DataFrame:
    """Per runtime: family, build (date in its version), platform, file-access flags, other flags, trials.

    Read from the run's metadata (what the catalog recorded); a runtime missing there (simulated data)
    is described from its name.
    """
    known = {n: r.model_dump() for n, r in metadata.runtimes.items()} if metadata is not None else {}
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

    ``ratio_summary`` must hold ratios with each gVisor variant as a baseline (``shlib.ratios_against``
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
    names = variants.loc[variants["kind"] == "gvisor", "runtime"].astype(str).tolist()
    if len(names) < 2:
        empty = pd.DataFrame(columns=["runtime", "baseline", "concurrency", "statistic", "ratio", "ci_low", "ci_high"])
        return {"ratios": empty, "summary": empty.rename(columns={"ratio": "gmean_ratio"}),
                "contrasts": gvisor_contrasts(variants, pd.DataFrame(columns=["runtime", "baseline"])),
                "contrast_cells": empty}
    rows = frame[frame["runtime"].astype(str).isin(names)]
    table = ratios_against(rows, names, seed=seed, n_resamples=n_resamples)
    table = table[table["runtime"].isin(names)].reset_index(drop=True)
    summary = summary_across_modules(table)
    contrasts = gvisor_contrasts(variants, summary)
    pairs = set(zip(contrasts["runtime"], contrasts["compared_with"], strict=True))
    cells = table[[(r, b) in pairs for r, b in zip(table["runtime"], table["baseline"], strict=True)]]
    return {"ratios": table, "summary": summary, "contrasts": contrasts, "contrast_cells": cells.reset_index(drop=True)}
