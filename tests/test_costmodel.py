"""The cost model on synthetic data with a known answer: per-file and per-MB costs recovered within their
intervals (and the intervals covering them at about their level), leave-one-module-out errors, the penalty
prediction, the features taken from a run's metadata, and clear errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from shlib.analysis.costmodel import fit_cost_model, module_features, per_file_readings, predict_penalty_ms
from shlib.errors import AnalysisError

#: files opened and MB read of eight modules: files and bytes vary independently enough to separate.
FILES = {"tiny": 1, "huge": 3, "many": 2900, "rx": 2200, "lod": 1000, "les": 640, "exp": 220, "rea": 30}
MB = {"tiny": 0.01, "huge": 9.0, "many": 6.0, "rx": 2.0, "lod": 1.4, "les": 0.6, "exp": 1.8, "rea": 0.3}
TRUE = {"runc": (30.0, 0.020, 5.0), "gvisor": (150.0, 0.150, 8.0)}  # base ms, ms per file, ms per MB


def features() -> pd.DataFrame:
    return pd.DataFrame({"module": list(FILES), "files": [float(v) for v in FILES.values()],
                         "lookups": np.nan, "failed_lookups": np.nan, "syscalls": np.nan,
                         "mbytes": list(MB.values()), "files_source": "test", "mbytes_source": "test"})


def synthetic(seed: int, reps: int = 8, sd: float = 0.08, concurrency: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows, batch = [], 0
    for rep in range(reps):
        for runtime, (base, per_file, per_mb) in TRUE.items():
            for module in FILES:
                batch += 1
                shared = rng.normal(0, sd / 2)  # the batch's own drift: trials of a batch move together
                for slot in range(concurrency):
                    true = base + per_file * FILES[module] + per_mb * MB[module]
                    value = true * np.exp(shared + rng.normal(0, sd))
                    rows.append({"runtime": runtime, "runtime_kind": "gvisor" if runtime == "gvisor" else "runc",
                                 "module": module, "concurrency": concurrency, "load_ms": value, "cpu_ms": 2 * value,
                                 "status": "ok", "batch_id": batch, "rep": rep, "slot": slot})
    return pd.DataFrame(rows)


def test_known_costs_fall_within_their_intervals():
    model = fit_cost_model(synthetic(1), features(), n_resamples=1000)
    terms = model.terms.set_index(["runtime", "term"])
    for runtime, truth in TRUE.items():
        for term, value in zip(("base_ms", "per_file_ms", "per_mb_ms"), truth, strict=True):
            row = terms.loc[(runtime, term)]
            assert row["ci_low"] <= value <= row["ci_high"], (runtime, term, value, row.to_dict())
            assert row["ci_low"] < row["estimate"] < row["ci_high"]
    assert (model.terms["n_modules"] == 8).all() and (model.terms["r2"] > 0.95).all()


def test_intervals_cover_the_per_file_cost_at_about_their_level():
    hits = 0
    runs = 40
    for seed in range(runs):
        model = fit_cost_model(synthetic(100 + seed, reps=10), features(), n_resamples=400, seed=seed)
        row = model.terms[(model.terms["runtime"] == "gvisor") & (model.terms["term"] == "per_file_ms")].iloc[0]
        hits += row["ci_low"] <= TRUE["gvisor"][1] <= row["ci_high"]
    assert hits >= 0.8 * runs, hits  # nominal 95%; 40 runs: 80% is a generous floor, not a coincidence


def test_leave_one_module_out_predicts_the_held_out_module():
    model = fit_cost_model(synthetic(2), features(), n_resamples=300)
    lomo = model.lomo
    assert len(lomo) == 2 * len(FILES) and set(lomo["module"]) == set(FILES)
    assert lomo["rel_error"].abs().median() < 0.1
    # a model whose truth is not linear in files predicts badly out of sample: LOMO is not the in-sample fit
    bent = synthetic(2)
    bent.loc[bent["module"] == "many", "load_ms"] *= 3
    worse = fit_cost_model(bent, features(), n_resamples=300).lomo
    many = worse[(worse["module"] == "many") & (worse["runtime"] == "gvisor")]["rel_error"].iloc[0]
    assert many < -0.3


def test_the_penalty_of_a_dependency_tree_has_an_interval_holding_the_truth():
    model = fit_cost_model(synthetic(3), features(), n_resamples=1000)
    pen = predict_penalty_ms(1000, 2.0, "gvisor", "runc", model)
    truth = (150 - 30) + (0.150 - 0.020) * 1000 + (8 - 5) * 2.0
    assert pen.ci_low_ms <= truth <= pen.ci_high_ms and not pen.extrapolated
    assert abs(pen.estimate_ms - truth) < 0.1 * truth
    assert "gvisor vs runc" in str(pen)
    assert predict_penalty_ms(50_000, 2.0, "gvisor", "runc", model).extrapolated
    with pytest.raises(AnalysisError, match="no cost model for kata/1"):
        predict_penalty_ms(10, 1.0, "kata", "runc", model)
    with pytest.raises(AnalysisError, match="must be finite"):
        predict_penalty_ms(-1, 1.0, "gvisor", "runc", model)


def test_readings_say_microseconds_per_file_with_intervals():
    model = fit_cost_model(synthetic(4), features(), n_resamples=300)
    lines = per_file_readings(model)
    assert len(lines) == 2 and lines[0].startswith("gvisor (load_ms, 1 at once): 1")
    assert " us [" in lines[0] and "per file opened" in lines[0]


def test_cpu_ms_is_modelled_the_same_way():
    model = fit_cost_model(synthetic(5), features(), metric="cpu_ms", n_resamples=300)
    row = model.terms[(model.terms["runtime"] == "runc") & (model.terms["term"] == "per_file_ms")].iloc[0]
    assert row["ci_low"] <= 2 * TRUE["runc"][1] <= row["ci_high"] and row["metric"] == "cpu_ms"


def test_too_few_modules_is_a_note_not_a_fit():
    few = synthetic(6)
    few = few[few["module"].isin(["tiny", "huge", "many"])]
    model = fit_cost_model(few, features(), n_resamples=200)
    assert model.terms.empty and any("need at least 4" in n for n in model.notes)
    with pytest.raises(AnalysisError, match="per="):
        fit_cost_model(few, features(), per="bytes")


def test_features_prefer_the_syscall_profile_then_the_probe_then_the_closure():
    library = {"modules": [{"module": "a", "files": 40, "bytes": 2_000_000}, {"module": "b", "files": 9, "bytes": 10},
                           {"module": "c", "files": 7, "bytes": 3_000_000}],
               "syscall_profile": {"modules": {"a": {"openat": 12, "stat": 80, "failed_lookups": 50, "syscalls": 300,
                                                     "read_bytes": 500_000}}}}
    frame = pd.DataFrame({"module": ["b", "b", "a"], "status": ["ok", "ok", "ok"], "files_loaded": [5, 5, 11]})
    feats = module_features(library, frame).set_index("module")
    assert feats.loc["a", "files"] == 12 and feats.loc["a", "mbytes"] == 0.5 and feats.loc["a", "lookups"] == 80
    assert feats.loc["b", "files"] == 5 and feats.loc["b", "files_source"].startswith("probe")
    assert feats.loc["c", "files"] == 7 and feats.loc["c", "mbytes"] == 3.0
    assert np.isnan(feats.loc["c", "lookups"])


def test_the_analysis_ratios_cpu_ms_beside_load_ms_and_fits_both_models():
    from shlib.analysis.analyze import analyze_frame
    from shlib.analysis.ratios import ratios
    from shlib.results.metadata import RunMetadata

    df = synthetic(7, reps=6)
    df.loc[df["runtime"] == "gvisor", "cpu_ms"] *= 1.5  # gVisor burns more CPU than wall time beside runc
    native = df[df["runtime"] == "runc"].assign(runtime="native", runtime_kind="native", cpu_ms=np.nan,
                                                batch_id=lambda d: d["batch_id"] + 10_000)
    profile = {m: {"openat": FILES[m], "read_bytes": MB[m] * 1e6} for m in FILES}
    meta = RunMetadata(run_id="synthetic", library={"syscall_profile": {"modules": profile}})
    result = analyze_frame(pd.concat([df, native], ignore_index=True), n_resamples=300, metadata=meta)
    cpu = result.cpu_ratios
    assert set(cpu["runtime"]) == {"gvisor"} and set(cpu["baseline"]) == {"runc"}  # native: no cgroup, no cpu_ms
    wall = result.ratios[(result.ratios["runtime"] == "gvisor") & (result.ratios["statistic"] == "median")]
    both = cpu[cpu["statistic"] == "median"].merge(wall, on="module", suffixes=("_cpu", "_wall"))
    assert np.allclose(both["ratio_cpu"], 1.5 * both["ratio_wall"], rtol=0.15)
    assert (both["ci_low_cpu"] < both["ratio_cpu"]).all() and (both["ratio_cpu"] < both["ci_high_cpu"]).all()
    assert set(result.costmodel_terms["metric"]) == {"load_ms", "cpu_ms"}
    assert set(result.cost_models) == {"load_ms", "cpu_ms"}
    pen = predict_penalty_ms(500, 1.0, "gvisor", "runc", result.cost_models["cpu_ms"])
    assert pen.ci_low_ms < pen.estimate_ms < pen.ci_high_ms and pen.metric == "cpu_ms"
    with pytest.raises(AnalysisError, match="has no cpu_ms values"):
        ratios(pd.concat([df, native]), baseline="native", metric="cpu_ms", n_resamples=200)
    with pytest.raises(AnalysisError, match="metric 'rss' is not one of"):
        ratios(df, metric="rss", n_resamples=200)


def test_a_module_with_one_batch_gives_no_interval_rather_than_a_point():
    one = synthetic(8, reps=1)
    model = fit_cost_model(one, features(), n_resamples=200)
    assert model.terms["ci_low"].isna().all() and model.terms["estimate"].notna().all()
    assert any("one batch: no interval" in n for n in model.notes)
    pen = predict_penalty_ms(100, 1.0, "gvisor", "runc", model)
    assert np.isfinite(pen.estimate_ms) and np.isnan(pen.ci_low_ms)
