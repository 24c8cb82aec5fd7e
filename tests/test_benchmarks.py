"""The benchmark suite works: ``python -m benchmarks.run --quick`` produces the table with every row.

Not a timed test: it checks the suite runs end to end on the real engine and yields finite numbers,
not that anything is fast (the machines are shared and noisy).
"""

from __future__ import annotations

import csv
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the benchmarks package, beside shlib

from benchmarks.common import RUNTIMES, ratio_of_medians  # noqa: E402
from benchmarks.run import to_markdown  # noqa: E402


def test_ratio_of_medians_has_an_interval_around_the_ratio():
    a = [2.0, 2.1, 1.9, 2.2, 2.05, 1.95, 2.0, 2.1]
    b = [1.0, 1.05, 0.95, 1.1, 1.0, 0.98, 1.02, 1.0]
    ratio, low, high = ratio_of_medians(a, b, seed=1)
    assert ratio == pytest.approx(2.0, rel=0.05)
    assert low <= ratio <= high
    assert math.isnan(ratio_of_medians(a[:2], b, seed=1)[1])  # too few values for an interval


@pytest.mark.docker
@pytest.mark.slow
@pytest.mark.timeout(600)
def test_quick_suite_produces_the_table(client, tmp_path):
    known = __import__("shlib.collect.runtimes", fromlist=["catalog"]).catalog(client)
    missing = [r for r in RUNTIMES if not (r in known and known[r].available)]
    if missing:
        pytest.skip(f"runtimes not available here: {missing}")
    done = subprocess.run([sys.executable, "-m", "benchmarks.run", "--quick", "--out", str(tmp_path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=540, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0, done.stderr[-3000:]
    rows = list(csv.DictReader((tmp_path / "latest.csv").open()))
    assert (tmp_path / "latest.md").read_text().startswith("# shlib benchmarks (quick)")
    assert not [r for r in rows if r["verdict"].startswith("ERROR")], [r for r in rows if "ERROR" in r["verdict"]]
    measures = {(r["section"], r["measure"], r["runtime"]) for r in rows}
    for runtime in RUNTIMES:
        for measure in ("cost ratio shlib / docker-py loop", "cost ratio shlib / shell loop"):
            assert ("1 orchestration", measure, runtime) in measures
        assert ("2 fidelity", "lodash load_ms ratio shlib / shell loop", runtime) in measures
        for conc in (1, 4, 8, 16):
            assert ("3 throughput", f"trials/s at concurrency {conc}", runtime) in measures
    sections = {r["section"] for r in rows}
    assert sections == {"1 orchestration", "2 fidelity", "3 throughput", "4 time to answer", "5 analysis",
                        "6 start-up", "7 hold"}
    for runtime in RUNTIMES:
        assert ("7 hold", "load_ms ratio hold on / hold off", runtime) in measures
    startup = {r["measure"]: r for r in rows if r["section"] == "6 start-up"}
    for measure in ("start-up to first container create, shlib run (ms)",
                    "start-up to first container create, docker run (ms)", "start-up ratio shlib run / docker run"):
        assert measure in startup and startup[measure]["runtime"] == "runc", sorted(startup)
        assert math.isfinite(float(startup[measure]["value"])) and float(startup[measure]["value"]) > 0
    ratio = startup["start-up ratio shlib run / docker run"]
    assert math.isfinite(float(ratio["ci_low"])) and math.isfinite(float(ratio["ci_high"]))
    assert any(m.startswith("coverage of 95% median-ratio intervals, adaptive rule") for _, m, _ in measures)
    assert any(m.startswith("containers, adaptive / fixed") for _, m, _ in measures)
    for r in rows:
        assert math.isfinite(float(r["value"])), r
        if r["ci_low"] not in ("", "nan"):
            assert float(r["ci_low"]) <= float(r["value"]) * 1.0001 or "half-width" in r["measure"], r


def test_markdown_table_has_a_line_per_row():
    from benchmarks.common import Row

    text = to_markdown([Row("s", "m", "runc", 1.0, 0.9, 1.1, "3", "<= 1", "met")], "# h")
    assert text.count("\n| s | m | runc | 1.000 | 0.900 - 1.100 | 3 | <= 1 | met |") == 1
