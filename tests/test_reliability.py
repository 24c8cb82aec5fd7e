# ruff: noqa: F811  (pytest fixtures imported from reliability_helpers are redefined as arguments)
"""Reliability: hangs, start failures, crashes, interrupts, a dying engine and kill -9 lose
nothing that was measured, leave nothing behind, and ``--resume`` completes the plan.

Against the real engine (marked ``docker``): skipped with the reason where none can be
reached, failed when CI=true. Some tests change the host for a moment (register a runtime
and reload dockerd; kill dockerd and start it again): each restores it in a ``finally``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import random
import signal
import time
from pathlib import Path

import pandas as pd
import pytest
from reliability_helpers import (  # noqa: F401  (fixtures)
    FX_ESM,
    FX_HANGS,
    FX_MISSING_DEP,
    FX_MISSING_MAIN,
    FX_OK,
    FX_THROWS,
    assert_no_containers,
    dockerd_pid,
    engine,
    ensure_engine_up,
    extra_runtimes,
    fx_library,
    kill_group,
    processes_matching,
    read_meta,
    run_containers,
    run_shlib,
    start_shlib,
    wait_for,
    write_spec,
)

import shlib.collect.runner as runner
from shlib.results.store import load_results
from shlib.spec.plan import plan
from shlib.spec.spec import make_spec

pytestmark = [pytest.mark.docker]

#: A module from the registry for the CLI runs (the CLI installs the spec's modules itself).
CLI_MODULE = "lodash@4.17.20"


def force_available(monkeypatch, *names: str) -> None:
    """Let the runner use runtimes its catalog marks unavailable (a hanging kvm, a broken binary)."""
    real = runner.catalog

    def forced(client, recheck=False):
        known = real(client, recheck)
        for name in names:
            known[name] = dataclasses.replace(known[name], available=True, reason="")
        return known

    monkeypatch.setattr(runner, "catalog", forced)


def expected_trials(spec_dict: dict, runtimes: list[str]) -> set[tuple[int, int, str]]:
    """(batch_id, slot, module) of every module load the plan holds."""
    spec = make_spec(spec_dict)
    out = set()
    for batch in plan(spec, runtimes):
        for slot in range(batch.cell.concurrency):
            for module in batch.cell.modules:
                out.add((batch.batch_id, slot, module.split("@")[0]))
    return out


def assert_complete(out: Path, spec_dict: dict, runtimes: list[str]) -> pd.DataFrame:
    """The results hold every planned module load exactly once, and the run says complete."""
    frame, meta = load_results(out)
    assert meta.status == "complete", meta.status
    assert (out / "results.parquet").exists() and not list((out / "parts").glob("batch-*.parquet"))
    got = list(zip(frame["batch_id"].astype(int), frame["slot"].astype(int), frame["module"].astype(str),
                   strict=True))
    assert len(got) == len(set(got)), "duplicate trials"
    assert set(got) == expected_trials(spec_dict, runtimes), "missing or extra trials"
    return frame


# --- 1. a runtime that hangs -----------------------------------------------------------------------

@pytest.mark.timeout(240)
def test_hanging_runtime_is_timed_out_reaped_and_skipped(engine, fx_library, monkeypatch, tmp_path, capsys):
    from shlib.collect.runtimes import catalog

    kvm = [n for n, rt in catalog(engine).items() if rt.kind == "gvisor" and rt.platform == "kvm"]
    if not kvm:
        pytest.skip("no runsc kvm runtime is registered here (it needs /dev/kvm); nothing hangs for real")
    hang = sorted(kvm)[-1]
    force_available(monkeypatch, hang)
    spec = {"name": "hang", "runtimes": [hang, "runc"], "modules": [FX_OK], "concurrency": [1], "repetitions": 4,
            "timeout_s": 4, "max_consecutive_failures": 2, "seed": 3}
    t0 = time.monotonic()
    out = runner.run_experiment(spec, tmp_path / "run", library=fx_library, progress=True)
    elapsed = time.monotonic() - t0
    frame = assert_complete(out, spec, [hang, "runc"])
    meta = read_meta(out)

    hung = frame[frame["runtime"] == hang]
    assert list(hung["status"]) == ["timeout", "timeout", "skipped", "skipped"]
    assert hung["error"].iloc[0].startswith("the runtime did not start the container within")
    assert hung["error"].iloc[2].startswith("skipped after 2 consecutive failed trials; last: the runtime did not")
    assert set(frame.loc[frame["runtime"] == "runc", "status"]) == {"ok"}  # the run went on
    assert meta.skipped_runtimes[hang] == hung["error"].iloc[2]
    screen = capsys.readouterr()
    assert f"shlib: runtime {hang} skipped after 2 consecutive failed trials" in screen.out + screen.err
    # Bounded: 2 trials x (4 s + 2 s start allowance) plus cleanup, not forever.
    assert elapsed < 120, elapsed
    print(f"hang: {elapsed:.1f} s for {len(frame)} rows")
    assert_no_containers(engine, meta.run_id)
    assert wait_for(lambda: not processes_matching("--platform=kvm"), 15), processes_matching("--platform=kvm")


# --- 2. a runtime that fails to start --------------------------------------------------------------

BROKEN_RUNTIME = """#!/bin/sh
# An OCI runtime that refuses to create anything: writes its error where the shim reads it, exits 1.
log=""
while [ $# -gt 0 ]; do
  case "$1" in --log) log="$2"; shift;; esac
  shift
