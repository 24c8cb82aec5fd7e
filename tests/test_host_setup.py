"""scripts/setup-host.sh: on a host it has set up already, a second run changes nothing."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "setup-host.sh"
pytestmark = [pytest.mark.docker, pytest.mark.skipif(os.geteuid() != 0, reason="host set-up runs as root")]


def _dockerd_pid() -> str:
    return subprocess.run(["pidof", "dockerd"], capture_output=True, text=True).stdout.strip()


def test_second_run_is_a_no_op(client):
    subprocess.run(["bash", str(SCRIPT)], check=True, capture_output=True, timeout=600)
    daemon_json = Path("/etc/docker/daemon.json")
    before = (daemon_json.read_bytes(), daemon_json.stat().st_mtime_ns, _dockerd_pid())
    out = subprocess.run(["bash", str(SCRIPT)], check=True, capture_output=True, text=True, timeout=600).stdout
    assert (daemon_json.read_bytes(), daemon_json.stat().st_mtime_ns, _dockerd_pid()) == before
    assert "daemon.json unchanged" in out and "already installed" in out
    assert "installing" not in out and "starting dockerd" not in out and "reloading" not in out
    assert "runsc-20240729-systrap" in out and "crun" in out  # says what is registered


def test_system_apt_sources_are_untouched():
    """The newer gVisor comes through a private apt configuration, not the system's sources."""
    sources = "".join(p.read_text() for p in [Path("/etc/apt/sources.list"), *Path("/etc/apt/sources.list.d").glob("*")]
                      if p.is_file())
    assert "trixie" not in sources
    private = Path("/var/lib/shlib/apt/sources.list")
    if private.exists():
        assert "trixie" in private.read_text()
