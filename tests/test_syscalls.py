"""The syscall profile: strace -c summaries (captured fixtures) parsed, bytes read summed from a trace,
the load's net profile, and (where strace and node exist) one profile measured and cached."""

from __future__ import annotations

import json
import shutil
import subprocess
from importlib import resources
from pathlib import Path

import pytest

from shlib.collect import syscalls
from shlib.collect.syscalls import net_profile, parse_strace_summary, read_bytes, summarize, syscall_profiles

FIXTURES = Path(__file__).parent / "fixtures"
PROBE = Path(str(resources.files("shlib.collect.probes").joinpath("load.js")))


def test_the_summary_table_is_read_by_column_with_blank_errors_as_zero():
    counts = parse_strace_summary((FIXTURES / "strace-c-express.txt").read_text())
    assert counts["statx"] == {"calls": 1060, "errors": 710}
    assert counts["openat"] == {"calls": 247, "errors": 75}
    assert counts["read"] == {"calls": 315, "errors": 0}  # errors column blank
    assert counts["epoll_pwait"] == {"calls": 2, "errors": 0}
    assert "total" not in counts and len(counts) == 46
    assert sum(c["calls"] for c in counts.values()) == 2650  # the total line strace printed
    assert sum(c["errors"] for c in counts.values()) == 829


def test_the_profile_groups_the_stat_family_and_counts_failed_lookups():
    profile = summarize(parse_strace_summary((FIXTURES / "strace-c-express.txt").read_text()))
    assert profile["stat"] == 1060 + 23 + 12  # statx + fstat + newfstatat
    assert profile["read"] == 315 + 58  # read + pread64
    assert profile["failed_lookups"] == 710 + 75  # errors of statx and openat (fstat/newfstatat: none)
    assert profile["openat"] == 247 and profile["mmap"] == 90 and profile["getdents64"] == 0


def test_net_profile_is_the_load_minus_the_empty_probe():
    loaded = summarize(parse_strace_summary((FIXTURES / "strace-c-express.txt").read_text()))
    empty = summarize(parse_strace_summary((FIXTURES / "strace-c-empty.txt").read_text()))
    net = net_profile(loaded, empty)
    assert net["openat"] == 247 - 25 and net["failed_lookups"] == 785 - 6
    assert net_profile({"a": 1}, {"a": 5}) == {"a": 0}


def test_bytes_read_counts_completed_and_resumed_reads_only():
    trace = "\n".join([
        '101  read(3, "abc"..., 832) = 832',
        '102  pread64(5, "x"..., 100, 0) = 100',
        '101  read(7,  <unfinished ...>',
        '101  <... read resumed>"data"..., 65536) = 4000',
        '103  read(9, 0x7ff, 10) = -1 EAGAIN (Resource temporarily unavailable)',
        '103  readlink("/proc/self/exe", "/usr/bin/node", 4095) = 13',
        '104  thread_read(1) = 99',
    ])
    assert read_bytes(trace) == 832 + 100 + 4000


def test_a_captured_trace_gives_its_summary_and_bytes():
    text = (FIXTURES / "strace-C-react.txt").read_text(errors="replace")
    profile = summarize(parse_strace_summary(text))
    assert profile["openat"] == 37 and profile["failed_lookups"] == 21
    assert 300_000 < read_bytes(text) < 400_000  # react 16's files (~120 KB) plus Node's own libraries


def test_not_strace_output_is_a_clear_error():
    with pytest.raises(ValueError, match="not strace -c output"):
        parse_strace_summary("hello\n")


@pytest.mark.skipif(not (shutil.which("strace") and shutil.which("node")), reason="needs strace and node")
def test_a_profile_is_measured_once_then_read_from_the_library(tmp_path, monkeypatch):
    pkg = tmp_path / "node_modules" / "three"
    pkg.mkdir(parents=True)
    (pkg / "package.json").write_text(json.dumps({"name": "three", "version": "1.0.0"}))
    (pkg / "index.js").write_text("require('./a'); require('./b'); module.exports = 3;")
    (pkg / "a.js").write_text("module.exports = 'a'.repeat(1000);")
    (pkg / "b.js").write_text("module.exports = 'b';")
    first = syscall_profiles(tmp_path, "hash1", ["three"], "node", PROBE, "v-test")
    prof = first["modules"]["three"]
    assert prof["ok"] and prof["files_loaded"] == 3
    assert prof["openat"] >= 3 and prof["stat"] >= 3 and prof["read_bytes"] > 0
    assert prof["failed_lookups"] >= 1  # the resolver tries three.js / three.json before the directory

    def no_strace(*args, **kwargs):
        raise AssertionError("the cached profile should have been used")

    monkeypatch.setattr(subprocess, "Popen", no_strace)
    assert syscall_profiles(tmp_path, "hash1", ["three"], "node", PROBE, "v-test") == first
    with pytest.raises(AssertionError):  # another Node version is another profile
        syscall_profiles(tmp_path, "hash1", ["three"], "node", PROBE, "v-other")
    monkeypatch.setattr(syscalls.shutil, "which", lambda name: None)
    assert syscall_profiles(tmp_path, "hash2", ["three"], "node", PROBE, "v-test") is None


@pytest.mark.skipif(not (shutil.which("strace") and shutil.which("node")), reason="needs strace and node")
@pytest.mark.timeout(60)
def test_a_module_that_hangs_is_recorded_as_failed_and_leaves_no_process(tmp_path):
    import time

    for name, body in (("hangs", "Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0);"),
                       ("fine", "module.exports = 1;")):
        pkg = tmp_path / "node_modules" / name
        pkg.mkdir(parents=True)
        (pkg / "package.json").write_text(json.dumps({"name": name, "version": "1.0.0"}))
        (pkg / "index.js").write_text(body)
    started = time.monotonic()
    profiles = syscall_profiles(tmp_path, "h", ["hangs", "fine"], "node", PROBE, "v-test", timeout_s=3)
    assert time.monotonic() - started < 20
    assert profiles["modules"]["hangs"] == {"ok": False, "error": profiles["modules"]["hangs"]["error"]}
    assert "did not finish within 3 s" in profiles["modules"]["hangs"]["error"]
    assert profiles["modules"]["fine"]["ok"]
    time.sleep(0.5)
    left = [p for p in Path("/proc").iterdir() if p.name.isdigit() and str(tmp_path).encode() in _cmdline(p)]
    assert not left, "the traced node outlived its strace"


def _cmdline(proc: Path) -> bytes:
    try:
        return (proc / "cmdline").read_bytes()
    except OSError:
        return b""
