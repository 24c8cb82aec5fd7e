"""Real engines: a second dockerd named with --engine, runs on two engines merged, an engine lost mid-campaign,
and Podman's Docker API (where scripts/setup-podman.sh has started it; ``make test`` does).

Kept light: one module, one container at a time, no native (the full suite stays short).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from engines_real import SecondEngine
from helpers import PAPER_LODASH, no_engine

pytestmark = pytest.mark.docker

PODMAN_SOCKET = "/run/shlib-podman.sock"
GVISOR = "runsc-20240729-systrap"


def _shlib(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "shlib.cli", *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})


def _spec(tmp_path: Path, name: str, runtimes: list[str], repetitions: int = 2, **extra) -> Path:
    spec = {"name": name, "runtimes": runtimes, "modules": [PAPER_LODASH], "concurrency": [1],
            "repetitions": repetitions, "seed": 5, "timeout_s": 60, **extra}
    path = tmp_path / f"{name}.yaml"
    path.write_text(json.dumps(spec))
    return path


@pytest.fixture(scope="module")
def second_engine(client):
    """A second dockerd beside the main one (the main engine must be up: ``client``)."""
    if os.geteuid() != 0 or not shutil.which("dockerd"):
        no_engine("a second dockerd needs root and dockerd")
    engine = SecondEngine()
    try:
        engine.start()
    except RuntimeError as exc:
        engine.stop()
        pytest.fail(str(exc))
    yield engine
    engine.stop()
    assert not engine.root.exists() and not engine.own_processes()


@pytest.fixture(scope="module")
def gvisor(known_runtimes) -> str:
    if not known_runtimes.get(GVISOR) or not known_runtimes[GVISOR].available:
        no_engine(f"{GVISOR} is not available")
    return GVISOR


def test_a_run_on_a_second_engine_merges_with_one_on_the_default_engine(tmp_path, second_engine, gvisor, client):
    spec = _spec(tmp_path, "two-engines", ["runc", gvisor])
    on_second, on_default = tmp_path / "second", tmp_path / "default"
    done = _shlib("run", str(spec), "--engine", second_engine.url, "--out", str(on_second))
    assert done.returncode == 0, done.stderr[-3000:]
    done = _shlib("run", str(spec), "--out", str(on_default))
    assert done.returncode == 0, done.stderr[-3000:]
    second = json.loads((on_second / "metadata.json").read_text())
    default = json.loads((on_default / "metadata.json").read_text())
    assert second["engine"]["label"] == second_engine.url and default["engine"]["label"] == "default"
    assert second["engine"]["id"] != default["engine"]["id"] and second["engine"]["local"] is True
    assert second["status"] == default["status"] == "complete"
    # the image and the library reached the second engine through its API
    import docker

    other = docker.DockerClient(base_url=second_engine.url)
    assert other.images.get(second["images"]["host"]["tag"]).id == second["images"]["host"]["image_id"]
    assert other.volumes.get(second["volume"]).attrs["Labels"]["shlib.tree_hash"] == second["library"]["tree_hash"]
    assert not other.containers.list(all=True, filters={"label": "shlib.managed"})
    other.close()

    merged = tmp_path / "merged"
    done = _shlib("analyze", str(on_default), str(on_second), "--out", str(merged))
    assert done.returncode == 0, done.stderr[-3000:]
    import pandas as pd

    from shlib.results.store import load_results

    frame, metas = load_results([on_default, on_second])
    assert set(frame["engine"]) == {"default", second_engine.url}
    assert set(frame["runtime"]) == {"runc", gvisor} and (frame["status"] == "ok").all()
    engines = pd.read_csv(merged / "engines.csv")
    assert sorted(engines["engine"]) == sorted(["default", second_engine.url])
    assert (engines["runtime"] == gvisor).all() and (engines["n_engines"] == 2).all()
    ratios = pd.read_csv(merged / "ratios.csv")
    assert set(ratios["engine"]) == {"default", second_engine.url}  # one ratio per engine, never across


def test_bad_and_unreachable_engines_are_refused_before_anything_starts(tmp_path):
    spec = _spec(tmp_path, "bad", ["runc"])
    for engine, why in (("tcp://localhost:99999", "port"), ("unix://relative.sock", "absolute path"),
                        ("unix:///run/shlib-no-such-engine.sock", "cannot reach the engine")):
        out = tmp_path / "out"
        done = _shlib("run", str(spec), "--engine", engine, "--out", str(out), timeout=120)
        assert done.returncode == 2 and "--engine" in done.stderr and why in done.stderr, done.stderr
        assert not out.exists()


def test_losing_an_engine_mid_campaign_keeps_its_batches_and_the_other_engine_completes(tmp_path, client):
    """Engines: a second dockerd (killed after its first batches), then the default engine."""
    if os.geteuid() != 0 or not shutil.which("dockerd"):
        no_engine("a second dockerd needs root and dockerd")
    lost = SecondEngine(socket="/run/shlib-test-dockerd-lost.sock").start()
    campaign = tmp_path / "campaign"
    try:
        spec = _spec(tmp_path, "losing", ["runc"], repetitions=12, engines=[lost.url, "default"])
        parts = campaign / "engines" / f"01-{lost.url.replace('unix:///', 'unix-').replace('/', '-')}" / "parts"

        def kill_after_two_batches() -> None:
            deadline = time.monotonic() + 600
            while time.monotonic() < deadline and len(list(parts.glob("batch-*.parquet"))) < 2:
                time.sleep(0.1)
            lost.kill()

        killer = threading.Thread(target=kill_after_two_batches, daemon=True)
        killer.start()
        done = _shlib("run", str(spec), "--out", str(campaign))
        killer.join(timeout=60)
    finally:
        lost.stop()
    assert done.returncode == 0, done.stderr[-3000:]
    record = json.loads((campaign / "campaign.json").read_text())
    status = {e["label"]: e["status"] for e in record["engines"]}
    assert status == {lost.url: "engine_failed", "default": "complete"}, record
    from shlib.results.store import load_results, run_dirs

    dirs = run_dirs([campaign])
    assert len(dirs) == 2
    frame, metas = load_results([campaign])
    kept = frame[frame["engine"] == lost.url]
    assert 2 <= kept["batch_id"].nunique() < 12  # its finished batches, not the whole plan
    assert metas[0].status == "engine_failed" and metas[1].status == "complete"
    assert frame[frame["engine"] == "default"]["batch_id"].nunique() == 12


@pytest.fixture(scope="module")
def podman_engine():
    if not os.path.exists(PODMAN_SOCKET):
        if os.environ.get("CI") == "true" or shutil.which("podman"):
            pytest.fail(f"podman is installed but its API service is not on {PODMAN_SOCKET}: "
                        "run scripts/setup-podman.sh (make test does)")
        no_engine("podman is not installed (scripts/setup-podman.sh installs it)")
    return f"unix://{PODMAN_SOCKET}"


def test_the_smoke_preset_runs_through_podman_with_crun_and_runsc(tmp_path, podman_engine):
    out = tmp_path / "podman"
    done = _shlib("run", "--preset", "smoke", "--set", f"runtimes=[crun, {GVISOR}]", "--set", "concurrency=[1]",
                  "--engine", podman_engine, "--out", str(out))
    assert done.returncode == 0, done.stderr[-3000:]
    meta = json.loads((out / "metadata.json").read_text())
    assert meta["engine"]["kind"] == "podman" and meta["status"] == "complete"
    from shlib.results.store import load_results

    frame, _ = load_results(out)
    assert (frame["status"] == "ok").all(), frame[["runtime", "status", "error"]]
    assert set(frame["engine_kind"]) == {"podman"}
    # the runtime asked for is the one that ran (Podman's Docker API ignores HostConfig.Runtime)
    assert dict(zip(frame["runtime"], frame["engine_runtime"], strict=True)) == {"crun": "crun", GVISOR: GVISOR}
