"""The runtime catalog: unit tests on a fake engine, then the real one."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from shlib.collect import runtimes
from shlib.collect.runtimes import cached_smoke, catalog, select_runtimes, smoke_native
from shlib.results.schema import runtime_kind
from shlib.spec.spec import make_spec


class FakeClient:
    """Canned answers of the engine's /info and /version."""

    def __init__(self, registered: dict):
        self.registered = registered

    def info(self) -> dict:
        return {"Runtimes": self.registered}

    def version(self) -> dict:
        return {"Components": [{"Name": "runc", "Version": "1.1.5"}]}


@pytest.mark.parametrize("name,path,kind", [
    ("native", None, "native"), ("runc", "runc", "runc"), ("crun", "/usr/bin/crun", "crun"),
    ("runsc-20240729-systrap", "/opt/x/runsc", "gvisor"), ("gvisor", "/usr/local/bin/runsc", "gvisor"),
    ("io.containerd.kata.v2", None, "kata"), ("kata-runtime", "/usr/bin/kata-runtime", "kata"),
    ("youki", "/usr/bin/youki", "other"),
])
def test_runtime_kind(name, path, kind):
    assert runtime_kind(name, path) == kind


def _script(tmp_path: Path, name: str, body: str) -> str:
    path = tmp_path / name
    path.write_text("#!/bin/sh\n" + body)
    path.chmod(0o755)
    return str(path)


@pytest.fixture
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SHLIB_CACHE", str(tmp_path / "cache"))


def test_native_smoke_detects_a_hang_in_bounded_time_and_caches_it(tmp_path, private_cache):
    hang = _script(tmp_path, "node", "while :; do sleep 1; done\n")
    key = runtimes.smoke_key("native", hang, ["-e", "0"], None)
    start = time.monotonic()
    reason = cached_smoke(key, lambda: smoke_native(hang, timeout_s=2))
    assert reason == "hangs: 'node -e 0' did not exit within 2 s"
    assert time.monotonic() - start < 10
    start = time.monotonic()
    assert cached_smoke(key, lambda: smoke_native(hang, timeout_s=2)) == reason  # cached: no second wait
    assert time.monotonic() - start < 1


def test_native_smoke_reports_a_failure(tmp_path):
    bad = _script(tmp_path, "node", 'echo "node: bad option" >&2; exit 9\n')
    assert smoke_native(bad, timeout_s=5) == "fails: 'node -e 0' exited 9: node: bad option"
    assert smoke_native(_script(tmp_path, "node-ok", "exit 0\n")) == ""


def test_cached_smoke_refresh_and_what_is_not_cached(private_cache):
    calls = []

    def check(answer):
        def run():
            calls.append(answer)
            return answer
        return run

    assert cached_smoke("k", check("hangs: x")) == "hangs: x"
    assert cached_smoke("k", check("")) == "hangs: x" and calls == ["hangs: x"]
    assert cached_smoke("k", check(""), refresh=True) == "" and calls == ["hangs: x", ""]
    assert cached_smoke("k", check("hangs: y")) == ""
    # a verdict about the engine, not the runtime, is asked again next time
    assert cached_smoke("e", check("not smoke-tested: no engine")) == "not smoke-tested: no engine"
    assert cached_smoke("e", check("")) == ""


def test_smoke_key_follows_binary_version_and_flags(tmp_path):
    binary = _script(tmp_path, "runsc", "exit 0\n")
    key = runtimes.smoke_key("gvisor", binary, ["--platform=systrap"], "v1")
    assert key != runtimes.smoke_key("gvisor", binary, ["--platform=ptrace"], "v1")
    assert key != runtimes.smoke_key("gvisor", binary, ["--platform=systrap"], "v2")
    os.utime(binary, ns=(1, 1))  # a new binary in the same place
    assert key != runtimes.smoke_key("gvisor", binary, ["--platform=systrap"], "v1")


