"""The runtime catalog: unit tests on a fake engine, then the real one."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from shlib.collect import runtimes
from shlib.collect.runtimes import catalog, smoke_runsc
from shlib.results.schema import runtime_kind


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


@pytest.mark.skipif(os.geteuid() != 0, reason="the runsc smoke test runs only as root")
def test_smoke_detects_a_hang_in_bounded_time_and_caches_it(tmp_path, private_cache):
    hang = _script(tmp_path, "runsc", 'case "$*" in *--version*) echo "runsc version 0.0~20240729.0";; '
                                      '*) sleep 300;; esac\n')
    start = time.monotonic()
    reason = smoke_runsc(hang, ["--platform=kvm"], timeout_s=2)
    assert reason.startswith("hangs") and "--platform=kvm" in reason
    assert time.monotonic() - start < 10
    start = time.monotonic()
    assert smoke_runsc(hang, ["--platform=kvm"], timeout_s=2) == reason  # cached: no second wait
    assert time.monotonic() - start < 1


@pytest.mark.skipif(os.geteuid() != 0, reason="the runsc smoke test runs only as root")
def test_smoke_reports_a_failing_runtime(tmp_path, private_cache):
    bad = _script(tmp_path, "runsc", 'echo "flag provided but not defined: -bogus" >&2; exit 3\n')
    reason = smoke_runsc(bad, ["--bogus"], timeout_s=5)
    assert "exit 3" in reason and "bogus" in reason


def test_catalog_from_a_fake_engine(tmp_path, private_cache, monkeypatch):
    ok = _script(tmp_path, "runsc", 'echo "runsc version 0.0~20240729.0"\n')
    monkeypatch.setattr(runtimes, "smoke_runsc", lambda path, args, recheck=False:
                        "hangs: test" if "--platform=kvm" in args else "")
    client = FakeClient({
        "runc": {"path": "runc"}, "io.containerd.runc.v2": {"path": "runc"},
        "runsc-20240729-systrap": {"path": ok, "runtimeArgs": ["--network=none", "--platform=systrap"]},
        "runsc-20240729-kvm": {"path": ok, "runtimeArgs": ["--network=none", "--platform=kvm"]},
    })
    cat = catalog(client)  # type: ignore[arg-type]
    assert "io.containerd.runc.v2" not in cat  # containerd's alias for runc is not a runtime of its own
    assert cat["runc"].available and cat["runc"].version == "1.1.5"
    systrap = cat["runsc-20240729-systrap"]
    assert systrap.available and systrap.kind == "gvisor" and systrap.platform == "systrap"
    assert systrap.version == "runsc version 0.0~20240729.0"
    kvm = cat["runsc-20240729-kvm"]
    assert not kvm.available and kvm.reason == "hangs: test" and "ptrace or systrap" in kvm.hint
    for name in ("io.containerd.kata.v2", "kata-runtime"):
        assert not cat[name].available and "not registered" in cat[name].reason and "Kata" in cat[name].hint
    assert cat["native"].kind == "native"


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


@pytest.mark.skipif(os.geteuid() != 0, reason="the runsc smoke test runs only as root")
@pytest.mark.parametrize("corrupt", ['{"/opt/x/runsc|1|--platform=kvm": "han', "[1, 2]", "\x00\xff not json"])
def test_a_corrupt_smoke_cache_is_treated_as_empty_and_rewritten(tmp_path, private_cache, corrupt):
    import json

    from shlib.paths import cache_dir

    cache = cache_dir() / "runtime-smoke.json"
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(corrupt)
    ok = _script(tmp_path, "runsc", 'echo "runsc version 0.0~20240729.0"\n')
    assert smoke_runsc(ok, ["--platform=systrap"]) == ""
    cat = catalog(FakeClient({"runsc-20240729-systrap": {"path": ok, "runtimeArgs": ["--platform=systrap"]}}))
    assert cat["runsc-20240729-systrap"].available
    known = json.loads(cache.read_text())
    assert isinstance(known, dict) and list(known.values()) == [""]


@pytest.mark.skipif(os.geteuid() != 0, reason="the runsc smoke test runs only as root")
def test_the_smoke_cache_write_is_atomic(tmp_path, private_cache, monkeypatch):
    """A write that dies midway (disk full) leaves the old cache whole, and the answer still comes back."""
    import errno
    import json

    from shlib.paths import cache_dir

    ok = _script(tmp_path, "runsc", 'echo "runsc version 0.0~20240729.0"\n')
    assert smoke_runsc(ok, ["--platform=systrap"]) == ""
    cache = cache_dir() / "runtime-smoke.json"
    before = cache.read_text()

    def dies_midway(self, data, *args, **kwargs):
        with open(self, "w") as fh:
            fh.write(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")

    bad = _script(tmp_path, "runsc-bad", "exit 3\n")
    monkeypatch.setattr(Path, "write_text", dies_midway)
    try:
        reason = smoke_runsc(bad, ["--platform=ptrace"])
    except OSError as exc:
        reason = f"raised {exc}"
    monkeypatch.undo()
    assert cache.read_text() == before
    assert "exit 3" in reason  # the failed write cost only the caching
    assert list(json.loads(before).values()) == [""]
    assert [p.name for p in cache.parent.iterdir()] == ["runtime-smoke.json"]  # no temp file left


def test_cache_writers_side_by_side_keep_every_entry(private_cache):
    """Smoke tests run in threads and write the same cache: no entry may be lost to a read-modify-write race."""
    from concurrent.futures import ThreadPoolExecutor

    from shlib.collect.cache import add_to_cache, cache_file, read_cache

    cache = cache_file("race.json")
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda i: add_to_cache(cache, f"k{i}", i), range(200)))
    assert read_cache(cache) == {f"k{i}": i for i in range(200)}