done
msg='shlib-test-broken: this runtime refuses to start containers'
[ -n "$log" ] && printf '{"level":"error","msg":"%s","time":"2024-01-01T00:00:00Z"}\\n' "$msg" >> "$log"
echo "$msg" >&2
exit 1
"""


@pytest.mark.timeout(240)
def test_runtime_that_fails_to_start_keeps_the_engine_message(engine, fx_library, monkeypatch, tmp_path):
    script = tmp_path / "broken-runtime"
    script.write_text(BROKEN_RUNTIME)
    script.chmod(0o755)
    tag = os.urandom(3).hex()
    broken, badflag = f"shlib-test-broken-{tag}", f"runsc-test-badflag-{tag}"
    runtimes = {broken: {"path": str(script)},
                badflag: {"path": "/usr/bin/runsc", "runtimeArgs": ["--network=none", "--no-such-flag"]}}
    if not Path("/usr/bin/runsc").exists():
        runtimes.pop(badflag)
    spec = {"name": "broken", "runtimes": [*runtimes, "runc"], "modules": [FX_OK], "concurrency": [2],
            "repetitions": 2, "timeout_s": 20, "max_consecutive_failures": 2, "seed": 5}
    with extra_runtimes(engine, runtimes):
        force_available(monkeypatch, *runtimes)
        t0 = time.monotonic()
        out = runner.run_experiment(spec, tmp_path / "run", library=fx_library, progress=False)
        elapsed = time.monotonic() - t0
    frame = assert_complete(out, spec, [*runtimes, "runc"])
    meta = read_meta(out)
    rows = frame[frame["runtime"] == broken]
    first = rows[rows["status"] != "skipped"]
    assert set(first["status"]) == {"start_failed"}
    assert first["error"].str.contains("shlib-test-broken: this runtime refuses to start containers").all(), \
        first["error"].iloc[0]
    assert broken in meta.skipped_runtimes
    if badflag in runtimes:
        rows = frame[(frame["runtime"] == badflag) & (frame["status"] != "skipped")]
        assert set(rows["status"]) == {"start_failed"}
        # runsc prints its usage error to stderr, which the shim does not keep: the engine's own
        # message names the runtime and its exit status.
        assert rows["error"].str.contains(f"OCI runtime create failed.*{badflag} did not terminate successfully: "
                                          "exit status 2").all(), rows["error"].iloc[0]
    assert set(frame.loc[frame["runtime"] == "runc", "status"]) == {"ok"}
    print(f"start failures: {elapsed:.1f} s; messages: {sorted(set(frame['error'].dropna().str[:160]))}")
    assert_no_containers(engine, meta.run_id)


# --- 7. modules that are missing, throw, are ESM-only or hang --------------------------------------

@pytest.mark.timeout(240)
def test_bad_modules_are_recorded_per_module_isolated(engine, fx_library, tmp_path):
    modules = [FX_OK, FX_ESM, FX_THROWS, FX_MISSING_DEP, FX_MISSING_MAIN, FX_HANGS]
    spec = {"name": "modules-isolated", "runtimes": ["runc"], "modules": modules, "concurrency": [1],
            "repetitions": 2, "timeout_s": 4, "max_consecutive_failures": 1, "seed": 11}
    t0 = time.monotonic()
    out = runner.run_experiment(spec, tmp_path / "run", library=fx_library, progress=False)
    frame = assert_complete(out, spec, ["runc"])
    by = {m: g for m, g in frame.groupby("module", observed=True)}
    assert set(by[FX_OK]["status"]) == {"ok"} and by[FX_OK]["load_ms"].notna().all()
    assert set(by[FX_ESM]["status"]) == {"ok"} and by[FX_ESM]["load_ms"].notna().all()
    assert set(by[FX_THROWS]["status"]) == {"error"}
    assert by[FX_THROWS]["error"].str.contains("shlib-fx-throws: boom while loading").all()
    for missing in (FX_MISSING_DEP, FX_MISSING_MAIN):
        assert set(by[missing]["status"]) == {"error"}
        assert by[missing]["error"].str.startswith("MODULE_NOT_FOUND: Cannot find module").all()
    assert set(by[FX_HANGS]["status"]) == {"timeout"}
    assert by[FX_HANGS]["error"].str.contains("did not finish within 4 s of go").all()
    # A hanging module is the module's failure: runc is not skipped (max_consecutive_failures=1).
    assert "skipped" not in set(frame["status"]) and not read_meta(out).skipped_runtimes
    print(f"isolated modules: {time.monotonic() - t0:.1f} s")
    assert_no_containers(engine, read_meta(out).run_id)


@pytest.mark.timeout(240)
def test_bad_modules_in_sequence_mode(engine, fx_library, tmp_path):
    # Without a hang: one process loads them all, each recorded on its own, the others measured.
    modules = [FX_THROWS, FX_OK, FX_MISSING_DEP, FX_ESM, FX_MISSING_MAIN]
    spec = {"name": "modules-sequence", "runtimes": ["runc"], "modules": modules, "concurrency": [2],
            "load_mode": "sequence", "repetitions": 1, "timeout_s": 4, "seed": 12}
    out = runner.run_experiment(spec, tmp_path / "run", library=fx_library, progress=False)
    frame = assert_complete(out, spec, ["runc"])
    status = frame.groupby("module", observed=True)["status"].agg(set).to_dict()
    assert status == {FX_THROWS: {"error"}, FX_OK: {"ok"}, FX_MISSING_DEP: {"error"}, FX_ESM: {"ok"},
                      FX_MISSING_MAIN: {"error"}}
    assert (frame.groupby("trial_id")["position"].agg(list) == pd.Series([[0, 1, 2, 3, 4]] * 2, index=[
        "b000000-s000", "b000000-s001"])).all()

    # With a hang: the process never reports, so every module of it is a timeout, saying why.
    spec = {**spec, "name": "modules-sequence-hang", "modules": [FX_OK, FX_HANGS, FX_THROWS]}
    out = runner.run_experiment(spec, tmp_path / "run-hang", library=fx_library, progress=False)
    frame = assert_complete(out, spec, ["runc"])
    assert set(frame["status"]) == {"timeout"} and len(frame) == 6
    assert frame["error"].str.contains("in sequence mode a module that does not finish loading stops its whole "
                                       "process").all()
    assert_no_containers(engine, read_meta(out).run_id)


# --- 9. load: 64 containers at once ----------------------------------------------------------------

@pytest.mark.timeout(300)
def test_64_containers_at_once(engine, fx_library, tmp_path, caplog):
    spec = {"name": "load64", "runtimes": ["runc"], "modules": [FX_OK], "concurrency": [64], "repetitions": 1,
            "timeout_s": 120, "seed": 13}
    caplog.set_level(logging.WARNING)
    t0 = time.monotonic()
    out = runner.run_experiment(spec, tmp_path / "run", library=fx_library, progress=False)  # its own client
    elapsed = time.monotonic() - t0
    frame = assert_complete(out, spec, ["runc"])
    assert len(frame) == 64 and set(frame["status"]) == {"ok"}, frame["error"].dropna().unique()[:3]
    pool_warnings = [r.getMessage() for r in caplog.records if "pool" in r.getMessage().lower()]
    assert not pool_warnings, pool_warnings[:3]
    print(f"64 containers: {elapsed:.1f} s; load_ms median {frame['load_ms'].median():.1f}, "
          f"batch skew {frame['batch_skew_ms'].iloc[0]:.1f} ms, wall_ms max {frame['wall_ms'].max():.0f}")
    assert_no_containers(engine, read_meta(out).run_id)


# --- 3. interrupts ---------------------------------------------------------------------------------

def _cli_spec(tmp_path: Path, name: str, **extra) -> tuple[Path, dict]:
    fields = {"name": name, "runtimes": ["runc"], "modules": [CLI_MODULE], "concurrency": [4], "repetitions": 6,
              "timeout_s": 60, "seed": 17, **extra}
    return write_spec(tmp_path / f"{name}.yaml", **fields), fields


def _wait_mid_batch(engine, proc, out: Path, min_parts: int = 1, timeout_s: float = 150) -> str:
    """Wait until ``min_parts`` batches are on disk and the next batch's containers exist; the run id."""
    deadline = time.monotonic() + timeout_s
    run_id = None
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"shlib exited early ({proc.returncode}): {proc.stderr.read()[-3000:]}"
        if run_id is None and (out / "metadata.json").exists():
            run_id = read_meta(out).run_id
        if run_id and len(list((out / "parts").glob("batch-*.parquet"))) >= min_parts \
                and run_containers(engine, run_id):
            return run_id
        time.sleep(0.05)
    raise AssertionError("the run never got to a batch in flight")