@pytest.mark.skipif(runtimes.exit0_elf() is None, reason="the 129-byte exit-0 executable is x86-64 only")
def test_the_smoke_executable_exits_0(tmp_path):
    import subprocess

    path = tmp_path / "true"
    path.write_bytes(runtimes.exit0_elf())  # type: ignore[arg-type]
    path.chmod(0o755)
    assert subprocess.run([str(path)], timeout=5).returncode == 0


def test_catalog_from_a_fake_engine(tmp_path, private_cache, monkeypatch):
    ok = _script(tmp_path, "runsc", 'echo "runsc version 0.0~20240729.0"\n')
    tested = []

    def fake_smoke(client, name, timeout_s=runtimes.SMOKE_TIMEOUT_S):
        tested.append(name)
        return {"runsc-20240729-kvm": "hangs: did not start within 15 s (killed)",
                "youki": "fails: could not start: boom"}.get(name, "")

    monkeypatch.setattr(runtimes, "smoke_container", fake_smoke)
    client = FakeClient({
        "runc": {"path": "runc"}, "io.containerd.runc.v2": {"path": "runc"}, "youki": {"path": "/usr/bin/youki"},
        "runsc-20240729-systrap": {"path": ok, "runtimeArgs": ["--network=none", "--platform=systrap"]},
        "runsc-20240729-kvm": {"path": ok, "runtimeArgs": ["--network=none", "--platform=kvm"]},
    })
    cat = catalog(client)  # type: ignore[arg-type]
    assert sorted(tested) == ["runc", "runsc-20240729-kvm", "runsc-20240729-systrap", "youki"]  # every one
    assert "io.containerd.runc.v2" not in cat  # containerd's alias for runc is not a runtime of its own
    assert cat["runc"].available and cat["runc"].version == "1.1.5"
    systrap = cat["runsc-20240729-systrap"]
    assert systrap.available and systrap.kind == "gvisor" and systrap.platform == "systrap"
    assert systrap.version == "runsc version 0.0~20240729.0"
    kvm = cat["runsc-20240729-kvm"]
    assert not kvm.available and kvm.reason.startswith("hangs: did not start") and "ptrace or systrap" in kvm.hint
    youki = cat["youki"]  # a runtime of no known family is tested too (it used to count as 'ok' untested)
    assert not youki.available and youki.reason == "fails: could not start: boom" and "docker run" in youki.hint
    for name in ("io.containerd.kata.v2", "kata-runtime"):
        assert not cat[name].available and "not registered" in cat[name].reason and "Kata" in cat[name].hint
    assert cat["native"].kind == "native"
    spec = make_spec({"runtimes": "all", "modules": ["lodash"]})
    assert set(select_runtimes(spec, cat)) == {n for n, r in cat.items() if r.available}
    assert "youki" not in select_runtimes(spec, cat) and "runsc-20240729-kvm" not in select_runtimes(spec, cat)
    assert kvm.smoke_checked_at and systrap.smoke_checked_at  # when the (cached) verdict was established
    assert cat["io.containerd.kata.v2"].smoke_checked_at is None  # not registered: nothing was tested
    tested.clear()
    assert catalog(client)["runsc-20240729-kvm"].smoke_checked_at == kvm.smoke_checked_at  # type: ignore[arg-type]
    assert tested == []  # cached: a run's start-up costs no container
    catalog(client, refresh=True)  # type: ignore[arg-type]
    assert len(tested) == 4


def test_catalog_without_an_engine_says_why(private_cache):
    cat = catalog(None)
    assert not cat["runc"].available and "not reachable" in cat["runc"].reason
    assert cat["native"].engine_name is None


@pytest.mark.docker
def test_doctor_json_on_this_host(client):
    """runc, crun, native and both runsc builds available; Kata unavailable with a reason and a hint."""
    import json
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-m", "shlib.cli", "doctor", "--json"], capture_output=True, text=True,
                         timeout=300, check=True).stdout
    report = json.loads(out)
    assert report["engine"]["reachable"] is True and report["engine"]["docker_version"]
    rts = report["runtimes"]
    for name in ("native", "runc", "crun"):
        assert rts[name]["available"], (name, rts[name]["reason"])
    builds = {runtimes.version_date(r["version"]) for r in rts.values() if r["kind"] == "gvisor" and r["available"]}
    assert {"20221219", "20240729"} <= builds, builds
    for r in rts.values():
        if r["kind"] == "gvisor" and r["platform"] == "kvm" and not r["available"]:
            assert r["reason"].startswith("hangs") or "failed" in r["reason"]
    kata = rts["io.containerd.kata.v2"]
    assert kata["available"] is False and kata["reason"] and "install Kata" in kata["hint"]
    assert report["host"]["cpu_count"] >= 1 and report["host"]["kernel"]


