"""Runtime variants (gVisor builds, platforms, switches) and the contrasts between them.

The variants are read from a run's metadata (what the catalog recorded): each gVisor variant's flags are
parsed into columns (gvisor_build, platform, directfs, file_access_mounts, overlay2, dcache) with the
build's defaults filled in where a flag is not given. The contrasts are ratios between variants that
differ in exactly one of them: a switch against its build's default, a platform, or a build against
another (defaults against defaults: the generation with the defaults it brought).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from shlib.analysis.ratios import ratios_against, summary_across_modules
from shlib.results.metadata import RunMetadata
from shlib.results.schema import runtime_kind

#: runsc flags that describe how a gVisor sandbox reaches files (the study's bottleneck).
FILE_ACCESS_FLAGS = ("--file-access", "--file-access-mounts", "--overlay2", "--directfs", "--overlay", "--dcache")

#: The switches parsed into columns: column -> runsc flag.
SWITCHES = {"directfs": "--directfs", "file_access_mounts": "--file-access-mounts", "overlay2": "--overlay2",
            "dcache": "--dcache"}
#: The factors a contrast may isolate, in reading order.
FACTORS = ("gvisor_build", "platform", "directfs", "file_access_mounts", "overlay2", "dcache")
#: Name suffixes of the switch variants shlib registers (``runsc-20240729-systrap-nodirectfs``), for runs
#: whose metadata lacks the flags (simulated data).
_NAME_SWITCHES = {"nodirectfs": "--directfs=false", "exclusive": "--file-access-mounts=exclusive",
                  "overlaynone": "--overlay2=none"}


def build_defaults(build: str) -> dict[str, str]:
    """A gVisor build's defaults of the switches (from gVisor's release history and ``runsc flags`` here).

    directfs exists (on) from 2023-05, the rootfs overlay (root:self) is the default from 2023-03, systrap
    from mid-2023; file access to mounts is shared and the dentry cache per mount (-1) throughout. A switch
    the build does not have is '' (absent).
    """
    date = int(build) if build.isdigit() else 0
    return {"platform": "systrap" if date >= 20230601 else "ptrace",
            "directfs": "true" if date >= 20230501 else "",
            "file_access_mounts": "shared",
            "overlay2": "root:self" if date >= 20230301 else "none",
            "dcache": "-1"}


def _name_args(name: str) -> list[str]:
    args = []
    for part in name.split("-"):
        if part in _NAME_SWITCHES:
            args.append(_NAME_SWITCHES[part])
        elif re.fullmatch(r"dcache\d+", part):
            args.append(f"--dcache={part[6:]}")
    return args


def kata_settings(name: str, record: Mapping[str, Any]) -> dict[str, str]:
    """A Kata variant's shared_fs and virtio_fs_cache, from the configuration file shlib generated for it
    (``configuration-virtiofs-never.toml``, ``configuration-9p.toml``) or its runtime name; '' when unknown."""
    config = str((record.get("options") or {}).get("ConfigPath") or "")
    args = list(record.get("args") or [])
    if "--kata-config" in args[:-1]:
        config = args[args.index("--kata-config") + 1]
    for text in (Path(config).stem.removeprefix("configuration-"), name.removeprefix("kata-")):
        if text == "9p":
            return {"shared_fs": "virtio-9p", "virtio_fs_cache": ""}
        match = re.fullmatch(r"virtiofs-(never|metadata|auto|always)", text)
        if match:
            return {"shared_fs": "virtio-fs", "virtio_fs_cache": match.group(1)}
    return {"shared_fs": "", "virtio_fs_cache": ""}


def switch_values(args: Sequence[str], build: str) -> dict[str, str]:
    """The switches of a gVisor variant: its flags where given, the build's defaults elsewhere."""
    values = build_defaults(build)
    for arg in args:
        flag, _, value = arg.partition("=")
        for column, name in SWITCHES.items():
            if flag == name:
                values[column] = value or "true"
    return values


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
    """Per runtime: family, build (date in its version), platform, file-access flags, other flags, trials,
    and the switches as columns (gvisor_build, directfs, file_access_mounts, overlay2, dcache; the build's
    defaults where a flag is not given, '' for a switch the build lacks and for other runtimes); for Kata,
    shared_fs and virtio_fs_cache of the variant's configuration ('' when unknown).

    Read from the run's metadata (what the catalog recorded); a runtime missing there (simulated data)
    is described from its name.
    """
    known = {n: r.model_dump() for n, r in metadata.runtimes.items()} if metadata is not None else {}
    return describe_variants(known, runtimes, frame)