@pytest.mark.timeout(300)
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupt_mid_batch_then_resume(engine, tmp_path, signum):
    spec_file, fields = _cli_spec(tmp_path, f"interrupt-{signum.name.lower()}")
    out = tmp_path / "run"
    proc = start_shlib(["run", str(spec_file), "--out", str(out)])
    try:
        run_id = _wait_mid_batch(engine, proc, out, min_parts=2)
        if signum == signal.SIGINT:
            os.killpg(proc.pid, signum)  # Ctrl-C: the whole foreground group
        else:
            os.kill(proc.pid, signum)
        _, stderr = proc.communicate(timeout=90)
    finally:
        kill_group(proc)
    assert proc.returncode == 130, stderr[-3000:]
    assert f"interrupted ({signum.name})" in stderr and f"shlib run --resume --out {out}" in stderr, stderr[-2000:]
    assert_no_containers(engine, run_id)  # the batch in flight was removed before exiting
    frame, meta = load_results(out)
    assert meta.status == "interrupted"
    assert frame["batch_id"].nunique() >= 2 and set(frame["status"]) == {"ok"}
    kept = set(frame["trial_id"])

    done = run_shlib(["run", "--resume", "--out", str(out)])
    assert done.returncode == 0, done.stderr[-3000:]
    frame = assert_complete(out, fields, ["runc"])
    assert kept <= set(frame["trial_id"])
    assert read_meta(out).run_id == run_id and len(read_meta(out).resumed_at) == 1
    assert_no_containers(engine, run_id)