@pytest.mark.parametrize("corrupt", ['{"container-v1|gvisor|/opt/x/runsc|1|--platform=kvm": {"rea', "[1, 2]",
                                     "\x00\xff not json", '{"k": "an old verdict, a bare string"}'])
def test_a_corrupt_smoke_cache_is_treated_as_empty_and_rewritten(private_cache, corrupt):
    import json

    from shlib.paths import cache_dir

    cache = cache_dir() / "runtime-smoke.json"
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(corrupt)
    assert cached_smoke("k", lambda: "") == ""
    known = json.loads(cache.read_text())
    assert isinstance(known, dict) and known["k"]["reason"] == ""


def test_the_smoke_cache_write_is_atomic(private_cache, monkeypatch):
    """A write that dies midway (disk full) leaves the old cache whole, and the answer still comes back."""
    import errno
    import json

    from shlib.paths import cache_dir

    assert cached_smoke("ok", lambda: "") == ""
    cache = cache_dir() / "runtime-smoke.json"
    before = cache.read_text()

    def dies_midway(self, data, *args, **kwargs):
        with open(self, "w") as fh:
            fh.write(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(Path, "write_text", dies_midway)
    try:
        reason = cached_smoke("bad", lambda: "fails: exit 3")
    except OSError as exc:
        reason = f"raised {exc}"
    monkeypatch.undo()
    assert cache.read_text() == before
    assert reason == "fails: exit 3"  # the failed write cost only the caching
    assert list(json.loads(before)) == ["ok"]
    assert sorted(p.name for p in cache.parent.iterdir()) == ["runtime-smoke.json", "runtime-smoke.json.lock"]


@pytest.mark.docker
def test_a_runtime_that_hangs_is_reported_and_left_out_of_all(client, tmp_path, monkeypatch):
    """A registered 'runtime' that never returns: doctor says why in bounded time, 'all' leaves it out."""
    import json
    import subprocess
    import sys

    from reliability_helpers import extra_runtimes, processes_matching

    hang = tmp_path / "shlib-test-hang-runtime"
    hang.write_text("#!/bin/sh\nwhile :; do sleep 1; done\n")  # the shell itself keeps the arguments
    hang.chmod(0o755)
    name = f"shlib-test-hangs-{os.getpid()}"
    env = {**os.environ, "SHLIB_CACHE": str(tmp_path / "cache")}
    with extra_runtimes(client, {name: {"path": str(hang)}}):
        start = time.monotonic()
        out = subprocess.run([sys.executable, "-m", "shlib.cli", "doctor", "--json"], capture_output=True,
                             text=True, timeout=300, env=env, check=True).stdout
        took = time.monotonic() - start
        rt = json.loads(out)["runtimes"][name]
        assert rt["available"] is False, rt
        assert rt["reason"] == f"hangs: did not start within {runtimes.SMOKE_TIMEOUT_S:.0f} s (killed)", rt
        assert took < 120, took
        text = subprocess.run([sys.executable, "-m", "shlib.cli", "doctor"], capture_output=True, text=True,
                              timeout=120, env=env, check=True).stdout
        assert "unavailable: hangs: did not start within" in text
        assert "(cached; 'shlib doctor --refresh' tests again)" in text
        monkeypatch.setenv("SHLIB_CACHE", env["SHLIB_CACHE"])
        start = time.monotonic()
        cat = catalog(client)  # cached: no second wait
        assert time.monotonic() - start < 10
        chosen = select_runtimes(make_spec({"runtimes": "all", "modules": ["lodash"]}), cat)
        assert name not in chosen and "runc" in chosen
        # the runtime the engine's shim started (others may be asking it --version meanwhile)
        assert not processes_matching(str(hang), "--bundle"), "the hung runtime was not reaped"
        left = client.containers.list(all=True, filters={"label": f"shlib.smoke={name}"})
        assert not left, "the smoke container was left behind"
    assert name not in client.info()["Runtimes"]


def test_cache_writers_side_by_side_keep_every_entry(private_cache):
    """Smoke tests run in threads and write the same cache: no entry may be lost to a read-modify-write race."""
    from concurrent.futures import ThreadPoolExecutor

    from shlib.collect.cache import add_to_cache, cache_file, read_cache

    cache = cache_file("race.json")
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda i: add_to_cache(cache, f"k{i}", i), range(200)))
    assert read_cache(cache) == {f"k{i}": i for i in range(200)}


