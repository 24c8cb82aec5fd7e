"""The adaptive mode: its stopping rule, and that optional stopping does not make intervals lie.

No containers: the coverage check simulates cells with a known true ratio (shlib.simulate), stops
each by the rule (shlib.spec.adaptive.stopping_rep) and computes the intervals users read
(shlib.analysis.ratios.ratios) from what was collected. The runner's loop is checked with the probe
replaced by a stub.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
from unittest import mock

import numpy as np
import pandas as pd
import pytest

from shlib.collect import runner
from shlib.collect.probe import Outcome
from shlib.results.store import load_frame
from shlib.spec import adaptive

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the benchmarks package, beside shlib
from benchmarks.bench_adaptive import CASES, coverage  # noqa: E402


def test_cell_target_gives_the_ratio_target_in_quadrature():
    h = adaptive.cell_target(0.05)
    assert math.sinh(math.sqrt(2) * h) == pytest.approx(0.05)


def test_predicted_halfwidth_shrinks_with_batches_and_needs_three():
    rng = np.random.default_rng(1)
    values = np.exp(rng.normal(3.0, 0.2, 400))
    assert adaptive.predicted_halfwidth(values[:2]) == math.inf
    widths = [adaptive.predicted_halfwidth(values[:n]) for n in (5, 20, 80, 320)]
    assert all(a > b for a, b in zip(widths, widths[1:], strict=False))
    # for many batches it approaches 1.96 * 1.2533 * sigma / sqrt(n)
    assert widths[-1] == pytest.approx(1.96 * 1.2533 * 0.2 / math.sqrt(320), rel=0.15)


def test_identical_batches_are_done_at_once_and_ignores_bad_values():
    assert adaptive.cell_done([10.0, 10.0, 10.0], 0.05)
    assert adaptive.predicted_halfwidth([10.0, math.nan, -1.0]) == math.inf


def test_stopping_rep_respects_minimum_and_maximum():
    rng = np.random.default_rng(2)
    quiet = list(np.exp(rng.normal(3.0, 0.01, 50)))
    noisy = list(np.exp(rng.normal(3.0, 1.0, 50)))
    assert adaptive.stopping_rep(quiet, 0.2, 7, 50) == 7
    assert adaptive.stopping_rep(noisy, 0.05, 5, 30) == 30


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_intervals_after_adaptive_stopping_cover_the_true_ratio(case):
    """1000 simulated ratios: coverage of the 95% intervals 93-97%, less one Monte Carlo s.e. (0.7 points).

    The geometric-mean interval is allowed 91%: shlib.analysis.ratios' gmean interval already under-covers
    when the two runtimes have very different numbers of batches, which the adaptive mode produces
    (fixed design, 45 vs 10 batches of 4: 92%); the median interval is the headline.
    """
    result = coverage(case, n_cells=1000, seed=20240729)
    assert 0.925 <= result["median_coverage"] <= 0.97, result
    assert 0.91 <= result["gmean_coverage"] <= 0.97, result
    assert result["capped"] < 0.01
    # and the intervals mostly reach the precision asked for
    assert result["median_met"] >= 0.75, result


def _stub_execute(batch, prep):
    """Probe stand-in: lognormal load times, spread 0.01 for lodash and 1.0 for react."""
    rng = np.random.default_rng(batch.batch_id)
    module = batch.cell.modules[0].split("@")[0]
    sd = 0.01 if module == "lodash" else 1.0
    out = []
    for i in range(batch.cell.concurrency):
        load = float(np.exp(rng.normal(3.0, sd)))
        payload = {"probe": "load", "node": "v0-stub", "go_wall_ms": 0.0,
                   "results": [{"module": module, "ok": True, "load_ms": load, "files": 1}]}
        out.append(Outcome(slot=i, payload=payload, exit_code=0, wall_ms=1.0))
    return out


def _spec(**extra):
    return {"name": "adaptive-stub", "runtimes": ["native"], "modules": ["lodash@4.17.20", "react@16.14.0"],
            "concurrency": [1], "seed": 3, "target_rel_halfwidth": 0.1, "min_repetitions": 4,
            "repetitions": 12, **extra}


@pytest.fixture(autouse=True)
def no_syscall_profile():
    """The stub library is no library strace could profile (with strace on the host, its mock tree hash
    went into the metadata, which cannot be written)."""
    with mock.patch.object(runner, "module_syscalls", return_value=None):
        yield


@pytest.fixture
def stub_library(tmp_path):
    lib = mock.Mock()
    lib.path = tmp_path
    lib.manifest = {"modules": [{"module": "lodash", "version": "4.17.20"}, {"module": "react", "version": "16.14.0"}]}
    return lib


def test_runner_extends_only_open_cells_up_to_the_maximum(tmp_path, stub_library):
    with mock.patch.object(runner, "execute", _stub_execute):
        out = runner.run_experiment(_spec(), tmp_path / "run", progress=False, library=stub_library)
    frame = load_frame(out)
    reps = frame.groupby("module", observed=True)["batch_id"].nunique()
    assert reps["lodash"] == 4  # quiet: done at the minimum
    assert reps["react"] == 12  # noisy: still open at the maximum
    assert runner.unfinished_cells(frame, 0.1) == {("native", "node", "react", 1, "host", "warm")}


def test_resume_of_an_adaptive_run_goes_on_adding_repetitions(tmp_path, stub_library):
    """A run interrupted after its first repetitions resumes the adaptive phase (it used to stop)."""
    calls = {"n": 0}

    def interrupted(batch, prep):
        calls["n"] += 1
        if calls["n"] > 8:  # the 4 first repetitions of 2 cells, then Ctrl-C
            raise KeyboardInterrupt
        return _stub_execute(batch, prep)

    with mock.patch.object(runner, "execute", interrupted), pytest.raises(Exception, match="interrupted"):
        runner.run_experiment(_spec(), tmp_path / "run", progress=False, library=stub_library)
    with mock.patch.object(runner, "execute", _stub_execute):
        runner.run_experiment(_spec(), tmp_path / "run", resume=True, progress=False, library=stub_library)
    reps = load_frame(tmp_path / "run").groupby("module", observed=True)["batch_id"].nunique()
    assert reps["react"] == 12


def test_unfinished_cells_treats_a_cell_without_successes_as_finished():
    frame = pd.DataFrame({"runtime": ["runc"] * 6, "module": ["m"] * 6, "concurrency": [1] * 6,
                          "mount": ["volume"] * 6, "cache": ["warm"] * 6, "node_version": ["v20"] * 6,
                          "language": ["node"] * 6, "interpreter_version": ["v20"] * 6,
                          "batch_id": range(6), "load_ms": [math.nan] * 6, "status": ["error"] * 6})
    assert runner.unfinished_cells(frame, 0.05) == set()
