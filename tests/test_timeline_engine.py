"""The timeline and the sandbox's resources against the real engine: a small run (native, runc, one gVisor
build, one module, one container at a time) fills the timeline columns; the phases and the harness's own
waits add up to each trial's wall time; the cgroup's CPU is read while the probe holds."""

from __future__ import annotations

import math
import statistics

import pytest
from helpers import assert_run_left_nothing

from shlib.collect.docker_batch import ContainerBatch
from shlib.collect.library import MOUNT_POINT, mount_kwargs
from shlib.collect.records import accounting_ms, timeline
from shlib.collect.runner import run_experiment
from shlib.results.store import load_results

pytestmark = [pytest.mark.docker, pytest.mark.timeout(600)]
MODULE = "express@4.17.1"  # ~100 files: every one crosses gVisor's file-system boundary

#: What no phase names in a trial (``records.accounting_ms``): the probe parsing its argument and making its
#: require function after Node's boot stamp, and reading the module's package.json after its load: a few
#: file-system calls, each at most tens of microseconds even under gVisor's ptrace platform. Seen here:
#: 0.5-4 ms. Bound: 10 ms, plus 2% of the wall time for a probe preempted between two of its own stamps on a
#: shared 2-core host; below zero by at most 1 ms (the harness's monotonic and wall clocks read apart).
RESIDUAL_MAX_MS, RESIDUAL_SHARE, RESIDUAL_MIN_MS = 10.0, 0.02, -1.0


def _gvisor(gvisor_runtimes: list[str]) -> str:
    for name in ("runsc-20240729-systrap", "runsc-20221219-ptrace"):
        if name in gvisor_runtimes:
            return name
    if not gvisor_runtimes:
        pytest.skip("no gVisor runtime registered with the engine")
    return gvisor_runtimes[0]


@pytest.fixture(scope="module")
def small_run(client, gvisor_runtimes, tmp_path_factory):
    gvisor = _gvisor(gvisor_runtimes)
    spec = {"name": "t-timeline", "runtimes": ["native", "runc", gvisor], "modules": [MODULE], "concurrency": [1],
            "repetitions": 3, "seed": 12}
    out = run_experiment(spec, tmp_path_factory.mktemp("timeline") / "run", client=client, progress=False)
    df, meta = load_results(out)
    return gvisor, df, meta, out


def test_a_small_run_fills_the_timeline_columns(client, small_run):
    gvisor, df, meta, out = small_run
    assert meta.status == "complete" and set(df["status"]) == {"ok"} and len(df) == 9
    containers = df[df["runtime"] != "native"]
    native = df[df["runtime"] == "native"]
    for col in ("create_ms", "start_ms", "teardown_ms", "clock_offset_ms", "cpu_ms", "proc_cpu_ms", "mem_peak_mb"):
        assert containers[col].notna().all() and (containers[col] >= 0).all(), col
    assert native["create_ms"].isna().all() and native["teardown_ms"].isna().all()  # no container
    assert native["cpu_ms"].isna().all() and native["mem_peak_mb"].isna().all()  # no cgroup of its own
    assert native["start_ms"].notna().all() and native["proc_cpu_ms"].notna().all()
    assert (df["clock_offset_ms"] < 50).all(), df["clock_offset_ms"].tolist()  # one host, one clock source
    assert (containers["cpu_ms"] > 0).all() and (containers["mem_peak_mb"] > 5).all()
    assert meta.harness["probe_hold"] is True and meta.harness["cgroup"]["version"] in (1, 2)
    assert_run_left_nothing(client, out)


def test_the_cgroup_sees_the_whole_sandbox(small_run):
    gvisor, df, _, _ = small_run
    runc = df[df["runtime"] == "runc"]
    sandboxed = df[df["runtime"] == gvisor]
    # under runc the cgroup holds the probe alone: its CPU is the probe's own, read from inside
    for cgroup_ms, own_ms in zip(runc["cpu_ms"], runc["proc_cpu_ms"], strict=True):
        assert abs(cgroup_ms - own_ms) <= 0.25 * own_ms + 5, (cgroup_ms, own_ms)
    # under gVisor it holds the sentry and the gofer too: the same load costs the sandbox far more CPU
    assert statistics.median(sandboxed["cpu_ms"]) > 1.5 * statistics.median(runc["cpu_ms"])
    assert statistics.median(sandboxed["mem_peak_mb"]) > statistics.median(runc["mem_peak_mb"])


def test_the_syscall_profile_is_recorded_with_the_library(small_run):
    _, _, meta, _ = small_run
    profile = meta.library.syscall_profile
    if profile is None:
        pytest.skip("no strace on this host (scripts/setup-host.sh installs it)")
    express = profile["modules"]["express"]
    assert express["ok"] and express["openat"] > 50 and express["failed_lookups"] > 100  # the resolver's misses
    assert express["read_bytes"] > 100_000 and profile["node_version"] and profile["tree_hash"]


def test_phases_add_up_to_the_wall_time(client, gvisor_runtimes, node_image, paper_library, paper_volume, test_labels,
                                        no_leftovers):
    gvisor = _gvisor(gvisor_runtimes)
    batch = ContainerBatch(client, timeout_s=120, labels=test_labels)
    seen = []
    for runtime in ("runc", gvisor, "runc", gvisor):
        kwargs = batch.create_kwargs(node_image.tag, runtime, ("express",), MOUNT_POINT,
                                     mount_kwargs("volume", paper_library, paper_volume), {})
        (out,) = batch.run(1, kwargs)
        assert out.status == "ok", out.error
        acc = accounting_ms(out)
        seen.append((runtime, acc))
        named = [acc[k] for k in ("create", "attach", "start", "boot", "barrier", "load", "report", "exit")]
        assert all(v is not None and v >= -1.0 for v in named), acc
        assert acc["wall"] == pytest.approx(out.wall_ms, abs=2.0)  # the harness's two clocks agree
        limit = RESIDUAL_MAX_MS + RESIDUAL_SHARE * acc["wall"]
        assert RESIDUAL_MIN_MS <= acc["residual"] <= limit, (runtime, acc)
        tl = timeline(out)
        assert math.isclose(tl["start_ms"], acc["start"]) and tl["clock_offset_ms"] < 50
        # the named phases are most of the wall time: what is left is the barrier and the harness's own steps
        assert acc["create"] + acc["start"] + acc["boot"] + acc["load"] > 0.5 * acc["wall"], acc
