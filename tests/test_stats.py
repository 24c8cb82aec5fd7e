"""shlib.analysis.ratios: known answers, interval coverage on simulated data, and every degenerate input."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shlib.analysis.bootstrap import jackknife, make_group, resample, weighted_medians
from shlib.analysis.ratios import ratios, ratios_against, summary_across_modules
from shlib.analysis.replication import replication
from shlib.analysis.scaling import concurrency_scaling
from shlib.analysis.significance import holm, pairwise_tests
from shlib.analysis.summaries import summarize
from shlib.errors import AnalysisError, ShlibError
from shlib.simulate import Scenario, simulate_results

TRUE_RATIO = 3.0


def coverage_frame(concurrency: int, batch_sd: float, n_datasets: int, seed: int) -> pd.DataFrame:
    """n_datasets independent experiments, each a 'module' with ~30 trials per runtime."""
    scenario = Scenario(speeds={"runc": 1.0, "runsc": TRUE_RATIO},
                        modules={f"m{i:04d}": 50.0 for i in range(n_datasets)},
                        concurrency=(concurrency,), trials_per_group=30, sigma=0.5, batch_sd=batch_sd)
    return simulate_results(scenario, seed=seed)


@pytest.mark.parametrize("concurrency, batch_sd", [(1, 0.0), (2, 0.4)], ids=["independent", "batch-correlated"])
def test_ratio_intervals_cover_the_true_ratio_95_percent_of_the_time(concurrency, batch_sd):
    n_datasets = 800
    frame = coverage_frame(concurrency, batch_sd, n_datasets, seed=11)
    table = ratios(frame, baseline="runc", seed=2024, n_resamples=1000)
    assert len(table) == 2 * n_datasets
    if concurrency > 1:
        assert table["clustered"].all() and (table["n_batches"] == 15).all()
    for statistic in ("median", "gmean"):
        rows = table[table["statistic"] == statistic]
        covered = ((rows["ci_low"] <= TRUE_RATIO) & (TRUE_RATIO <= rows["ci_high"])).mean()
        print(f"{statistic} coverage ({concurrency=}, {batch_sd=}): {covered:.3f}")
        assert 0.93 <= covered <= 0.97, f"{statistic}: coverage {covered:.3f}"
        # misses on both sides, not all on one
        assert (rows["ci_high"] < TRUE_RATIO).mean() > 0.005 and (rows["ci_low"] > TRUE_RATIO).mean() > 0.005


def test_same_seed_same_interval_other_seed_other_interval():
    frame = simulate_results(seed=3, concurrency=(1, 2), batch_sd=0.2)
    a = ratios(frame, seed=7, n_resamples=500)
    b = ratios(frame, seed=7, n_resamples=500)
    c = ratios(frame, seed=8, n_resamples=500)
    pd.testing.assert_frame_equal(a, b)
    assert (a["seed"] == 7).all() and (c["seed"] == 8).all()
    assert not np.allclose(a["ci_low"], c["ci_low"])
    # a cell's interval does not depend on which other cells or runtimes are in the frame
    sub = frame[frame["module"] == "lodash"]
    d = ratios(sub, seed=7, n_resamples=500)
    e = a[a["module"] == "lodash"].reset_index(drop=True)
    np.testing.assert_allclose(d["ci_low"], e["ci_low"])


def test_weighted_median_matches_numpy():
    rng = np.random.default_rng(0)
    values = np.sort(rng.lognormal(size=41))
    weights = rng.integers(0, 4, size=(200, 41))
    weights[0] = 0
    weights[0, 7] = 1
    expected = [np.median(np.repeat(values, w)) for w in weights]
    np.testing.assert_allclose(weighted_medians(values, weights), expected)


@settings(max_examples=60, deadline=None)
@given(sizes=st.lists(st.integers(1, 4), min_size=2, max_size=12), seed=st.integers(0, 10_000))
def test_jackknife_is_exact_leave_one_batch_out(sizes, seed):
    rng = np.random.default_rng(seed)
    clusters = np.repeat(np.arange(len(sizes)), sizes)
    values = rng.lognormal(size=len(clusters))
    group = make_group(values, clusters, 0)
    medians, log_means = jackknife(group)
    for g in range(len(sizes)):
        keep = clusters != g
        assert medians[g] == pytest.approx(np.median(values[keep]))
        assert log_means[g] == pytest.approx(np.log(values[keep]).mean())


@settings(max_examples=30, deadline=None)
@given(sizes=st.lists(st.integers(1, 3), min_size=2, max_size=10), seed=st.integers(0, 10_000))
def test_bootstrap_resamples_are_medians_of_resampled_batches(sizes, seed):
    clusters = np.repeat(np.arange(len(sizes)), sizes)
    values = np.random.default_rng(seed).lognormal(size=len(clusters))
    group = make_group(values, clusters, 0)
    medians, log_means = resample(group, np.random.default_rng(1), 200)
    # every resampled median lies within the data's range once the spread correction is undone
    spread = math.sqrt(len(sizes) / (len(sizes) - 1))
    raw = np.exp(np.log(group.median()) + (np.log(medians) - np.log(group.median())) / spread)
    assert raw.min() >= values.min() - 1e-9 and raw.max() <= values.max() + 1e-9
    assert np.isfinite(log_means).all()


# --- summarize --------------------------------------------------------------------------------------


def test_summarize_values_and_columns():
    frame = simulate_results(seed=1, concurrency=(1, 2), fail_rate=0.05)
    table = summarize(frame)
    for column in ("n", "n_failed", "median_ms", "q1_ms", "q3_ms", "mean_ms", "sd_ms", "cv", "p95_ms", "min_ms",
                   "max_ms", "median_ci_low_ms", "median_ci_high_ms", "note"):
        assert column in table.columns
    assert len(table) == 2 * 3 * 2
    row = table[(table.runtime == "runc") & (table.module == "lodash") & (table.concurrency == 2)].iloc[0]
    cell = frame[(frame.runtime == "runc") & (frame.module == "lodash") & (frame.concurrency == 2)]
    ok = cell.loc[cell.status == "ok", "load_ms"]
    assert row["n"] == len(ok) and row["n_failed"] == len(cell) - len(ok)
    assert row["median_ms"] == pytest.approx(ok.median())
    assert row["p95_ms"] == pytest.approx(ok.quantile(0.95))
    assert row["cv"] == pytest.approx(ok.std() / ok.mean())
    assert (table["median_ci_low_ms"] <= table["median_ms"]).all()
    assert (table["median_ms"] <= table["median_ci_high_ms"]).all()


def test_summarize_factor_columns_only_when_they_vary():
    one = summarize(simulate_results(seed=1))
    assert "cache" not in one.columns and "mount" not in one.columns
    two = summarize(simulate_results(seed=1, factors={"cache": ["warm", "cold"]}))
    assert set(two["cache"]) == {"warm", "cold"} and len(two) == 2 * len(one)


def test_summarize_degenerate_cells_say_why():
    frame = simulate_results(seed=1, fail=["runsc-sim"])
    table = summarize(frame)
    dead = table[table.runtime == "runsc-sim"]
    assert (dead["n"] == 0).all() and dead["median_ms"].isna().all()
    assert dead["note"].str.contains("no ok trials").all() and dead["note"].str.contains("error").all()
    single = frame[(frame.runtime == "runc") & (frame.module == "react")].head(1)
    row = summarize(single).iloc[0]
    assert row["n"] == 1 and math.isnan(row["sd_ms"]) and "one ok trial" in row["note"]
    equal = frame[frame.runtime == "runc"].assign(load_ms=42.0)
    flat = summarize(equal)
    assert (flat["sd_ms"] == 0).all() and (flat["median_ms"] == 42.0).all()


def test_empty_or_malformed_frames_raise_clear_errors():
    frame = simulate_results(seed=1)
    with pytest.raises(AnalysisError, match="empty"):
        summarize(frame.iloc[0:0])
    with pytest.raises(AnalysisError, match="load_ms"):
        summarize(frame.drop(columns=["load_ms"]))
    with pytest.raises(ShlibError):
        ratios(frame.iloc[0:0])
    with pytest.raises(AnalysisError, match="empty"):
        pairwise_tests(frame.iloc[0:0])


# --- ratios -----------------------------------------------------------------------------------------


def test_ratios_table_shape_and_intervals():
    frame = simulate_results(seed=2, concurrency=(1, 8), batch_sd=0.2)
    table = ratios(frame, n_resamples=1000)
    expected = {"runtime", "runtime_kind", "baseline", "baseline_kind", "module", "concurrency", "statistic", "ratio",
                "ci_low", "ci_high", "ci_method", "confidence", "n", "n_baseline", "n_batches", "n_batches_baseline",
                "clustered", "batches_span_modules", "n_resamples", "seed", "note"}
    assert expected <= set(table.columns)
    assert set(table["statistic"]) == {"median", "gmean"}
    assert (table["ci_low"] <= table["ratio"]).all() and (table["ratio"] <= table["ci_high"]).all()
    assert set(table["ci_method"]) <= {"bca", "percentile"}
    assert table.loc[table.concurrency == 8, "clustered"].all()
    assert not table.loc[table.concurrency == 1, "clustered"].any()
    # 4 batches of 8 at concurrency 8: flagged as few; 30 single trials are not
    assert table.loc[table.concurrency == 8, "note"].str.contains("few resampling units").all()
    assert not table.loc[table.concurrency == 1, "note"].str.contains("few resampling units").any()


def test_ratios_absent_baseline_names_the_runtimes_present():
    frame = simulate_results(seed=1)
    with pytest.raises(AnalysisError, match=r"'kata'.*runc, runsc-sim"):
        ratios(frame, baseline="kata")


@pytest.mark.parametrize("baseline", ["native", "runc", "runsc-a"])
def test_any_runtime_can_be_the_baseline(baseline):
    scenario = Scenario(speeds={"native": 0.5, "runc": 1.0, "runsc-a": 4.0}, modules={"m": 50.0},
                        trials_per_group=200, sigma=0.2)
    table = ratios(scenario.frame(seed=1), baseline=baseline, n_resamples=500)
    assert set(table["runtime"]) == {"native", "runc", "runsc-a"} - {baseline}
    for row in table.itertuples():
        truth = scenario.true_ratio(row.runtime, baseline)
        assert row.ci_low * 0.9 < truth < row.ci_high * 1.1


def test_native_is_compared_within_every_container_mount():
    scenario = Scenario(speeds={"native": 0.5, "runc": 1.0}, modules={"m": 50.0}, factors={"mount": ["volume", "bind"]})
    frame = scenario.frame(seed=1)
    frame["mount"] = frame["mount"].astype(str).where(frame["runtime"] != "native", "host").astype("category")
    table = ratios(frame, baseline="native", n_resamples=200)
    assert sorted(table["mount"].unique()) == ["bind", "volume"] and table["ratio"].notna().all()
    summary = summarize(frame)
    assert summary.loc[summary.runtime == "native", "note"].str.contains("repeated").any()
    one_mount = simulate_results(Scenario(speeds={"native": 0.5, "runc": 1.0}), seed=1)
    assert (one_mount.loc[one_mount.runtime == "native", "mount"] == "host").all()
    assert "mount" not in ratios(one_mount, baseline="native", n_resamples=200).columns


def test_ratios_degenerate_inputs():
    frame = simulate_results(seed=1, fail=["runsc-sim"])
    dead = ratios(frame, n_resamples=200)
    assert dead["ratio"].isna().all() and (dead["ci_method"] == "none").all()
    assert dead["note"].str.contains("runsc-sim has no ok trials").all()

    alive = simulate_results(seed=1)
    one = alive[(alive.runtime == "runc") | (alive.index == alive.index[alive.runtime == "runsc-sim"][0])]
    single = ratios(one, n_resamples=200)
    row = single.dropna(subset=["ratio"]).iloc[0]
    assert np.isfinite(row["ratio"]) and math.isnan(row["ci_low"]) and "one batch/trial" in row["note"]

    flat = alive.assign(load_ms=np.where(alive.runtime == "runc", 10.0, 30.0))
    zero = ratios(flat, n_resamples=200)
    np.testing.assert_allclose(zero[["ratio", "ci_low", "ci_high"]].to_numpy(float), 3.0)
    assert zero["note"].str.contains("zero-width").all()

    alone = ratios(alive[alive.runtime == "runc"], n_resamples=200)
    assert len(alone) == 0 and "ratio" in alone.columns

    with pytest.raises(AnalysisError, match="n_resamples"):
        ratios(alive, n_resamples=10)


def test_ratios_against_several_baselines_equal_single_calls():
    frame = simulate_results(Scenario(speeds={"runc": 1.0, "runsc": 5.0, "kata": 1.5}), seed=2)
    both = ratios_against(frame, ["runc", "kata"], n_resamples=300)
    alone = ratios(frame, baseline="kata", n_resamples=300)
    pd.testing.assert_frame_equal(both[both.baseline == "kata"].reset_index(drop=True), alone)


# --- across modules ---------------------------------------------------------------------------------


def _table(ratios_by_module: dict[str, tuple[float, float, float]], spans: bool = False) -> pd.DataFrame:
    return pd.DataFrame([{"runtime": "runsc", "runtime_kind": "gvisor", "baseline": "runc", "baseline_kind": "runc",
                          "module": m, "concurrency": 1, "statistic": "median", "ratio": r, "ci_low": lo,
                          "ci_high": hi, "batches_span_modules": spans} for m, (r, lo, hi) in ratios_by_module.items()])


def test_summary_across_modules_is_a_geometric_mean():
    table = _table({"a": (2.0, 1.8, 2.2), "b": (8.0, 7.0, 9.0)})
    row = summary_across_modules(table).iloc[0]
    assert row["gmean_ratio"] == pytest.approx(4.0)  # not the arithmetic 5.0
    assert row["ci_low"] < 4.0 < row["ci_high"] and row["n_modules"] == 2
    assert row["min_module_ratio"] == pytest.approx(2.0) and row["max_module_ratio"] == pytest.approx(8.0)
    ends = (row["min_module"], row["min_module_ci_low"], row["max_module"], row["max_module_ci_high"])
    assert ends == ("a", 1.8, "b", 9.0)
    correlated = summary_across_modules(_table({"a": (2.0, 1.8, 2.2), "b": (8.0, 7.0, 9.0)}, spans=True))
    assert correlated.iloc[0]["ci_high"] > row["ci_high"] and "conservative" in correlated.iloc[0]["ci_method"]


def test_summary_across_modules_degenerate():
    missing = summary_across_modules(_table({"a": (2.0, 1.8, 2.2), "b": (math.nan, math.nan, math.nan)}))
    assert missing.iloc[0]["n_modules"] == 1 and "no ratio for b" in missing.iloc[0]["note"]
    no_ci = summary_across_modules(_table({"a": (2.0, math.nan, math.nan), "b": (3.0, 2.0, 4.0)}))
    assert np.isfinite(no_ci.iloc[0]["gmean_ratio"]) and math.isnan(no_ci.iloc[0]["ci_low"])
    assert "no interval" in no_ci.iloc[0]["note"]
    with pytest.raises(AnalysisError, match="ratio table"):
        summary_across_modules(pd.DataFrame({"x": [1]}))


# --- tests ------------------------------------------------------------------------------------------


def test_holm_matches_the_definition():
    p = np.array([0.01, 0.04, 0.03, np.nan, 0.005])
    adjusted = holm(p)
    np.testing.assert_allclose(adjusted[[4, 0, 2, 1]], [0.02, 0.03, 0.06, 0.06])
    assert math.isnan(adjusted[3])


def test_pairwise_tests_effect_sizes_and_correction():
    frame = simulate_results(Scenario(speeds={"runc": 1.0, "runsc": 20.0, "crun": 1.0}, sigma=0.1), seed=1)
    table = pairwise_tests(frame)
    assert len(table) == 3 * 3  # 3 modules x 3 pairs
    apart = table[(table.runtime_a == "runc") & (table.runtime_b == "runsc")]
    assert (apart["cliffs_delta"] == -1.0).all() and (apart["p_a_slower"] == 0.0).all()
    assert apart["significant"].all() and (apart["p_holm"] >= apart["p_value"]).all()
    same = table[(table.runtime_a == "crun") & (table.runtime_b == "runc")]
    assert (same["cliffs_delta"].abs() < 0.5).all()
    np.testing.assert_allclose(table["p_holm"], holm(table["p_value"].to_numpy()))


def test_pairwise_tests_degenerate():
    frame = simulate_results(seed=1, fail=["runsc-sim"])
    table = pairwise_tests(frame)
    assert table["p_value"].isna().all() and table["note"].str.contains("no ok trials").all()
    flat = pairwise_tests(simulate_results(seed=1).assign(load_ms=5.0))
    assert (flat["p_value"] == 1.0).all() and (flat["cliffs_delta"] == 0.0).all()
    clustered = pairwise_tests(simulate_results(seed=1, concurrency=(3,)))
    assert clustered["clustered"].all() and clustered["note"].str.contains("independence").all()


# --- scaling ----------------------------------------------------------------------------------------


def test_concurrency_scaling_recovers_a_known_slope():
    scenario = Scenario(speeds={"runc": 1.0, "runsc": 3.0}, modules={"m": 50.0}, concurrency=(1, 2, 4, 8),
                        trials_per_group=120, sigma=0.2, contention={"runsc": 0.1})
    table = concurrency_scaling(scenario.frame(seed=5), n_resamples=500)
    runsc = table[table.runtime == "runsc"].iloc[0]
    truth = 100 * math.expm1(0.1)
    assert runsc["pct_ci_low"] < truth < runsc["pct_ci_high"]
    assert runsc["ratio_pct_ci_low"] < truth < runsc["ratio_pct_ci_high"]
    assert runsc["ratio_at_max_concurrency"] > runsc["ratio_at_min_concurrency"]
    runc = table[table.runtime == "runc"].iloc[0]
    assert runc["pct_ci_low"] < 0 < runc["pct_ci_high"] and runc["note"] == "baseline"


def test_concurrency_scaling_one_level_says_so():
    table = concurrency_scaling(simulate_results(seed=1), n_resamples=200)
    assert table["slope_ms_per_container"].isna().all()
    assert table["note"].str.contains("one concurrency level").all()


# --- replication ------------------------------------------------------------------------------------


def _replicate(speeds: dict[str, float]) -> pd.DataFrame:
    scenario = Scenario(speeds=speeds, modules={"lodash": 40.0, "react": 30.0}, concurrency=(1, 2),
                        trials_per_group=80, sigma=0.15)
    frame = scenario.frame(seed=9)
    kinds = frame.groupby("runtime", observed=True)["runtime_kind"].first()
    baselines = ["runc", *[r for r in kinds.index if kinds[r] == "kata"]]
    table = ratios_against(frame, baselines, n_resamples=500)
    return replication(table)


def test_replication_verdicts_on_constructed_cases():
    consistent = _replicate({"runc": 1.0, "runsc": 16.0})
    row = consistent[consistent.claim_id == "KY2020-gvisor-docker-max"].iloc[0]
    assert row["verdict"] == "consistent" and row["ci_low"] <= 16 <= row["ci_high"], row["reason"]
    assert np.isfinite(row["gmean_ratio"]) and row["gmean_ci_low"] < 16 < row["gmean_ci_high"]
    assert row["gmean_concurrency"] == 1 and "deciding cell" in row["reason"]
    smaller = _replicate({"runc": 1.0, "runsc": 2.0})
    assert smaller.loc[smaller.claim_id == "KY2020-gvisor-docker-max", "verdict"].item() == "smaller"
    larger = _replicate({"runc": 1.0, "runsc": 40.0})
    assert larger.loc[larger.claim_id == "KY2020-gvisor-docker-max", "verdict"].item() == "larger"
    kata_claims = consistent[consistent.denominator_kind == "kata"]
    assert len(kata_claims) == 2 and (kata_claims["verdict"] == "not measured (runtime absent)").all()


def test_replication_judges_each_gvisor_variant_and_kata():
    table = _replicate({"runc": 1.0, "runsc-old": 16.0, "runsc-new": 4.0, "kata": 1.0})
    docker = table[table.claim_id == "KY2020-gvisor-docker-max"].set_index("runtime")
    assert docker.loc["runsc-old", "verdict"] == "consistent" and docker.loc["runsc-new", "verdict"] == "smaller"
    kata_min = table[table.claim_id == "KY2020-gvisor-kata-min"].set_index("runtime")
    assert kata_min.loc["runsc-new", "verdict"] == "larger"  # 4x to Kata > claimed minimum 2.7x
    assert (kata_min["baseline"] == "kata").all()


def test_replication_interval_is_simultaneous_over_the_cells():
    cells = _table({"a": (12.0, 11.0, 13.5), "b": (14.0, 12.0, 15.9)})
    row = replication(cells).set_index("claim_id").loc["KY2020-gvisor-docker-max"]
    # upper end: the largest cell upper bound; lower end: b's lower bound widened for 2 candidate cells
    assert row["estimate"] == 14.0 and row["ci_high"] == pytest.approx(15.9) and row["ci_low"] < 12.0
    assert row["verdict"] == "inconclusive" or row["verdict"] == "consistent"
    cells = _table({"a": (10.0, 9.0, 11.0), "b": (14.0, 12.0, 15.0)})
    assert replication(cells).set_index("claim_id").loc["KY2020-gvisor-docker-max", "verdict"] == "smaller"
    # a cell that cannot be the max does not widen the lower end
    far = _table({"a": (2.0, 1.9, 2.1), "b": (14.0, 12.0, 15.0)})
    alone = _table({"b": (14.0, 12.0, 15.0)})
    lows = [replication(t).set_index("claim_id").loc["KY2020-gvisor-docker-max", "ci_low"] for t in (far, alone)]
    assert lows[0] == pytest.approx(lows[1]) == pytest.approx(12.0)
    empty = replication(cells.iloc[0:0])
    assert (empty["verdict"] == "not measured (runtime absent)").all()


def test_replication_min_claim_mirrors_the_max():
    kata = _table({"a": (2.7, 2.6, 2.8), "b": (4.0, 3.0, 5.0)}).assign(baseline="kata", baseline_kind="kata")
    row = replication(kata).set_index("claim_id").loc["KY2020-gvisor-kata-min"]
    assert row["estimate"] == 2.7 and row["ci_low"] == pytest.approx(2.6) and row["ci_high"] == pytest.approx(2.8)
    assert row["verdict"] == "consistent", row["reason"]


def test_replication_flags_mount_fallback_oversubscription_and_missing_intervals():
    cells = _cells({("lodash", 1): (16.0, 15.0, 17.0), ("lodash", 8): (40.0, 30.0, 50.0)})
    row = replication(cells, cores=2).set_index("claim_id").loc["KY2020-gvisor-docker-max"]
    assert row["verdict"] == "consistent" and row["n_cells"] == 1 and row["n_cells_set_aside"] == 1
    assert "CPU oversubscribed" in row["note"]
    every = replication(cells, cores=None).set_index("claim_id").loc["KY2020-gvisor-docker-max"]
    assert every["verdict"] == "larger" and "core count unknown" in every["note"]
    bind = replication(cells.assign(mount="bind"), cores=8).set_index("claim_id").loc["KY2020-gvisor-docker-max"]
    assert bind["mount_fallback"] and "MOUNT FALLBACK" in bind["note"]
    gap = _cells({("lodash", 1): (16.0, math.nan, math.nan), ("react", 1): (10.0, 9.0, 11.0)})
    row = replication(gap, cores=2).set_index("claim_id").loc["KY2020-gvisor-docker-max"]
    assert row["verdict"] == "inconclusive" and "no interval for lodash at 1 container" in row["reason"]


def test_few_independent_trials_are_flagged_too():
    frame = simulate_results(seed=4, concurrency=(1,), trials_per_group=3)
    table = ratios(frame, n_resamples=500)
    assert table["note"].str.contains("few resampling units").all()
    assert table["note"].str.contains("3 trials").all()


def _cells(spec: dict[tuple[str, int], tuple[float, float, float]]) -> pd.DataFrame:
    return pd.DataFrame([{"runtime": "runsc", "runtime_kind": "gvisor", "baseline": "runc", "baseline_kind": "runc",
                          "module": m, "concurrency": c, "statistic": "median", "ratio": r, "ci_low": lo,
                          "ci_high": hi} for (m, c), (r, lo, hi) in spec.items()])


def test_one_unresolved_cell_does_not_make_a_max_claim_agree():
    """Issue 11, flaw 1: eleven cells resolved near 7x and one noisy cell (react at 8 containers,
    3.55x [0.81, 24.9]) made 'up to 16x' agree, because the interval of the max took the noisy cell's
    upper bound. The data cannot tell 16x from 8x there: the verdict must not be an agreement."""
    spec = {(m, c): (7.0, 6.2, 7.9) for m in ("lodash", "express", "react") for c in (1, 2, 4, 8)}
    spec[("react", 8)] = (3.55, 0.81, 24.9)
    row = replication(_cells(spec)).set_index("claim_id").loc["KY2020-gvisor-docker-max"]
    assert row["verdict"] == "inconclusive", row["verdict"]
    assert "react" in row["reason"] and "8" in row["reason"]


def _timeout_frame(n_timeouts: int) -> pd.DataFrame:
    frame = simulate_results(Scenario(speeds={"runc": 1.0, "runsc": 3.0}, modules={"m": 50.0},
                                      trials_per_group=20, sigma=0.2), seed=5)
    slow = frame.index[frame["runtime"] == "runsc"]
    slowest = frame.loc[slow, "load_ms"].sort_values().index[20 - n_timeouts:]
    frame["status"] = frame["status"].astype(str)
    frame.loc[slowest, "status"] = "timeout"
    frame.loc[slowest, "load_ms"] = np.nan
    return frame


def test_timeouts_are_counted_and_censored_not_dropped():
    """Issue 11, flaw 3: timed-out trials vanished from the ratio (no count, no note), which biases the
    ratio of the slow runtime toward 1. Fails on the old code (the ratio used only the ok trials)."""
    frame = _timeout_frame(6)
    row = ratios(frame, n_resamples=500, deadline_ms=1000.0).set_index("statistic").loc["median"]
    runsc = frame[frame.runtime == "runsc"]["load_ms"].fillna(1000.0)
    runc = frame[frame.runtime == "runc"]["load_ms"]
    assert row["ratio"] == pytest.approx(np.median(runsc) / np.median(runc))
    assert row["ratio"] > np.median(runsc[runsc < 1000.0]) / np.median(runc)  # the dropped-timeouts bias
    assert row["n_failed"] == 6 and row["n_failed_baseline"] == 0 and row["n_censored"] == 6
    assert row["failed_by_status"] == "timeout: 6" and "failure rates differ" in row["note"]
    assert row["ci_low"] <= row["ratio"] <= row["ci_high"]
    gmean = ratios(frame, n_resamples=500, deadline_ms=1000.0).set_index("statistic").loc["gmean"]
    assert math.isnan(gmean["ratio"]) and "censored" in gmean["note"]


def test_half_or_more_timeouts_leave_no_ratio_and_say_why():
    row = ratios(_timeout_frame(10), n_resamples=500).set_index("statistic").loc["median"]
    assert math.isnan(row["ratio"]) and "10 of 20 trials timed out (half or more)" in row["note"]
    assert row["n_failed"] == 10


def test_batch_tests_are_one_family_against_the_baseline():
    """Issue 11, flaw 2: Holm over every pair of 7 runtimes in every cell (252 tests) left an 8.5x
    [6.6, 11.4] difference 'not significant' with 6 vs 6 trials. The family is each runtime against the
    baseline per concurrency level, over modules, tested on batches: fails on the old code (no such rows)."""
    speeds = {"runc": 1.0, "crun": 1.0, "native": 0.9, "runsc-a": 8.5, "runsc-b": 6.0, "runsc-c": 4.0, "runsc-d": 3.0}
    frame = simulate_results(Scenario(speeds=speeds, concurrency=(1, 2), trials_per_group=6, sigma=0.25,
                                      batch_sd=0.2), seed=3)
    from shlib.analysis.analyze import analyze_frame

    tests = analyze_frame(frame, n_resamples=500).tables["tests"]
    assert len(tests) == 6 * 2 and set(tests["baseline"]) == {"runc"}
    slow = tests[tests["runtime"].str.startswith("runsc")]
    assert slow["significant"].all(), slow[["runtime", "concurrency", "p_value", "p_holm"]]
    assert (slow["ci_low"] > 1).all() and (tests["n_modules"] == 3).all()
    assert not tests.loc[tests["runtime"] == "crun", "significant"].any()
    assert (tests["strata"] == "module x repetition").all()


def test_batch_test_permutes_whole_batches():
    # one module, 3 repetitions of one batch each: 2^3 = 8 rearrangements, so p >= 2/8 whatever the data
    frame = simulate_results(Scenario(speeds={"runc": 1.0, "runsc": 50.0}, modules={"m": 10.0}, concurrency=(4,),
                                      trials_per_group=12, sigma=0.1), seed=1)
    from shlib.analysis.significance import baseline_tests

    row = baseline_tests(frame, "runc", n_permutations=2000).iloc[0]
    assert row["n_batches"] == 3 and row["p_value"] >= 0.2 and "8 distinct rearrangements" in row["note"]


def _trend_rows(values: list[tuple[int, float, float, float]]) -> pd.DataFrame:
    return pd.DataFrame([{"runtime": "runsc", "baseline": "runc", "module": "m", "statistic": "median",
                          "concurrency": c, "ratio": r, "ci_low": lo, "ci_high": hi} for c, r, lo, hi in values])


def test_a_ratio_trend_that_does_not_fit_is_not_reported_as_a_slope():
    """Issue 11, flaw 5: a drop from 1 to 4 containers and a plateau after it was reported as one
    percent-per-container slope with an interval that took the cell variances as known. Fails on the
    old code (it gave a slope and no lack-of-fit statistic)."""
    from shlib.analysis.scaling import _ratio_trend

    notes: list[str] = []
    bent = _ratio_trend(_trend_rows([(1, 8.0, 7.0, 9.1), (2, 5.0, 4.4, 5.7), (4, 3.0, 2.7, 3.4), (8, 3.0, 2.7, 3.4)]),
                        {"runtime": "runsc", "module": "m"}, [], "median", 1.96, notes)
    assert math.isnan(bent["ratio_pct_per_container"]) and bent["ratio_trend_p"] < 0.05
    assert bent["ratio_trend_fits"] is False and "does not fit" in notes[-1]
    assert bent["ratio_by_level"].startswith("1: 8.00x [7.00, 9.10]; 2: 5.00x")
    assert (bent["ratio_at_max_ci_low"], bent["ratio_at_max_ci_high"]) == (2.7, 3.4)
    notes = []
    line = _ratio_trend(_trend_rows([(c, 8.0 * 0.9 ** (c - 1), 7.0 * 0.9 ** (c - 1), 9.1 * 0.9 ** (c - 1))
                                     for c in (1, 2, 4, 8)]), {"runtime": "runsc", "module": "m"}, [], "median",
                        1.96, notes)
    assert line["ratio_trend_fits"] and line["ratio_pct_per_container"] == pytest.approx(-10.0)
    assert line["ratio_pct_ci_low"] < -10.0 < line["ratio_pct_ci_high"]


def test_load_time_growth_has_intervals():
    from shlib.analysis.scaling import load_time_growth

    scenario = Scenario(speeds={"runc": 1.0, "runsc": 3.0}, concurrency=(1, 4), trials_per_group=24, sigma=0.2,
                        contention={"runc": 0.2})
    table = load_time_growth(scenario.frame(seed=2), n_resamples=500)
    runc = table[table["runtime"] == "runc"].iloc[0]
    assert runc["concurrency"] == 4 and runc["from_concurrency"] == 1 and runc["n_modules"] == 3
    assert runc["ci_low"] < math.exp(0.2 * 3) < runc["ci_high"]
    runsc = table[table["runtime"] == "runsc"].iloc[0]
    assert runsc["ci_low"] < 1.0 < runsc["ci_high"]


def test_distinct_permutations_of_many_batches_do_not_overflow():
    """A large run (hundreds of batches per stratum) has more rearrangements than a float holds."""
    from shlib.analysis.significance import _distinct_permutations

    label = np.tile([True, False], 1000)
    assert _distinct_permutations(np.zeros(2000, dtype=int), label) == math.inf
    assert _distinct_permutations(np.array([0, 0, 1, 1]), np.array([True, False, True, False])) == 4.0
