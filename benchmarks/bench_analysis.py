"""Time the full analysis (summaries, every ratio interval, tests, scaling) on a synthetic results table.

    .venv/bin/python benchmarks/bench_analysis.py [--quick] [--rows N] [--repeat K]

Writes the timing to benchmarks/results/analysis.csv (appends one line per invocation: wall and CPU
seconds, and the host's load average, since other work on a 2-core host inflates wall time).
Target: under 30 s for 100,000 rows on a 2-core machine. --quick (CI) runs a small table once and
checks the tables are complete.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from shlib.analysis.analyze import analyze_frame  # noqa: E402
from shlib.analysis.defaults import DEFAULT_RESAMPLES  # noqa: E402
from shlib.simulate import Scenario, simulate_results  # noqa: E402

TARGET_S = 30.0
RESULTS = Path(__file__).resolve().parent / "results" / "analysis.csv"


def scenario_for(rows: int) -> Scenario:
    """4 runtimes x 5 modules x 4 concurrency levels, trials per cell chosen to give about ``rows`` rows."""
    speeds = {"runc": 1.0, "runsc-2022-ptrace": 6.0, "runsc-2024-systrap": 3.0, "kata-sim": 1.8}
    modules = {"lodash": 40.0, "express": 80.0, "react": 30.0, "moment": 35.0, "axios": 25.0}
    concurrency = (1, 2, 4, 8)
    per_cell = max(8, math.ceil(rows / (len(speeds) * len(modules) * len(concurrency))))
    return Scenario(speeds=speeds, modules=modules, concurrency=concurrency, trials_per_group=per_cell,
                    batch_sd=0.15, contention={"runc": 0.08, "runsc-2022-ptrace": 0.05, "kata-sim": 0.06},
                    fail_rate=0.005)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small table, one run (CI)")
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--resamples", type=int, default=DEFAULT_RESAMPLES)
    args = parser.parse_args(argv)
    rows, repeat = (2_000, 1) if args.quick else (args.rows, args.repeat)

    frame = simulate_results(scenario_for(rows), seed=1)
    times, cpu_times = [], []
    for _ in range(repeat):
        start, start_cpu = time.perf_counter(), time.process_time()
        result = analyze_frame(frame, baseline="runc", seed=12345, n_resamples=args.resamples)
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - start_cpu)
    ratios = result.tables["ratios"]
    assert len(ratios) and ratios["ratio"].notna().all(), "every cell should have a ratio"
    assert (ratios["ci_low"] <= ratios["ratio"]).all() and (ratios["ratio"] <= ratios["ci_high"]).all()
    median_s = statistics.median(times)
    verdict = "ok" if median_s < TARGET_S else f"SLOWER than the {TARGET_S:.0f} s target"
    print(f"full analysis of {len(frame):,} rows ({len(ratios)} ratio intervals x {args.resamples} resamples, "
          f"{len(result.tables['tests'])} tests): median {median_s:.2f} s over {repeat} runs "
          f"({', '.join(f'{t:.2f}' for t in times)}; CPU {statistics.median(cpu_times):.2f} s; "
          f"load average {os.getloadavg()[0]:.1f}) -> {verdict}")
    if not args.quick:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        new = not RESULTS.exists()
        with RESULTS.open("a", newline="") as fh:
            writer = csv.writer(fh)
            if new:
                writer.writerow(["date", "rows", "n_resamples", "ratio_intervals", "runs", "median_s", "min_s",
                                 "max_s", "median_cpu_s", "load_avg_1min", "cpus", "python", "machine"])
            writer.writerow([dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), len(frame), args.resamples,
                             len(ratios), repeat, f"{median_s:.3f}", f"{min(times):.3f}", f"{max(times):.3f}",
                             f"{statistics.median(cpu_times):.3f}", f"{os.getloadavg()[0]:.1f}", os.cpu_count(),
                             platform.python_version(), platform.machine()])
        print(f"written to {RESULTS}")
    return 0 if median_s < TARGET_S or args.quick else 1


if __name__ == "__main__":
    raise SystemExit(main())
