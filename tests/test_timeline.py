"""The timeline and the sandbox's resources without an engine: the cgroup reader on fake cgroup trees
(v1 and v2), the clock-offset window, the rows' timeline columns, and the hold protocol in both
harnesses (the fake engine, and the real probe run by the host's node)."""

from __future__ import annotations

import json
import shutil
import time
from importlib import resources
from pathlib import Path

import pytest
from fake_engine import FakeClient, Script

import shlib.collect.docker_batch as docker_batch
from shlib.collect.cgroup import Cgroup, cpu_ms_between, find_cgroup
from shlib.collect.docker_batch import ContainerBatch
from shlib.collect.native_batch import NativeBatch
from shlib.collect.probe import Outcome, has_payload
from shlib.collect.records import accounting_ms, clock_window_ms, timeline

pytestmark = pytest.mark.timeout(60)
CID = "ab" * 32
NODE = shutil.which("node")
PROBE = Path(str(resources.files("shlib.collect.probes").joinpath("load.js")))


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def v1_tree(root: Path, parent: str = "docker/{id}", cpu: str = "cpuacct", usage_ns: int = 123_456_789,
            peak: int = 50 * 2**20) -> Path:
    _write(root / cpu / parent.format(id=CID) / "cpuacct.usage", f"{usage_ns}\n")
    _write(root / "memory" / parent.format(id=CID) / "memory.usage_in_bytes", "1\n")
    _write(root / "memory" / parent.format(id=CID) / "memory.max_usage_in_bytes", f"{peak}\n")
    _write(root / "unified" / "cgroup.controllers", "")  # the hybrid host: an empty cgroup2 beside v1
    return root


# --- the cgroup reader --------------------------------------------------------------------------------

def test_v1_cgroupfs_cpu_in_ns_and_peak_memory(tmp_path):
    cg = find_cgroup(CID, v1_tree(tmp_path))
    assert cg is not None and cg.version == 1
    assert cg.cpu_ns() == 123_456_789
    assert cg.memory_peak_bytes() == 50 * 2**20


@pytest.mark.parametrize("cpu", ["cpu,cpuacct", "cpuacct"])
def test_v1_systemd_driver_and_joint_cpu_hierarchy(tmp_path, cpu):
    cg = find_cgroup(CID, v1_tree(tmp_path, parent="system.slice/docker-{id}.scope", cpu=cpu))
    assert cg is not None and cg.cpu_ns() == 123_456_789 and cg.cpu_dir.parent.name == "system.slice"


def test_v2_usage_usec_and_memory_peak(tmp_path):
    _write(tmp_path / "cgroup.controllers", "cpu memory pids\n")
    d = tmp_path / "system.slice" / f"docker-{CID}.scope"
    _write(d / "cpu.stat", "usage_usec 2500\nuser_usec 2000\nsystem_usec 500\n")
    _write(d / "memory.current", "4096\n")
    _write(d / "memory.peak", "8192\n")
    cg = find_cgroup(CID, tmp_path)
    assert cg is not None and cg.version == 2
    assert cg.cpu_ns() == 2_500_000 and cg.memory_peak_bytes() == 8192


def test_v2_kernel_without_memory_peak_gives_none_not_a_guess(tmp_path):
    _write(tmp_path / "cgroup.controllers", "cpu memory\n")
    d = tmp_path / "docker" / CID
    _write(d / "cpu.stat", "usage_usec 10\n")
    _write(d / "memory.current", "4096\n")
    cg = find_cgroup(CID, tmp_path)
    assert cg is not None and cg.cpu_ns() == 10_000 and cg.memory_peak_bytes() is None


def test_a_container_not_on_this_host_is_none_never_an_error(tmp_path):
    v1_tree(tmp_path)
    assert find_cgroup("cd" * 32, tmp_path) is None  # a remote engine's container
    assert find_cgroup("", tmp_path) is None and find_cgroup("../etc", tmp_path) is None
    assert find_cgroup(CID, tmp_path / "absent") is None


def test_a_cgroup_removed_under_the_reader_reads_none(tmp_path):
    cg = find_cgroup(CID, v1_tree(tmp_path))
    assert cg is not None
    shutil.rmtree(tmp_path / "cpuacct")
    shutil.rmtree(tmp_path / "memory")
    assert cg.cpu_ns() is None and cg.memory_peak_bytes() is None