# --- 5. kill -9 at a random moment -----------------------------------------------------------------

@pytest.mark.timeout(300)
def test_kill_9_at_a_random_moment_then_resume(engine, tmp_path):
    seed = int(os.environ.get("SHLIB_KILL_SEED", random.randrange(10**6)))
    delay = random.Random(seed).uniform(0.0, 6.0)
    print(f"kill -9 after {delay:.2f} s of collection (SHLIB_KILL_SEED={seed})")
    spec_file, fields = _cli_spec(tmp_path, "kill9")
    out = tmp_path / "run"
    proc = start_shlib(["run", str(spec_file), "--out", str(out)])
    try:
        assert wait_for(lambda: (out / "metadata.json").exists() or proc.poll() is not None, 150)
        run_id = read_meta(out).run_id
        time.sleep(delay)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        kill_group(proc)
    frame, meta = load_results(out)  # loads, with every batch written before the kill
    assert meta.status in {"running", "complete"}
    assert frame.empty or set(frame["status"]) == {"ok"}
    kept = set(frame["trial_id"])
    left = len(run_containers(engine, run_id))
    print(f"killed with {frame['batch_id'].nunique()} batches on disk and {left} containers left behind")

    done = run_shlib(["run", "--resume", "--out", str(out)])
    assert done.returncode == 0, done.stderr[-3000:]
    frame = assert_complete(out, fields, ["runc"])
    assert kept <= set(frame["trial_id"])
    assert_no_containers(engine, run_id)  # resume removed what the killed run left behind