def _fake_root(tmp_path: Path, kvm: bool, pvm: bool, flags: str) -> Path:
    root = tmp_path / "root"
    (root / "dev").mkdir(parents=True)
    (root / "proc").mkdir()
    if kvm:
        (root / "dev" / "kvm").write_text("")
    if pvm:
        (root / "sys" / "module" / "kvm_pvm" / "parameters").mkdir(parents=True)
    (root / "proc" / "cpuinfo").write_text(f"processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu {flags} sse2\n\n")
    return root


@pytest.mark.parametrize("kvm,pvm,flags,kind", [
    (True, True, "hypervisor lm", "pvm"), (True, False, "vmx lm", "hardware"), (True, True, "svm", "hardware"),
    (False, False, "lm", "none"), (True, False, "lm", "unknown"),
])
def test_kvm_facts_from_a_fake_sysfs_and_cpuinfo(tmp_path, kvm, pvm, flags, kind):
    from shlib.collect.host import kvm_facts

    facts = kvm_facts(_fake_root(tmp_path, kvm, pvm, flags))
    assert facts["kind"] == kind
    assert ("paravirtual" in facts["problem"]) == (kind == "pvm")
    assert bool(facts["problem"]) == (kind in ("pvm", "none"))


def test_doctor_says_why_kata_cannot_run_on_a_pvm_host(tmp_path, private_cache):
    """doctor on a fake PVM host (no engine): the virtualisation line explains it, Kata's reason names it."""
    import json
    import subprocess
    import sys

    env = {**os.environ, "SHLIB_HOST_ROOT": str(_fake_root(tmp_path, True, True, "hypervisor")),
           "DOCKER_HOST": f"unix://{tmp_path}/no-engine.sock", "SHLIB_CACHE": str(tmp_path / "cache")}
    text = subprocess.run([sys.executable, "-m", "shlib.cli", "doctor"], capture_output=True, text=True, env=env,
                          timeout=120, check=True).stdout
    assert "virtualisation: /dev/kvm present, pvm (no vmx/svm, kvm_pvm module)" in text
    assert "Kata cannot run on this host" in text and "runsc's kvm platform spins" in text
    report = json.loads(subprocess.run([sys.executable, "-m", "shlib.cli", "doctor", "--json"], capture_output=True,
                                       text=True, env=env, timeout=120, check=True).stdout)
    assert report["virtualisation"]["kind"] == "pvm"
    assert "paravirtual" in report["runtimes"]["io.containerd.kata.v2"]["reason"]
    env["SHLIB_HOST_ROOT"] = str(_fake_root(tmp_path / "hw", True, False, "vmx"))
    text = subprocess.run([sys.executable, "-m", "shlib.cli", "doctor"], capture_output=True, text=True, env=env,
                          timeout=120, check=True).stdout
    assert "hardware (vmx)" in text and "paravirtual" not in text


