"""The runner's contract with a run directory: resume re-plans from what was recorded, checks what must match,
native honours the deadline, adaptive sequence runs look at every module, results land in the project's runs/.

No containers here: the probe is replaced by a stub (as in tests/test_adaptive.py) and the catalog by a
fixed one, except for the native deadline, which runs real Node processes on the host.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path
from unittest import mock

import numpy as np
import pytest
from reliability_helpers import FX_HANGS, FX_OK, fx_library  # noqa: F401  (fixture)

from shlib.collect import runner
from shlib.collect.probe import Outcome
from shlib.collect.runtimes import Runtime
from shlib.errors import Interrupted, ResultsError
from shlib.paths import repo_root
from shlib.results.store import load_frame, read_metadata
from shlib.spec.plan import plan
from shlib.spec.spec import make_spec

MODULES = ["lodash@4.17.20", "react@16.14.0"]


def stub_execute(batch, prep):
    rng = np.random.default_rng(batch.batch_id)
    out = []
    for slot in range(batch.cell.concurrency):
        results = [{"module": m.split("@")[0], "ok": True, "load_ms": float(np.exp(rng.normal(3.0, 0.3))), "files": 1}
                   for m in batch.cell.modules]
        out.append(Outcome(slot=slot, payload={"probe": "load", "node": "v0-stub", "go_wall_ms": 0.0,
                                               "results": results}, exit_code=0, wall_ms=1.0))
    return out


def runtime(name, kind, available=True, reason="", version="1.0"):
    return Runtime(name=name, kind=kind, available=available, reason=reason, version=version,
                   path="node" if kind == "native" else name)


@pytest.fixture
def stub_library(tmp_path):
    lib = mock.Mock()
    lib.path = tmp_path
    lib.tree_hash = "tree-1"
    lib.manifest = {"modules": [{"module": "lodash", "version": "4.17.20"}, {"module": "react", "version": "16.14.0"}],
                    "tree_hash": "tree-1"}
    return lib


@pytest.fixture
def engine_free(stub_library):
    """The runner with a fixed catalog and no engine: images and volumes are not needed by the stub probe."""
    catalog = {"native": runtime("native", "native"), "runc": runtime("runc", "runc"),
               "runsc-a": runtime("runsc-a", "gvisor")}

    def prepare(spec, runtimes, client, run_id, library=None):
        return runner.Prepared(client=client, runtimes=runtimes, library=library or stub_library,
                               timeout_s=spec.timeout_s)

    with mock.patch.object(runner, "execute", stub_execute), mock.patch.object(runner, "prepare", prepare), \
            mock.patch.object(runner, "catalog", lambda client: dict(catalog)), \
            mock.patch.object(runner, "connect", lambda **kw: mock.MagicMock()), \
            mock.patch.object(runner, "engine_facts", lambda client: {}), \
            mock.patch.object(runner, "remove_leftovers", lambda client, run_id: 0):
        yield catalog


def spec(**extra):
    return make_spec({"name": "resume", "runtimes": "all", "modules": MODULES, "concurrency": [1], "repetitions": 3,
                      "seed": 5, **extra})


def interrupted_run(out: Path, after: int, library) -> None:
    calls = {"n": 0}

    def execute(batch, prep):
        calls["n"] += 1
        if calls["n"] > after:
            raise KeyboardInterrupt
        return stub_execute(batch, prep)

    with mock.patch.object(runner, "execute", execute), pytest.raises(Interrupted):
        runner.run_experiment(spec(), out, progress=False, library=library)


def test_resume_of_runtimes_all_keeps_the_recorded_set_when_the_catalog_changed(engine_free, stub_library, tmp_path):
    """Hole: resume recomputed 'all' from today's catalog; batch ids (positions in the plan) pointed elsewhere."""
    out = tmp_path / "run"
    interrupted_run(out, 7, stub_library)
    engine_free["crun"] = runtime("crun", "crun")  # registered since
    engine_free["runsc-a"] = runtime("runsc-a", "gvisor", available=False, reason="smoke test failed")
    runner.run_experiment(spec(), out, resume=True, progress=False, library=stub_library)

    frame = load_frame(out)
    meta = read_metadata(out)
    assert meta.runtime_set == ["native", "runc", "runsc-a"] and meta.status == "complete"
    expected = {b.batch_id: (b.cell.runtime, b.cell.modules[0].split("@")[0])
                for b in plan(make_spec({**spec().as_dict()}), meta.runtime_set)}
    got = frame.groupby("batch_id")[["runtime", "module"]].first()
    assert {int(b): (str(r.runtime), str(r.module)) for b, r in got.iterrows()} == expected
    assert "crun" not in set(frame["runtime"].astype(str))
    gone = frame[frame["runtime"] == "runsc-a"]
    assert (gone["status"] == "ok").any(), "runsc-a's batches measured before the interruption are kept"
    skipped = gone[gone["status"] == "skipped"]
    assert len(skipped) and skipped["error"].str.contains("unavailable when the run was resumed: smoke test "
                                                          "failed").all()
    assert "runsc-a" in meta.skipped_runtimes