# --- 4. the engine dies mid-run --------------------------------------------------------------------

@pytest.mark.timeout(420)
def test_engine_dies_mid_run_then_resume(engine, tmp_path):
    if os.geteuid() != 0 or dockerd_pid() is None:
        pytest.skip("killing and restarting the engine needs root and a dockerd on this host")
    spec_file, fields = _cli_spec(tmp_path, "engine-dies")
    out = tmp_path / "run"
    proc = start_shlib(["run", str(spec_file), "--out", str(out)])
    try:
        run_id = _wait_mid_batch(engine, proc, out, min_parts=2)
        os.kill(dockerd_pid(), signal.SIGKILL)
        t_kill = time.monotonic()
        _, stderr = proc.communicate(timeout=120)
        stop_s = time.monotonic() - t_kill
        assert proc.returncode == 2, stderr[-3000:]
        assert "the Docker engine stopped answering during a batch" in stderr, stderr[-3000:]
        assert f"complete the run with: shlib run --resume --out {out}" in stderr, stderr[-2000:]
        frame, meta = load_results(out)  # intact without the engine
        assert meta.status == "engine_failed" and frame["batch_id"].nunique() >= 2
        assert set(frame["status"]) == {"ok"}
        kept = set(frame["trial_id"])
    finally:
        kill_group(proc)
        ensure_engine_up()
    engine_back = time.monotonic() - t_kill
    print(f"engine killed: shlib stopped {stop_s:.1f} s later; engine back after {engine_back:.1f} s")
    assert wait_for(lambda: _ping(engine), 60)
    done = run_shlib(["run", "--resume", "--out", str(out)])
    assert done.returncode == 0, done.stderr[-3000:]
    frame = assert_complete(out, fields, ["runc"])
    assert kept <= set(frame["trial_id"])
    assert_no_containers(engine, run_id)


def _ping(client) -> bool:
    try:
        return bool(client.ping())
    except Exception:
        return False


# --- a probe that dies before it is ready ----------------------------------------------------------

@pytest.mark.timeout(120)
def test_probe_that_exits_before_ready_is_crashed_at_once_with_its_stderr(engine, fx_library):
    from shlib.collect.docker_batch import ContainerBatch
    from shlib.collect.image import ensure_image
    from shlib.collect.library import MOUNT_POINT, ensure_volume, mount_kwargs

    image = ensure_image(engine, "host")
    run_id = f"test-early-exit-{os.urandom(3).hex()}"
    batch = ContainerBatch(engine, timeout_s=60, labels={"shlib.run_id": run_id})
    kwargs = batch.create_kwargs(image.tag, "runc", (FX_OK,), MOUNT_POINT,
                                 mount_kwargs("volume", fx_library, ensure_volume(engine, fx_library, image)), {})
    kwargs["command"] = ["node", "/no/such/probe.js"]
    t0 = time.monotonic()
    outcomes = batch.run(2, kwargs)
    elapsed = time.monotonic() - t0
    assert elapsed < 30, elapsed  # not the 60 s "not ready" deadline
    for out in outcomes:
        assert out.status == "crashed" and not out.ready and out.exit_code == 1, out
        assert "Cannot find module '/no/such/probe.js'" in out.error, out.error
        assert runner.runtime_failed(out)
    assert_no_containers(engine, run_id)