def test_doctor_report_gives_each_gvisor_variant_its_switches(monkeypatch, private_cache):
    from shlib.cli import doctor_report
    from shlib.collect.runtimes import Runtime

    def fake_catalog(client, refresh=False):
        return {"runc": Runtime("runc", "runc", True),
                "runsc-20240729-systrap-nodirectfs": Runtime(
                    "runsc-20240729-systrap-nodirectfs", "gvisor", True, path="/x/runsc",
                    args=["--network=none", "--platform=systrap", "--directfs=false"],
                    version="runsc version 0.0~20240729.0", platform="systrap")}

    monkeypatch.setattr(runtimes, "catalog", fake_catalog)
    monkeypatch.setenv("DOCKER_HOST", "unix:///nonexistent.sock")
    report = doctor_report()
    assert "switches" not in report["runtimes"]["runc"]
    assert report["runtimes"]["runsc-20240729-systrap-nodirectfs"]["switches"] == {
        "gvisor_build": "20240729", "platform": "systrap", "directfs": "false", "file_access_mounts": "shared",
        "overlay2": "root:self", "dcache": "-1"}


class FakeAPI:
    """docker.APIClient stand-in: a start that hangs (ReadTimeout) or a container that exits with ``code``."""

    instances: list[FakeAPI] = []

    def __init__(self, base_url=None, timeout=None, start_hangs=False, code=0):
        self.timeout, self.start_hangs, self.code = timeout, start_hangs, code
        self.closed, self.removed = False, []
        FakeAPI.instances.append(self)

    def create_host_config(self, **kwargs):
        return kwargs

    def create_container(self, image, command, **kwargs):
        return {"Id": "c" * 64}

    def start(self, container):
        if self.start_hangs:
            import requests

            raise requests.exceptions.ConnectionError("UnixHTTPConnectionPool(host='localhost'): Read timed out.")

    def wait(self, container, timeout=None):
        return {"StatusCode": self.code}

    def logs(self, container):
        return b"boom"

    def remove_container(self, container, force=False):
        self.removed.append(container)

    def close(self):
        self.closed = True


@pytest.mark.parametrize("start_hangs,code,expected", [
    (True, 0, "hangs: did not start within 3 s (killed)"), (False, 2, "fails: the smoke container exited 2: boom"),
    (False, 0, ""),
])
def test_smoke_container_verdicts_reap_remove_and_close(monkeypatch, start_hangs, code, expected):
    reaped = []
    FakeAPI.instances.clear()
    monkeypatch.setattr(runtimes, "smoke_image", lambda client: ("shlib-smoke:exit0", ["/true"]))
    monkeypatch.setattr(runtimes.docker, "APIClient",
                        lambda base_url, timeout, **kw: FakeAPI(base_url, timeout, start_hangs=start_hangs, code=code))
    monkeypatch.setattr(runtimes, "reap_runtime", reaped.append)
    assert runtimes.smoke_container(FakeClient({}), "r", timeout_s=3) == expected  # type: ignore[arg-type]
    api = FakeAPI.instances[0]
    assert api.removed == ["c" * 64] and api.closed  # no container and no connection left behind
    assert reaped == (["c" * 64] if start_hangs else [])


def test_all_leaves_the_gvisor_setting_variants_out_and_naming_them_measures_them():
    from shlib.collect.runtimes import Runtime

    def rt(name, kind, args=()):
        return Runtime(name=name, kind=kind, available=True, args=list(args))

    cat = {"native": rt("native", "native"), "runc": rt("runc", "runc"),
           "runsc-20240729-systrap": rt("runsc-20240729-systrap", "gvisor", ["--network=none", "--platform=systrap"]),
           "runsc-20240729-systrap-nodirectfs": rt("runsc-20240729-systrap-nodirectfs", "gvisor",
                                                   ["--network=none", "--platform=systrap", "--directfs=false"]),
           "runsc-20221219-ptrace-exclusive": rt("runsc-20221219-ptrace-exclusive", "gvisor",
                                                 ["--network=none", "--platform=ptrace",
                                                  "--file-access-mounts=exclusive"])}
    every = select_runtimes(make_spec({"runtimes": "all", "modules": ["lodash"]}), cat)
    assert every == ["native", "runc", "runsc-20240729-systrap"]
    named = make_spec({"runtimes": ["runc", "runsc-20240729-systrap-nodirectfs"], "modules": ["lodash"]})
    assert select_runtimes(named, cat) == ["runc", "runsc-20240729-systrap-nodirectfs"]