def test_cpu_ms_between_needs_both_readings_going_forward():
    assert cpu_ms_between(1_000_000, 3_500_000) == 2.5
    assert cpu_ms_between(None, 3) is None and cpu_ms_between(5, None) is None
    assert cpu_ms_between(5, 4) is None  # a counter that went back: another cgroup, not a time


# --- clocks and the timeline ------------------------------------------------------------------------

def _outcome(offset_ms: float = 0.0) -> Outcome:
    """A trial on a timeline in host ms from 0 whose probe clock runs ``offset_ms`` ahead of the host's."""
    o = Outcome(slot=0, h_create=0.0, h_created=30.0, h_start=32.0, h_ready=151.0, h_go=152.0, h_payload=265.0,
                h_release=266.0, h_exit=270.0, h_remove=300.0, h_removed=340.0, cpu_before_ns=5_000_000,
                cpu_after_ns=95_000_000, mem_peak_bytes=64 * 2**20)
    o.payload = {"process_start_wall_ms": 100.0 + offset_ms, "boot_ms": 45.0, "ready_wall_ms": 150.0 + offset_ms,
                 "go_recv_wall_ms": 153.0 + offset_ms, "go_wall_ms": 153.5 + offset_ms,
                 "loaded_wall_ms": 263.5 + offset_ms, "proc_cpu_ms": 80.0,
                 "results": [{"module": "m", "load_ms": 109.0, "ok": True}]}
    return o


@pytest.mark.parametrize("offset", [0.0, 7.0, -4.0])
def test_the_clock_window_holds_the_true_offset_and_its_bound_is_recorded(offset):
    low, high = clock_window_ms(_outcome(offset))
    assert low <= offset <= high
    assert high - low == pytest.approx(2.0)  # ready took 1 ms to be seen (the tighter of 1 and 1.5), go 1 ms
    assert timeline(_outcome(offset))["clock_offset_ms"] == pytest.approx(max(abs(low), abs(high)))


def test_timeline_columns_from_each_clock():
    tl = timeline(_outcome())
    assert tl["create_ms"] == 30.0 and tl["start_ms"] == 68.0
    assert tl["teardown_ms"] == 4.0 + 40.0  # exit sent -> exit seen, then the remove call
    assert tl["cpu_ms"] == 90.0 and tl["proc_cpu_ms"] == 80.0 and tl["mem_peak_mb"] == 64.0


def test_a_trial_without_engine_phases_or_cgroup_has_nulls():
    o = _outcome()
    o.h_created = o.h_remove = o.h_removed = o.cpu_before_ns = o.mem_peak_bytes = None
    tl = timeline(o)
    assert tl["create_ms"] is None and tl["teardown_ms"] is None and tl["cpu_ms"] is None
    assert tl["mem_peak_mb"] is None and tl["start_ms"] == 68.0
    assert timeline(Outcome(slot=0, status="timeout")) == dict.fromkeys(tl)


@pytest.mark.parametrize("offset", [0.0, 25.0])
def test_the_accounting_adds_up_whatever_the_offset(offset):
    acc = accounting_ms(_outcome(offset))
    assert acc["wall"] == 270.0
    # create 30 + attach 2 + start 68 + boot 45 + barrier 3.5 + load 109 + report 2.5 + exit 4 = 264: 6 ms left
    assert acc["residual"] == pytest.approx(6.0)


def test_has_payload_needs_a_complete_json_line():
    assert not has_payload(b"ready\n")
    assert not has_payload(b'ready\n{"probe": "lo')
    assert has_payload(b'ready\n{"probe": "load"}\n')


# --- the hold protocol --------------------------------------------------------------------------------

class CountingCgroup(Cgroup):
    """A cgroup whose CPU counter moves 1 ms per reading, recording when each reading was made."""

    def __init__(self) -> None:
        super().__init__(1, Path("/nonexistent"), Path("/nonexistent"))
        object.__setattr__(self, "reads", [])

    def cpu_ns(self) -> int:
        self.reads.append(time.monotonic())
        return 1_000_000 * len(self.reads)

    def memory_peak_bytes(self) -> int:
        return 3 * 2**20


