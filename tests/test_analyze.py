"""shlib.analysis.analyze: a whole results directory in, tables, figures and a headline out."""

from __future__ import annotations

import json

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest

from shlib.analysis.analyze import TABLES
from shlib.errors import AnalysisError, ResultsError
from shlib.present.export import analyze_run
from shlib.simulate import Scenario, simulate_results, write_results_dir

RESAMPLES = 400


def make_run(tmp_path, name="run", seed=1, **kwargs):
    defaults = {"speeds": {"runc": 1.0, "runsc-2022": 6.0, "runsc-2024": 3.0, "kata-sim": 1.5},
                "concurrency": (1, 2), "trials_per_group": 24, "batch_sd": 0.1, "fail_rate": 0.02}
    frame = simulate_results(Scenario(**{**defaults, **kwargs}), seed=seed)
    return write_results_dir(frame, tmp_path / name, {"run_id": name})


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    run = make_run(tmp_path_factory.mktemp("analyze"))
    return analyze_run(run, n_resamples=RESAMPLES)


def test_every_table_is_written_with_its_columns(full):
    out = full.out_dir
    assert out == full.run_dir / "analysis"
    expected = {
        "summary": ["runtime", "module", "concurrency", "n", "n_failed", "median_ms", "q1_ms", "q3_ms", "p95_ms"],
        "ratios": ["runtime", "baseline", "statistic", "ratio", "ci_low", "ci_high", "ci_method", "seed"],
        "ratio_summary": ["runtime", "baseline", "concurrency", "gmean_ratio", "ci_low", "ci_high", "n_modules"],
        "tests": ["runtime", "baseline", "concurrency", "p_value", "p_holm", "significant", "ratio", "ci_low"],
        "scaling": ["runtime", "module", "slope_ms_per_container", "pct_per_container", "ratio_pct_per_container"],
        "growth": ["runtime", "concurrency", "from_concurrency", "ratio", "ci_low", "ci_high"],
        "replication": ["claim_id", "runtime", "estimate", "ci_low", "ci_high", "verdict", "reason"],
    }
    for name in TABLES:
        table = pd.read_csv(out / f"{name}.csv")
        assert len(table) > 0, name
        assert set(expected[name]) <= set(table.columns), name


def test_values_are_finite_and_intervals_hold_their_estimates(full):
    ratios = full.tables["ratios"]
    assert np.isfinite(ratios[["ratio", "ci_low", "ci_high"]].to_numpy(float)).all()
    assert ((ratios["ci_low"] <= ratios["ratio"]) & (ratios["ratio"] <= ratios["ci_high"])).all()
    assert (ratios["seed"] == 12345).all() and (ratios["n_resamples"] == RESAMPLES).all()
    summary = full.tables["ratio_summary"]
    assert ((summary["ci_low"] <= summary["gmean_ratio"]) & (summary["gmean_ratio"] <= summary["ci_high"])).all()
    assert np.isfinite(full.tables["summary"][["median_ms", "p95_ms"]].to_numpy(float)).all()
    tests = full.tables["tests"]
    assert tests["p_holm"].between(0, 1).all() and (tests["ci_low"] <= tests["ratio"]).all()
    replication = full.tables["replication"]
    assert set(replication["verdict"]) <= {"consistent", "smaller", "larger", "inconclusive",
                                         "not measured (runtime absent)"}
    measured = replication[replication["ci_low"].notna()]
    assert ((measured["ci_low"] <= measured["estimate"]) & (measured["estimate"] <= measured["ci_high"])).all()
    # gVisor vs Kata claims are judged against Kata, each gVisor variant on its own row
    kata = replication[replication["denominator_kind"] == "kata"]
    assert set(kata["runtime"]) == {"runsc-2022", "runsc-2024"} and (kata["baseline"] == "kata-sim").all()


def test_figures_exist_and_are_real_images(full):
    figures = full.out_dir / "figures"
    for name in ("load_times", "ratios", "scaling", "distributions"):
        png, svg = figures / f"{name}.png", figures / f"{name}.svg"
        assert png in full.files and svg in full.files
        pixels = mpimg.imread(png)
        assert pixels.shape[0] > 100 and np.ptp(pixels[..., :3]) > 0.5
        assert svg.stat().st_size > 1000 and "<svg" in svg.read_text()[:2000]


def test_headline_reads_the_result(full):
    text = full.headline()
    assert "runsc-2022 loads modules" in text and "slower than runc at concurrency 1" in text
    assert "geometric mean over 3 modules" in text
    assert "Claim 'gVisor up to ~16x slower than Docker'" in text
    assert (full.out_dir / "headline.txt").read_text().strip() == text
    provenance = json.loads((full.out_dir / "analysis.json").read_text())
    assert provenance["seed"] == 12345 and provenance["baseline"] == "runc" and provenance["run_id"] == "run"


