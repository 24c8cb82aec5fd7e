"""shlib's performance suite: one command, one table, measured side by side in one run.

    .venv/bin/python -m benchmarks.run [--quick] [--out DIR] [--seed N] [--only SECTION ...]

Sections (issue 7):
  1 orchestration  cost per trial: shlib vs a shell loop of `docker run` vs a minimal docker-py loop
  2 fidelity       load_ms recorded by shlib vs the same probe started by the shell loop
  3 throughput     trials/s at concurrency 1/4/8/16; run time at R and 2R batches; runner bookkeeping
  4 time to answer adaptive mode vs a fixed design of the same precision; coverage by simulation
  5 analysis       benchmarks/bench_analysis.py: the full analysis of 100,000 rows
  6 start-up       launch to the first container's create event: `shlib run` of a minimal spec vs `docker run`
  7 hold           load_ms with the probe's hold for the cgroup read on and off, interleaved: their ratio

Writes the table to DIR/latest.md and DIR/latest.csv (default benchmarks/results/). The machine is
shared and noisy: the table holds medians and ratios of medians measured in this run, with 95%
bootstrap intervals; --quick (CI) checks that everything runs and produces the table, not speed.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import io
import math
import os
import platform
import re
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import shlib
from benchmarks import bench_analysis
from benchmarks.common import Row

RESULTS = Path(__file__).resolve().parent / "results"
SECTIONS = ("orchestration", "throughput", "adaptive", "analysis", "startup", "hold")
#: Sizes of the full run (about 20 minutes on 2 shared cores) and of --quick (about 2-3 minutes).
FULL = {"rounds": 25, "levels": (1, 4, 8, 16), "batches": 3, "scaling_reps": 8, "scaling_pairs": 3,
        "bookkeeping": 200, "target": 0.30, "cells": 2000, "replicates": 200, "startup_rounds": 15,
        "hold_rounds": 20}
QUICK = {"rounds": 4, "levels": (1, 4, 8, 16), "batches": 1, "scaling_reps": 2, "scaling_pairs": 1,
         "bookkeeping": 30, "target": 0.5, "cells": 300, "replicates": 30, "startup_rounds": 4,
         "hold_rounds": 3}


def analysis_rows(quick: bool) -> list[Row]:
    """Run bench_analysis (owned by the analysis engineer) and read its figure from what it prints."""
    buf = io.StringIO()
    argv = ["--quick"] if quick else ["--repeat", "3"]
    with contextlib.redirect_stdout(buf):
        code = bench_analysis.main(argv)
    text = buf.getvalue()
    match = re.search(r"analysis of ([\d,]+) rows.*?median ([\d.]+) s", text)
    rows_n = int(match.group(1).replace(",", "")) if match else 0
    seconds = float(match.group(2)) if match else math.nan
    goal = f"< {bench_analysis.TARGET_S:.0f} s for 100,000 rows"
    ok = None if quick else (code == 0 and seconds < bench_analysis.TARGET_S)
    return [Row("5 analysis", f"full analysis of {rows_n:,} rows, median of {1 if quick else 3} (s)", "none",
                seconds, n=f"{rows_n:,} rows", goal=goal if not quick else "(quick: 2,000 rows, not judged)",
                verdict="" if ok is None else ("met" if ok else "NOT met"))]


def run_section(name: str, fn: Callable[[], list[Row]], setup: Any, log: Callable[[str], None]) -> list[Row]:
    """Run a section; on an error (the shared engine may be restarted by others) wait for the engine and
    try once more; a second failure becomes a row saying so, and the suite goes on."""
    for attempt in (1, 2):
        try:
            return fn()
        except Exception as exc:  # noqa: BLE001
            log(f"  {name}: attempt {attempt} failed: {type(exc).__name__}: {exc}")
            if setup is not None:
                from benchmarks.common import wait_for_engine

                wait_for_engine(setup.client)
            error = f"{type(exc).__name__}: {exc}"[:200]
    return [Row(name, "section failed twice", "", math.nan, n="", goal="", verdict=f"ERROR {error}")]


def fmt(value: float) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3f}"


def to_markdown(rows: list[Row], header: str) -> str:
    lines = [header, "", "| section | measure | runtime | value | 95% CI | n | goal | verdict |",
             "|---|---|---|---:|---|---|---|---|"]
    for r in rows:
        ci = f"{fmt(r.low)} - {fmt(r.high)}" if not (math.isnan(r.low) or math.isnan(r.high)) else ""
        lines.append(f"| {r.section} | {r.measure} | {r.runtime} | {fmt(r.value)} | {ci} | {r.n} | {r.goal} | "
                     f"{r.verdict} |")
    return "\n".join(lines) + "\n"


def write(rows: list[Row], out_dir: Path, header: str) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    md, csv_path = out_dir / "latest.md", out_dir / "latest.csv"
    md.write_text(to_markdown(rows, header))
    with csv_path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(rows[0].as_dict()) if rows else ["section"])
        writer.writeheader()
        for r in rows:
            writer.writerow(r.as_dict())
    return md, csv_path


def machine() -> str:
    from shlib.collect.host import host_facts

    facts = host_facts()
    return (f"{facts.get('cpu_model')}, {facts.get('cpu_count')} cores, kernel {facts.get('kernel')}, "
            f"load average at start {os.getloadavg()[0]:.1f}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (CI, ~2-3 min): checks it works")
    parser.add_argument("--out", type=Path, default=RESULTS, help="directory for latest.md / latest.csv")
    parser.add_argument("--seed", type=int, default=20240729)
    parser.add_argument("--only", nargs="+", choices=SECTIONS, help="run only these sections")
    args = parser.parse_args(argv)
    size = QUICK if args.quick else FULL
    sections = args.only or list(SECTIONS)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    started = time.perf_counter()
    header_facts = machine()
    rows: list[Row] = []
    setup = None
    if any(s in sections for s in ("orchestration", "throughput", "adaptive", "startup", "hold")):
        from benchmarks.common import make_setup

        setup = make_setup(max(size["levels"]))
    if "orchestration" in sections:
        from benchmarks import bench_orchestration

        log("1-2 orchestration cost and fidelity ...")
        rows += run_section("1 orchestration", lambda: bench_orchestration.run(setup, size["rounds"], args.seed, log),
                            setup, log)
    if "throughput" in sections:
        from benchmarks import bench_throughput

        log("3 throughput ...")
        rows += run_section("3 throughput", lambda: bench_throughput.run(
            setup, size["levels"], size["batches"], size["scaling_reps"], size["scaling_pairs"],
            size["bookkeeping"], args.seed, log), setup, log)
    if "adaptive" in sections:
        from benchmarks import bench_adaptive

        log("4 time to answer ...")
        rows += run_section("4 time to answer", lambda: bench_adaptive.run(
            setup, args.quick, size["target"], size["cells"], size["replicates"], args.seed, log), setup, log)
    if "analysis" in sections:
        log("5 analysis ...")
        rows += run_section("5 analysis", lambda: analysis_rows(args.quick), None, log)
    if "startup" in sections:
        from benchmarks import bench_startup

        log("6 start-up to the first container ...")
        rows += run_section(bench_startup.SECTION, lambda: bench_startup.run(
            setup, size["startup_rounds"], args.seed, log), setup, log)
    if "hold" in sections:
        from benchmarks import bench_hold

        log("7 the hold for the cgroup read ...")
        rows += run_section(bench_hold.SECTION, lambda: bench_hold.run(setup, size["hold_rounds"], args.seed, log,
                                                                        quick=args.quick), setup, log)
    elapsed = time.perf_counter() - started
    header = (f"# shlib benchmarks ({'quick' if args.quick else 'full'})\n\n"
              f"- command: `python -m benchmarks.run{' --quick' if args.quick else ''}`, seed {args.seed}\n"
              f"- date: {datetime.now(UTC).isoformat(timespec='seconds')}, shlib {shlib.__version__}, "
              f"Python {platform.python_version()}\n"
              f"- machine: {header_facts}\n"
              f"- suite wall time: {elapsed / 60:.1f} min\n"
              f"- values are medians and ratios of medians from this one run; intervals are 95% bootstrap "
              f"(BCa) intervals; 'n' says how many trials, batches or runs each rests on")
    md, csv_path = write(rows, args.out, header)
    print(to_markdown(rows, header))
    log(f"written to {md} and {csv_path}")
    bad = [r for r in rows if isinstance(r.value, float) and not math.isfinite(r.value)]
    return 1 if bad and not args.quick else 0


if __name__ == "__main__":
    raise SystemExit(main())