def test_the_cgroup_is_read_before_go_and_while_the_probe_holds_then_it_is_told_to_exit(monkeypatch):
    groups: dict[str, CountingCgroup] = {}
    monkeypatch.setattr(docker_batch, "find_cgroup", lambda cid: groups.setdefault(cid, CountingCgroup()))
    client = FakeClient()
    batch = ContainerBatch(client, timeout_s=10, labels={"shlib.run_id": "r"})  # type: ignore[arg-type]
    kwargs = batch.create_kwargs("img", "runc", ("m",), "/shlib/lib", {}, {})
    outcomes = batch.run(2, kwargs)
    for out, c in zip(outcomes, client.containers_made, strict=True):
        assert out.status == "ok" and out.exit_code == 0, out.error
        first, second = groups[c.id].reads
        # read as the shared go time came (not while the go message led: the sandbox idled then), before
        # the load began; read again while the probe held, before it was told to exit
        assert c.go_received_at < first < c.go_at, (c.go_received_at, first, c.go_at)
        assert c.go_at - c.go_received_at > 0.05  # two probes: the go message leads by 120 ms
        assert c.exit_at is not None and second < c.exit_at
        tl = timeline(out)
        assert tl["cpu_ms"] == 1.0 and tl["mem_peak_mb"] == 3.0
        assert tl["create_ms"] >= 0 and tl["teardown_ms"] >= 0
        assert out.h_create <= out.h_created <= out.h_start <= out.h_go <= out.h_payload <= out.h_release
        assert out.h_release <= out.h_exit
        assert out.h_exit <= out.h_remove <= out.h_removed
    assert not client.left()


def test_without_hold_the_probe_exits_by_itself_and_no_exit_is_sent(monkeypatch):
    monkeypatch.setattr(docker_batch, "find_cgroup", lambda cid: None)  # a remote engine: nothing to read
    client = FakeClient()
    batch = ContainerBatch(client, timeout_s=10, hold=False)  # type: ignore[arg-type]
    (out,) = batch.run(1, batch.create_kwargs("img", "runc", ("m",), "/shlib/lib", {}, {}))
    assert json.loads(client.created[0]["command"][-1])["hold"] is False
    assert out.status == "ok" and client.containers_made[0].exit_at is None
    assert timeline(out)["cpu_ms"] is None and timeline(out)["mem_peak_mb"] is None


@pytest.mark.skipif(NODE is None, reason="no node on this host")
def test_native_probe_holds_until_told_and_reports_the_extended_protocol(tmp_path):
    pkg = tmp_path / "node_modules" / "fine"
    pkg.mkdir(parents=True)
    (pkg / "package.json").write_text('{"name": "fine", "version": "1.0.0"}')
    (pkg / "index.js").write_text("let x = 0; for (let i = 0; i < 2e6; i++) x += i; module.exports = x;")
    outcomes = NativeBatch(NODE, PROBE, timeout_s=30).run(2, str(tmp_path), ("fine",))
    for out in outcomes:
        assert out.status == "ok" and out.exit_code == 0, out.error
        p = out.payload
        assert p["process_start_wall_ms"] < p["ready_wall_ms"] <= p["go_recv_wall_ms"] <= p["go_wall_ms"]
        assert p["go_wall_ms"] < p["loaded_wall_ms"] and p["proc_cpu_ms"] > 0
        tl = timeline(out)
        assert tl["create_ms"] is None and tl["teardown_ms"] is None and tl["cpu_ms"] is None
        assert 0 < tl["start_ms"] < 5000 and 0 <= tl["clock_offset_ms"] < 50  # one host clock: a tight window
        acc = accounting_ms(out)
        assert -1.0 <= acc["residual"] <= 10 + 0.05 * acc["wall"], acc


def test_a_probe_that_never_exits_after_reporting_is_killed_at_the_deadline_and_removed(monkeypatch):
    monkeypatch.setattr(docker_batch, "find_cgroup", lambda cid: None)
    client = FakeClient(Script(behaviour="deaf"), Script())
    batch = ContainerBatch(client, timeout_s=2)  # type: ignore[arg-type]
    t0 = time.monotonic()
    deaf, fine = batch.run(2, batch.create_kwargs("img", "runc", ("m",), "/shlib/lib", {}, {}))
    assert time.monotonic() - t0 < 8
    assert deaf.status == "timeout" and "did not finish" in deaf.error
    assert "kill" in client.containers_made[0].calls
    assert fine.status == "ok"
    assert not client.left()