def test_same_seed_same_tables(tmp_path):
    run = make_run(tmp_path, speeds={"runc": 1.0, "runsc": 3.0}, concurrency=(1,))
    a = analyze_run(run, out_dir=tmp_path / "a", n_resamples=RESAMPLES, figures=False)
    b = analyze_run(run, out_dir=tmp_path / "b", n_resamples=RESAMPLES, figures=False)
    assert (tmp_path / "a" / "ratios.csv").read_text() == (tmp_path / "b" / "ratios.csv").read_text()
    assert a.headline() == b.headline()


def test_missing_factors_are_said_and_analysis_completes(tmp_path):
    run = make_run(tmp_path, speeds={"runc": 1.0, "kata-sim": 1.5}, concurrency=(1,))
    result = analyze_run(run, n_resamples=RESAMPLES)
    text = result.headline()
    assert "Only one concurrency level (1)" in text and "No gVisor runtime" in text
    assert (result.tables["replication"]["verdict"] == "not measured (runtime absent)").all()
    assert result.tables["scaling"]["note"].str.contains("one concurrency level").all()
    assert (result.out_dir / "figures" / "scaling.png").stat().st_size > 0


def test_falls_back_to_native_when_runc_is_absent(tmp_path):
    run = make_run(tmp_path, speeds={"native": 0.6, "runsc": 3.0}, concurrency=(1,))
    result = analyze_run(run, n_resamples=RESAMPLES, figures=False)
    assert result.result.baseline == "native"
    assert "baseline runc is absent" in result.headline() and "slower than native" in result.headline()
    assert (result.tables["ratios"]["baseline"] == "native").all()
    docker = result.tables["replication"]
    assert (docker.loc[docker.denominator_kind == "runc", "verdict"] == "not measured (runtime absent)").all()


def test_one_runtime_or_a_dead_runtime_still_completes(tmp_path):
    alone = analyze_run(make_run(tmp_path, "alone", speeds={"runc": 1.0}), n_resamples=RESAMPLES, figures=False)
    assert "only one runtime (runc)" in alone.headline() and len(alone.tables["ratios"]) == 0
    dead = analyze_run(make_run(tmp_path, "dead", fail=["runsc-2022"]), n_resamples=RESAMPLES)
    rows = dead.tables["ratios"][dead.tables["ratios"]["runtime"] == "runsc-2022"]
    assert rows["ratio"].isna().all() and rows["note"].str.contains("no ok trials").all()
    assert "runsc-2022: no ratio to runc" in dead.headline()


def test_bad_inputs_raise_shlib_errors(tmp_path):
    with pytest.raises(ResultsError, match="does not exist"):
        analyze_run(tmp_path / "nowhere")
    run = make_run(tmp_path, speeds={"runsc": 3.0, "kata-sim": 1.0})
    with pytest.raises(AnalysisError, match="runtimes present: kata-sim, runsc"):
        analyze_run(run, baseline="runc", figures=False)


def test_every_sentence_a_reading_produces_carries_its_interval(tmp_path):
    """Issue 11, flaws 6 and 7: a ratio, a percentage or a verdict in words comes with its interval (or
    says it has none), and cells with more loads than cores are labelled. The old readings gave the
    percent-per-container change and a replication estimate without one: fails on the old code."""
    import re

    from shlib.analysis.analyze import analyze_frame
    from shlib.present import readings

    frame = simulate_results(Scenario(speeds={"runc": 1.0, "runsc-a": 6.0, "runsc-b": 3.0}, concurrency=(1, 2, 4),
                                      trials_per_group=12, batch_sd=0.1, contention={"runc": 0.3}), seed=4)
    result = analyze_frame(frame, n_resamples=RESAMPLES, cores=2)
    lines = readings.headline_lines(result)
    lines += readings.concurrency_reading(result.ratio_summary, result.scaling, result.baseline,
                                          growth=result.growth).split("\n")
    quantity = re.compile(r"\d+\.\d+x|[+-]?\d+\.\d+%")
    interval = re.compile(r"\[[+-]?\d+(\.\d+)?[x%]?, [+-]?\d+(\.\d+)?[x%]?\]|\(no interval\)")
    said = [re.sub(r"'[^']*'", "", line) for line in lines]  # the claims quoted from the paper are not estimates
    # every estimate outside brackets is followed by its own interval
    bare = [line for line in said if len(quantity.findall(interval.sub("", line))) > len(interval.findall(line))]
    assert not bare, bare
    assert any("CPU oversubscribed" in line and "4" in line for line in lines), lines
