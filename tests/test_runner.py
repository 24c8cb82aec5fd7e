"""The runner against the real engine: overlap, per-module errors, resume, nothing left behind."""

from __future__ import annotations

import json

import pytest
from helpers import PAPER_LODASH, assert_run_left_nothing

from shlib.collect.library import install_library
from shlib.collect.runner import run_experiment
from shlib.errors import Interrupted
from shlib.results.store import load_results
from shlib.spec.plan import plan
from shlib.spec.spec import make_spec

pytestmark = pytest.mark.docker


def test_plan_interleaves_runtimes_and_is_reproducible():
    spec = make_spec({"runtimes": ["native", "runc", "runsc-x"], "modules": [PAPER_LODASH], "concurrency": [1, 4],
                      "repetitions": 4, "seed": 7})
    batches = plan(spec, ["native", "runc", "runsc-x"])
    assert batches == plan(spec, ["native", "runc", "runsc-x"])
    assert len(batches) == 3 * 2 * 4 and len({b.batch_id for b in batches}) == len(batches)
    per_rep = [[b.cell for b in batches if b.rep == r] for r in range(4)]
    assert all(sorted(map(repr, cells)) == sorted(map(repr, per_rep[0])) for cells in per_rep)  # blocked
    assert len({tuple(map(repr, cells)) for cells in per_rep}) > 1  # a fresh order each repetition
    assert plan(spec.model_copy(update={"seed": 8}), ["native", "runc", "runsc-x"]) != batches


def test_quick_like_run_overlaps_and_orders_runtimes(client, gvisor_runtimes, tmp_path):
    fastest_gvisor = "runsc-20240729-systrap" if "runsc-20240729-systrap" in gvisor_runtimes else gvisor_runtimes[0]
    spec = {"name": "t-overlap", "runtimes": ["native", "runc", fastest_gvisor], "modules": ["express@4.17.1"],
            "concurrency": [1, 4], "repetitions": 3, "seed": 11}
    out = run_experiment(spec, tmp_path / "run", client=client, progress=False)
    df, meta = load_results(out)
    assert meta.status == "complete" and meta.counts == {"ok": 3 * (1 + 4) * 3}
    assert len(df) == 45 and df["trial_id"].is_unique
    assert set(df["engine_runtime"]) == {"native", "runc", fastest_gvisor}  # the engine used what we asked
    # every row names where it ran: the local engine (its identity in the metadata), or no engine for native
    assert meta.engine["label"] == "default" and meta.engine["kind"] == "docker" and meta.engine["id"]
    assert set(df["engine"]) == {"default"} and set(df["engine_host"]) == {meta.engine["name"]}
    assert (df["engine_kind"] == df["runtime"].astype(str).map(lambda r: "native" if r == "native" else "docker")).all()
    assert set(df["language"].astype(str)) == {"node"} and (df["interpreter_version"] == df["node_version"]).all()
    four = df[df["concurrency"] == 4]
    assert four.groupby("batch_id").size().eq(4).all()
    # the four processes of a batch really load together: they start within a small window
    # compared with how long a load takes
    skew = four.groupby("batch_id")["batch_skew_ms"].first()
    assert skew.median() < 0.25 * four["load_ms"].median(), (skew.median(), four["load_ms"].median())
    started = four.groupby("batch_id")["start_skew_ms"].max()
    assert (started == skew).all()
    # express opens ~300 files: every one crosses gVisor's file-system boundary
    medians = df[df["concurrency"] == 1].groupby("runtime", observed=True)["load_ms"].median()
    assert medians[fastest_gvisor] > 1.2 * medians["runc"], medians
    assert meta.library.tree_hash and meta.images["host"].image_id.startswith("sha256:")
    assert meta.runtimes[fastest_gvisor].args
    assert_run_left_nothing(client, out)