def describe_variants(known: Mapping[str, Mapping[str, Any]], runtimes: Iterable[str],
                      frame: pd.DataFrame | None = None) -> pd.DataFrame:
    """``runtime_variants`` from catalog records (name -> kind, args, version, platform), e.g. a doctor report's."""
    rows = []
    for name in runtimes:
        rt = known.get(name) or {}
        kind = rt.get("kind") or runtime_kind(name)
        args = list(rt.get("args") or [])
        platform = rt.get("platform") or next((a.split("=", 1)[1] for a in args if a.startswith("--platform=")), "")
        if not platform and kind == "gvisor":
            platform = next((p for p in ("systrap", "ptrace", "kvm") if p in name.split("-")), "default")
        if kind == "gvisor" and not rt:
            args = [*args, *_name_args(name)]
        access = file_access(args, kind)
        other = [a for a in args if not a.startswith("--platform=") and a.split("=", 1)[0] not in FILE_ACCESS_FLAGS]
        build = _build_date(rt.get("version"), name) if kind == "gvisor" else ""
        row = {"runtime": name, "kind": kind, "build": build, "version": rt.get("version") or "",
               "platform": platform, "file_access": access, "other_flags": " ".join(other)}
        switches = switch_values(args, build) if kind == "gvisor" else dict.fromkeys(SWITCHES, "")
        if kind == "gvisor" and platform == "default":
            platform = row["platform"] = build_defaults(build)["platform"]
        row.update(gvisor_build=build, **{c: switches[c] for c in SWITCHES})
        row.update(kata_settings(name, rt) if kind == "kata" else {"shared_fs": "", "virtio_fs_cache": ""})
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


def _contrast_factor(g: pd.DataFrame, a: str, b: str) -> str | None:
    """The one factor variant ``a`` differs in from ``b``, when ``a`` is the numerator of that contrast.

    Same build: exactly one of platform and the switches differs, and ``b`` has the build's default of
    that switch (a platform: the later name, systrap over ptrace, as before). Different builds: same
    platform, and each variant has its build's defaults for every switch (the generation as shipped).
    """
    if g.at[a, "gvisor_build"] != g.at[b, "gvisor_build"]:
        if g.at[a, "platform"] != g.at[b, "platform"] or str(g.at[a, "gvisor_build"]) < str(g.at[b, "gvisor_build"]):
            return None
        for x in (a, b):
            defaults = build_defaults(str(g.at[x, "gvisor_build"]))
            if any(str(g.at[x, c]) != defaults[c] for c in SWITCHES):
                return None
        return "gvisor_build"
    differ = [c for c in FACTORS[1:] if str(g.at[a, c]) != str(g.at[b, c])]
    if len(differ) != 1:
        return None
    factor = differ[0]
    if factor == "platform":
        return factor if str(g.at[a, factor]) > str(g.at[b, factor]) else None
    default = build_defaults(str(g.at[b, "gvisor_build"]))[factor]
    return factor if str(g.at[b, factor]) == default else None


def gvisor_contrasts(variants: pd.DataFrame, ratio_summary: pd.DataFrame, statistic: str = "median"
                     ) -> pd.DataFrame:
    """Pairs of gVisor variants that differ in exactly one factor: the effect of that one, with its interval.

    Factors: the build (defaults against defaults), the platform, and each switch (directfs,
    file_access_mounts, overlay2, dcache) against its build's default. ``ratio_summary`` must hold ratios
    with each gVisor variant as a baseline (``shlib.ratios_against`` then ``summary_across_modules``).
    The later build, systrap, and the non-default switch value are the numerators; ``statistic`` picks
    ratios of medians (default) or of geometric means.
    """
    columns = ["factor", "from_value", "to_value", "runtime", "compared_with", "gvisor_build", "concurrency",
               "statistic", "ratio", "ci_low", "ci_high", "n_modules", "note"]
    if not len(variants) or "gvisor_build" not in variants:
        return pd.DataFrame(columns=columns)
    g = variants[variants["kind"] == "gvisor"].set_index("runtime")
    rows = []
    names = list(g.index) if len(ratio_summary) else []
    for a in names:
        for b in names:
            factor = None if a == b else _contrast_factor(g, a, b)
            if factor is None:
                continue
            part = ratio_summary[(ratio_summary["runtime"] == a) & (ratio_summary["baseline"] == b)
                                 & (ratio_summary["statistic"] == statistic)]
            for r in part.itertuples():
                rows.append({"factor": factor, "from_value": str(g.at[b, factor]), "to_value": str(g.at[a, factor]),
                             "runtime": a, "compared_with": b,
                             "gvisor_build": "" if factor == "gvisor_build" else str(g.at[a, "gvisor_build"]),
                             "concurrency": r.concurrency, "statistic": r.statistic, "ratio": r.gmean_ratio,
                             "ci_low": r.ci_low, "ci_high": r.ci_high, "n_modules": r.n_modules, "note": r.note})
    order = {f: i for i, f in enumerate(FACTORS)}
    out = pd.DataFrame(rows, columns=columns)
    if len(out):
        out = out.sort_values(["factor", "gvisor_build", "to_value", "concurrency"],
                              key=lambda c: c.map(order) if c.name == "factor" else c).reset_index(drop=True)
    return out


def gvisor_comparison(frame: pd.DataFrame, variants: pd.DataFrame, seed: int, n_resamples: int
                      ) -> dict[str, pd.DataFrame]:
    """Ratios among the gVisor variants of a run: every variant against every other, per cell and across modules.

    Returns ``ratios`` (per cell), ``summary`` (geometric mean over modules), ``contrasts`` (pairs that
    differ in one factor: build, platform or a switch) and ``contrast_cells`` (the per-cell rows behind them).
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