def test_resume_refuses_a_runtime_whose_build_changed(engine_free, stub_library, tmp_path):
    out = tmp_path / "run"
    interrupted_run(out, 3, stub_library)
    engine_free["runsc-a"] = runtime("runsc-a", "gvisor", version="2.0")
    with pytest.raises(ResultsError, match=r"runtime runsc-a changed since run .* \(version '1.0', flags \[\] then; "
                                           r"'2.0', \[\] now\)"):
        runner.run_experiment(spec(), out, resume=True, progress=False, library=stub_library)


def test_resume_refuses_another_library(engine_free, stub_library, tmp_path):
    out = tmp_path / "run"
    interrupted_run(out, 3, stub_library)
    stub_library.tree_hash = "tree-2"
    with pytest.raises(ResultsError, match=r"shared library changed since run .* \(tree hash tree-1 then, tree-2 now"):
        runner.run_experiment(spec(), out, resume=True, progress=False, library=stub_library)


def test_adaptive_sequence_runs_extend_while_any_module_is_open(engine_free, stub_library, tmp_path):
    """Hole: in sequence mode the adaptive rule looked at the first module only."""

    def execute(batch, prep):
        rng = np.random.default_rng(batch.batch_id)
        results = [{"module": "lodash", "ok": True, "load_ms": float(np.exp(rng.normal(3.0, 0.001))), "files": 1},
                   {"module": "react", "ok": True, "load_ms": float(np.exp(rng.normal(3.0, 1.0))), "files": 1}]
        return [Outcome(slot=0, payload={"probe": "load", "node": "v0", "go_wall_ms": 0.0, "results": results},
                        exit_code=0, wall_ms=1.0)]

    with mock.patch.object(runner, "execute", execute):
        out = runner.run_experiment(spec(runtimes=["native"], load_mode="sequence", target_rel_halfwidth=0.1,
                                         min_repetitions=4, repetitions=9), tmp_path / "run", progress=False,
                                    library=stub_library)
    assert load_frame(out)["batch_id"].nunique() == 9  # lodash was done at 4, react never


def test_default_results_directory_is_the_projects_runs_not_the_notebooks_folder(engine_free, stub_library,
                                                                                 monkeypatch):
    """Hole: a notebook's default output landed in notebooks/runs/ (JupyterLab runs it inside notebooks/)."""
    monkeypatch.delenv("SHLIB_RUNS", raising=False)
    monkeypatch.chdir(repo_root() / "notebooks")
    out = runner.run_experiment(spec(runtimes=["native"], repetitions=1), None, progress=False, library=stub_library)
    try:
        assert out.parent == repo_root() / "runs"
        assert not (repo_root() / "notebooks" / "runs").exists()
    finally:
        shutil.rmtree(out)


def test_native_only_runs_honour_timeout_s(fx_library, tmp_path):  # noqa: F811
    """Hole: native trials had a fixed 60 s deadline whatever the spec said."""
    started = time.monotonic()
    out = runner.run_experiment({"name": "native-deadline", "runtimes": ["native"], "modules": [FX_HANGS, FX_OK],
                                 "repetitions": 1, "seed": 1, "timeout_s": 3}, tmp_path / "run", progress=False,
                                library=fx_library)
    frame = load_frame(out).set_index("module")
    assert frame.loc[FX_HANGS, "status"] == "timeout" and "within 3 s" in frame.loc[FX_HANGS, "error"]
    assert frame.loc[FX_OK, "status"] == "ok"
    assert time.monotonic() - started < 30  # 60 s would have been the old fixed deadline


def test_cli_resume_without_a_spec_refuses_changes_instead_of_dropping_them(tmp_path):
    """Hole: 'shlib run --resume --out D --set ...' silently ignored --set and --target-ci."""
    cmd = [sys.executable, "-m", "shlib.cli", "run", "--resume", "--out", str(tmp_path), "--set", "repetitions=9",
           "--target-ci", "0.1"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert "--set repetitions=9, --target-ci would change it" in done.stderr
