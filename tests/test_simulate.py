"""shlib.simulate: synthetic results in the real schema, with known ratios."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from shlib.results.schema import COLUMNS
from shlib.results.store import load_results
from shlib.simulate import Scenario, simulate_results, write_results_dir


def test_frame_has_the_results_schema_and_round_trips(tmp_path):
    frame = simulate_results(seed=1, concurrency=(1, 2))
    assert list(frame.columns) == COLUMNS
    write_results_dir(frame, tmp_path / "run")
    loaded, meta = load_results(tmp_path / "run")
    assert meta.simulated is True
    pd.testing.assert_frame_equal(loaded, frame, check_categorical=False)


def test_same_seed_same_frame_other_seed_other_frame():
    a, b, c = simulate_results(seed=5), simulate_results(seed=5), simulate_results(seed=6)
    pd.testing.assert_frame_equal(a, b)
    assert not np.allclose(a["load_ms"], c["load_ms"])


def test_large_sample_ratio_matches_the_true_ratio():
    scenario = Scenario(speeds={"runc": 1.0, "runsc": 4.0}, modules={"m": 50.0}, trials_per_group=4000,
                        contention={"runsc": 0.1}, concurrency=(1, 3))
    frame = scenario.frame(seed=2)
    for conc in (1, 3):
        med = frame[frame.concurrency == conc].groupby("runtime", observed=True)["load_ms"].median()
        truth = scenario.true_ratio("runsc", "runc", conc)
        assert truth == pytest.approx(4.0 * np.exp(0.1 * (conc - 1)))
        assert med["runsc"] / med["runc"] == pytest.approx(truth, rel=0.05)


def test_batch_effect_makes_trials_of_a_batch_alike():
    def between_share(batch_sd: float) -> float:
        frame = simulate_results(Scenario(modules={"m": 50.0}, concurrency=(4,), trials_per_group=800,
                                          batch_sd=batch_sd, sigma=0.3), seed=3)
        logs = np.log(frame["load_ms"]).groupby([frame["runtime"], frame["batch_id"]], observed=True)
        return float(logs.mean().groupby(level=0, observed=True).var().mean())

    assert between_share(0.0) < 0.04  # only sampling noise of batch means: 0.3^2 / 4
    assert between_share(0.5) > 0.2   # 0.5^2 + noise


def test_batches_are_shuffled_and_one_runtime_each():
    frame = simulate_results(seed=4, concurrency=(2,))
    per_batch = frame.groupby("batch_id")["runtime"].nunique()
    assert (per_batch == 1).all()
    order = frame.drop_duplicates("batch_id").sort_values("batch_id")["runtime"].astype(str).tolist()
    assert order != sorted(order)  # interleaved, not all runc first


def test_failures_and_sequence_mode():
    frame = simulate_results(seed=1, fail=["runsc-sim"], fail_rate=0.1, load_mode="sequence", concurrency=(2,))
    runsc = frame[frame.runtime == "runsc-sim"]
    assert (runsc["status"] == "error").all() and runsc["load_ms"].isna().all()
    runc = frame[frame.runtime == "runc"]
    assert 0.0 < (runc["status"] == "error").mean() < 0.3
    assert (frame.groupby("batch_id")["module"].nunique() == 3).all()  # a process loads every module
    with pytest.raises(ValueError, match="load_mode"):
        simulate_results(load_mode="bogus")


def test_harder_conditions_keep_the_true_ratio_of_medians():
    """Heavy tails, drift, bimodal oversubscribed batches and timeouts below the median leave each cell's
    true median ratio as Scenario.true_ratio states; timeouts fall on the slow runtime."""
    scenario = Scenario(speeds={"runc": 1.0, "runsc": 4.0}, modules={"a": 50.0, "b": 50.0}, concurrency=(1, 4),
                        module_speeds={"runsc": {"b": 2.0}}, trials_per_group=4000, sigma=0.3, tails_df=3,
                        drift=0.6, batch_sd=0.1, cores=2, oversubscribed_shift=0.5, deadline_ms=600.0)
    frame = scenario.frame(seed=3)
    timeouts = frame[frame.status == "timeout"]
    rate = (frame["status"] == "timeout").groupby(frame["runtime"], observed=True).mean()
    assert rate["runsc"] > 0.05 and rate["runc"] < rate["runsc"] / 10 and timeouts["load_ms"].isna().all()
    for (module, conc), cell in frame.groupby(["module", "concurrency"], observed=True):
        # censored trials are slower than every ok one: count them at +inf for the median
        values = cell["load_ms"].fillna(np.inf)
        med = values.groupby(cell["runtime"], observed=True).median()
        truth = scenario.true_ratio("runsc", "runc", conc, module)
        assert truth == pytest.approx(4.0 * (2.0 if module == "b" else 1.0))
        assert med["runsc"] / med["runc"] == pytest.approx(truth, rel=0.08), (module, conc)
    crowded = frame[frame.concurrency == 4]
    batch_means = np.log(crowded["load_ms"]).groupby(crowded["batch_id"]).mean()
    assert batch_means.std() > 0.4  # +-0.5 shifts on top of the rest