def test_a_module_that_throws_gives_an_error_row_and_the_others_are_measured(client, tmp_path):
    pkg = tmp_path / "thrower"
    pkg.mkdir()
    (pkg / "package.json").write_text(json.dumps({"name": "shlib-test-throws", "version": "1.0.0"}))
    (pkg / "index.js").write_text("throw new Error('boom on load');\n")
    library = install_library([PAPER_LODASH], root=tmp_path / "libs", local={"shlib-test-throws": pkg})
    for mode in ("isolated", "sequence"):
        spec = {"name": f"t-throws-{mode}", "runtimes": ["runc"], "modules": ["shlib-test-throws", PAPER_LODASH],
                "load_mode": mode, "repetitions": 2, "seed": 3}
        out = run_experiment(spec, tmp_path / mode, client=client, progress=False, library=library)
        df, _ = load_results(out)
        bad = df[df["module"] == "shlib-test-throws"]
        good = df[df["module"] == "lodash"]
        assert (bad["status"] == "error").all() and bad["error"].str.contains("boom on load").all()
        assert bad["load_ms"].isna().all()
        assert (good["status"] == "ok").all() and (good["load_ms"] > 0).all() and len(good) == 2
        if mode == "sequence":
            assert (df.groupby("trial_id").size() == 2).all()  # both modules in one process
        assert_run_left_nothing(client, out)


def test_interrupted_run_resumes_to_the_full_plan_without_duplicates(client, tmp_path):
    spec = {"name": "t-resume", "runtimes": ["native", "runc"], "modules": [PAPER_LODASH], "concurrency": [1, 2],
            "repetitions": 3, "seed": 5}
    seen: list[int] = []

    def interrupt_after_five(batch, rows):
        seen.append(batch.batch_id)
        if len(seen) == 5:
            raise KeyboardInterrupt("test")

    out = tmp_path / "run"
    with pytest.raises(Interrupted, match="--resume --out"):
        run_experiment(spec, out, client=client, progress=False, on_batch=interrupt_after_five)
    partial, meta = load_results(out)
    assert meta.status == "interrupted" and partial["batch_id"].nunique() == 5
    assert_run_left_nothing(client, out)
    again: list[int] = []
    run_experiment(spec, out, resume=True, client=client, progress=False,
                   on_batch=lambda b, rows: again.append(b.batch_id))
    assert not set(again) & set(seen)  # nothing repeated
    df, meta = load_results(out)
    assert meta.status == "complete" and len(meta.resumed_at) == 1
    assert df["batch_id"].nunique() == 2 * 2 * 3
    assert len(df) == 2 * (1 + 2) * 3 and df["trial_id"].is_unique
    assert (df["status"] == "ok").all()
    assert_run_left_nothing(client, out)


def test_out_dir_holding_another_run_is_refused_before_anything_runs(client, tmp_path):
    spec = {"name": "t-first", "runtimes": ["native"], "modules": [PAPER_LODASH], "repetitions": 1, "seed": 1}
    out = run_experiment(spec, tmp_path / "run", client=client, progress=False)
    from shlib.errors import ResultsError

    with pytest.raises(ResultsError, match="already holds run"):
        run_experiment(spec, out, client=client, progress=False)
    with pytest.raises(ResultsError, match="different spec"):
        run_experiment({**spec, "repetitions": 2}, out, resume=True, client=client, progress=False)
    assert len(load_results(out)[0]) == 1  # nothing measured is lost


def test_mount_cache_and_node_are_factors_of_the_plan(client, tmp_path):
    """Every mount mode and cache state yields its own rows; the library is found in each."""
    spec = {"name": "t-factors", "runtimes": ["native", "runc"], "modules": [PAPER_LODASH], "repetitions": 1,
            "mount": ["volume", "bind", "image"], "cache": ["warm", "cold"], "seed": 9}
    out = run_experiment(spec, tmp_path / "run", client=client, progress=False)
    df, meta = load_results(out)
    assert (df["status"] == "ok").all(), df["error"].dropna().tolist()
    runc = df[df["runtime"] == "runc"]
    assert sorted(zip(runc["mount"], runc["cache"], strict=True)) == sorted(
        (m, c) for m in ("volume", "bind", "image") for c in ("warm", "cold"))
    assert set(df.loc[df["runtime"] == "native", "mount"]) == {"host"}  # native has one mount: the host
    assert len(df[df["runtime"] == "native"]) == 2  # warm and cold
    assert meta.library_images["host"].startswith("shlib/node-lib:")
    assert_run_left_nothing(client, out)
