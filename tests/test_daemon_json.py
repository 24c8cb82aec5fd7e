"""daemon.json merging: a user's entries survive, a second run changes nothing. No engine needed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shlib.collect import daemon_json

#: ``runsc flags`` of the two builds here, cut to the switches (Go's flag format: name line, tab-indented help).
FLAGS_2022 = """  -dcache int
    \tSet the global dentry cache size. If negative, per-mount caches are used. (default -1)
  -file-access-mounts value
    \tfilesystem validation for volumes other than the root mount: shared (default), exclusive. (default shared)
  -overlay2 value
    \twrap mounts with overlayfs. 'none' will turn overlay mode off.
  -platform string
    \tspecifies which platform to use: ptrace (default), kvm. (default "ptrace")
"""
FLAGS_2024 = FLAGS_2022.replace("ptrace (default), kvm. (default \"ptrace\")", "systrap (default), ptrace, kvm. "
                                "(default \"systrap\")").replace("turn overlay mode off.", "turn overlay mode off. "
                                "(default root:self)") + """  -directfs
    \tdirectly access the container filesystems from the sentry. (default true)
"""


@pytest.fixture
def fake_runsc(tmp_path: Path) -> str:
    def make(date: str) -> str:
        path = tmp_path / f"runsc-{date}"
        flags = tmp_path / f"flags-{date}"
        flags.write_text(FLAGS_2024 if date >= "20230601" else FLAGS_2022)
        path.write_text(f"#!/bin/sh\nif [ \"$1\" = flags ]; then cat {flags}; exit 0; fi\n"
                        f"echo 'runsc version 0.0~{date}.0'\necho 'spec: 1.0.2'\n")
        path.chmod(0o755)
        return str(path)
    return make  # type: ignore[return-value]


def test_runsc_entries_name_build_and_platform(fake_runsc, monkeypatch):
    monkeypatch.setattr(daemon_json.os.path, "exists", lambda p: False if p == "/dev/kvm" else True)
    old = daemon_json.runsc_entries(fake_runsc("20221219"))
    new = daemon_json.runsc_entries(fake_runsc("20240729"), file_access_variants=True)
    assert set(old) == {"runsc-20221219-ptrace"}  # no systrap before mid-2023
    assert set(new) == {"runsc-20240729-systrap", "runsc-20240729-ptrace", "runsc-20240729-systrap-exclusive"}
    assert new["runsc-20240729-systrap-exclusive"]["runtimeArgs"] == [
        "--network=none", "--platform=systrap", "--file-access-mounts=exclusive"]
    assert all("--network=none" in e["runtimeArgs"] for e in [*old.values(), *new.values()])


def test_parse_runsc_flags_reads_names_and_defaults():
    flags = daemon_json.parse_runsc_flags(FLAGS_2024)
    assert flags == {"dcache": "-1", "file-access-mounts": "shared", "overlay2": "root:self", "platform": "systrap",
                     "directfs": "true"}
    assert daemon_json.parse_runsc_flags(FLAGS_2022)["overlay2"] == ""  # no rootfs overlay before 2023-03


def test_switch_variants_one_switch_each_where_the_build_has_it(fake_runsc, monkeypatch):
    monkeypatch.setattr(daemon_json.os.path, "exists", lambda p: False if p == "/dev/kvm" else True)
    new = daemon_json.runsc_entries(fake_runsc("20240729"), file_access_variants=True, switches=True)
    base = ["--network=none", "--platform=systrap"]
    assert {n: e["runtimeArgs"] for n, e in new.items() if n.count("-") == 3} == {
        "runsc-20240729-systrap-nodirectfs": [*base, "--directfs=false"],
        "runsc-20240729-systrap-exclusive": [*base, "--file-access-mounts=exclusive"],
        "runsc-20240729-systrap-overlaynone": [*base, "--overlay2=none"],
        "runsc-20240729-systrap-dcache100": [*base, "--dcache=100"],
        "runsc-20240729-systrap-dcache10000": [*base, "--dcache=10000"],
    }
    old = daemon_json.runsc_entries(fake_runsc("20221219"), switches=True)
    # no directfs flag; overlay2 is already off by default: those variants would be the default again
    assert set(old) == {"runsc-20221219-ptrace", "runsc-20221219-ptrace-exclusive", "runsc-20221219-ptrace-dcache100",
                        "runsc-20221219-ptrace-dcache10000"}


def test_main_registers_switch_variants(fake_runsc, tmp_path, monkeypatch):
    monkeypatch.setattr(daemon_json.os.path, "exists", lambda p: False if p == "/dev/kvm" else Path(p).exists())
    path = tmp_path / "daemon.json"
    assert daemon_json.main(["--daemon-json", str(path), "--system-runsc", fake_runsc("20221219"),
                             "--extra-runsc", fake_runsc("20240729"), "--switch-variants"]) == 0
    names = set(json.loads(path.read_text())["runtimes"])
    assert {"runsc-20240729-systrap-nodirectfs", "runsc-20240729-systrap-overlaynone",
            "runsc-20221219-ptrace-exclusive"} <= names


def test_kvm_registered_only_with_dev_kvm(fake_runsc, monkeypatch):
    monkeypatch.setattr(daemon_json.os.path, "exists", lambda p: True)
    assert "runsc-20240729-kvm" in daemon_json.runsc_entries(fake_runsc("20240729"))


def test_merge_keeps_user_entries_and_other_settings():
    user = {"runtimes": {"mine": {"path": "/usr/bin/mine"}, "runsc-20221219-ptrace": {"path": "/custom"}},
            "log-level": "debug"}
    wanted = {"runsc-20221219-ptrace": {"path": "/usr/bin/runsc"}, "crun": {"path": "/usr/bin/crun"}}
    merged, added = daemon_json.merge_runtimes(user, wanted)
    assert added == ["crun"]
    assert merged["runtimes"]["mine"] == {"path": "/usr/bin/mine"}
    assert merged["runtimes"]["runsc-20221219-ptrace"] == {"path": "/custom"}  # never clobbered
    assert merged["log-level"] == "debug"
    assert daemon_json.conflicts(user, wanted) == ["runsc-20221219-ptrace"]
    assert user["runtimes"].keys() == {"mine", "runsc-20221219-ptrace"}  # input not mutated


def test_update_file_backs_up_and_second_run_is_a_no_op(tmp_path: Path):
    path = tmp_path / "daemon.json"
    path.write_text(json.dumps({"runtimes": {"mine": {"path": "/x"}}, "debug": True}))
    wanted = {"crun": {"path": "/usr/bin/crun"}}
    assert daemon_json.update_file(path, wanted) == ["crun"]
    backup = path.with_name("daemon.json.shlib-backup")
    assert json.loads(backup.read_text()) == {"runtimes": {"mine": {"path": "/x"}}, "debug": True}
    first = path.read_text()
    stat = path.stat()
    assert daemon_json.update_file(path, wanted) == []
    assert path.read_text() == first and path.stat().st_mtime_ns == stat.st_mtime_ns
    assert json.loads(first)["runtimes"] == {"mine": {"path": "/x"}, "crun": {"path": "/usr/bin/crun"}}


def test_update_file_creates_missing_file(tmp_path: Path):
    path = tmp_path / "etc" / "docker" / "daemon.json"
    assert daemon_json.update_file(path, {"crun": {"path": "/usr/bin/crun"}}) == ["crun"]
    assert json.loads(path.read_text()) == {"runtimes": {"crun": {"path": "/usr/bin/crun"}}}


def test_main_refuses_invalid_json(tmp_path: Path, capsys):
    path = tmp_path / "daemon.json"
    path.write_text("{not json")
    assert daemon_json.main(["--daemon-json", str(path)]) == 2
    assert "not valid JSON" in capsys.readouterr().err
    assert path.read_text() == "{not json"


@pytest.mark.docker
def test_every_switch_variant_starts_a_container_here(client, tmp_path, monkeypatch):
    """The variants setup registers for the runsc builds of this host each pass the catalog's smoke test."""
    from reliability_helpers import extra_runtimes

    from shlib.collect.runtimes import catalog

    binaries = [b for b in ("/usr/bin/runsc", *sorted(Path("/opt/shlib").glob("runsc-*/usr/bin/runsc")))
                if Path(b).exists()]
    if not binaries:
        pytest.skip("no runsc binary on this host (scripts/setup-host.sh installs them)")
    wanted = {}
    for binary in map(str, binaries):
        entries = daemon_json.runsc_entries(binary, switches=True)
        wanted.update({n: e for n, e in entries.items() if not n.endswith("-kvm") and n.count("-") == 3})
    assert wanted
    monkeypatch.setenv("SHLIB_CACHE", str(tmp_path / "cache"))
    have = client.info()["Runtimes"]
    with extra_runtimes(client, {n: e for n, e in wanted.items() if n not in have}):
        cat = catalog(client)
    for name in wanted:
        assert cat[name].available, (name, cat[name].reason)
        assert cat[name].args == wanted[name]["runtimeArgs"]
