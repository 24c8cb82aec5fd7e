"""daemon.json merging: a user's entries survive, a second run changes nothing. No engine needed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from shlib.collect import daemon_json


@pytest.fixture
def fake_runsc(tmp_path: Path) -> str:
    def make(date: str) -> str:
        path = tmp_path / f"runsc-{date}"
        path.write_text(f"#!/bin/sh\necho 'runsc version 0.0~{date}.0'\necho 'spec: 1.0.2'\n")
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
