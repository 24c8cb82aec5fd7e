"""Helpers and fixtures of the reliability and security tests (tests/test_reliability.py,
tests/test_security.py): a real engine (skip with the reason where none can be reached,
fail when CI=true), the local test packages of tests/fixtures/, leftover checks, and
temporary runtimes registered with the engine (restored afterwards)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import no_engine

from shlib.results.metadata import RunMetadata
from shlib.results.store import read_metadata

REPO = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"
SHLIB = [sys.executable, "-m", "shlib.cli"]
DAEMON_JSON = Path(os.environ.get("SHLIB_DAEMON_JSON", "/etc/docker/daemon.json"))
SETUP_HOST = REPO / "scripts" / "setup-host.sh"

#: The local test packages (see tests/fixtures/README.md).
FX_OK, FX_ESM, FX_THROWS = "shlib-fx-ok", "shlib-fx-esm-only", "shlib-fx-throws"
FX_MISSING_DEP, FX_MISSING_MAIN, FX_HANGS = "shlib-fx-missing-dep", "shlib-fx-missing-main", "shlib-fx-hangs"


@pytest.fixture(scope="session")
def engine():
    """A client of the real engine, pool sized for 64 containers at once."""
    from shlib.collect.engine import connect
    from shlib.errors import EngineUnavailable

    try:
        return connect(pool_size=4 * 64 + 8)
    except EngineUnavailable as exc:
        no_engine(str(exc))


@pytest.fixture(scope="session")
def fx_library():
    """A library holding only the local test packages (no registry needed)."""
    from shlib.collect.library import install_library

    return install_library([], local={p.name: p for p in sorted(FIXTURES.iterdir()) if p.is_dir()})


@pytest.fixture(scope="session")
def probe_image(engine):
    from shlib.collect.image import ensure_image

    return ensure_image(engine, "host")


def run_containers(client: Any, run_id: str) -> list[Any]:
    return client.containers.list(all=True, sparse=True, filters={"label": f"shlib.run_id={run_id}"})


def assert_no_containers(client: Any, run_id: str) -> None:
    left = [f"{c.attrs.get('Names')} ({c.attrs.get('State')})" for c in run_containers(client, run_id)]
    assert not left, f"run {run_id} left containers behind: {left}"


def processes_matching(*needles: str) -> list[tuple[int, str]]:
    """(pid, cmdline) of every process whose command line holds all ``needles``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if cmd and all(n in cmd for n in needles):
            found.append((int(entry.name), cmd[:300]))
    return found


def wait_for(predicate: Any, timeout_s: float, interval_s: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval_s)
    return bool(predicate())


def write_spec(path: Path, **fields: Any) -> Path:
    import yaml

    path.write_text(yaml.safe_dump(fields))
    return path


def read_meta(out: Path) -> RunMetadata:
    return read_metadata(out)


def start_shlib(args: list[str], **kwargs: Any) -> subprocess.Popen[str]:
    """``shlib ...`` as a subprocess of its own session (signals go to it alone)."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen([*SHLIB, *args], cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, start_new_session=True, **kwargs)


def run_shlib(args: list[str], timeout: float = 240) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.run([*SHLIB, *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def kill_group(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)


# --- the engine itself -------------------------------------------------------------------------

def engine_up() -> bool:
    return subprocess.run(["docker", "version", "--format", "{{.Server.Version}}"], capture_output=True,
                          timeout=30).returncode == 0


def dockerd_pid() -> int | None:
    out = subprocess.run(["pidof", "dockerd"], capture_output=True, text=True)
    return int(out.stdout.split()[0]) if out.returncode == 0 and out.stdout.strip() else None


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, killed but not reaped yet, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] not in ("Z", "X")


def clear_stale_pidfile(pidfile: Path = Path("/var/run/docker.pid")) -> None:
    """dockerd refuses to start (or waits a minute for a containerd that never answers) while
    a pid file names a process that still exists, which a killed process does until its parent
    reaps it (a zombie): drop the file once that process is dead."""
    try:
        pid = int(pidfile.read_text().strip())
    except FileNotFoundError:
        return
    except ValueError:
        pidfile.unlink(missing_ok=True)
        return
    if not wait_for(lambda: not _alive(pid), 10):
        return  # a live dockerd: leave it
    pidfile.unlink(missing_ok=True)


def ensure_engine_up() -> None:
    """Start the engine again with the project's idempotent setup script (and wait for it)."""
    outputs = []
    for _ in range(2):
        if engine_up():
            return
        clear_stale_pidfile()
        clear_stale_pidfile(Path("/var/run/docker/containerd/containerd.pid"))  # dockerd's own containerd
        done = subprocess.run(["bash", str(SETUP_HOST)], capture_output=True, text=True, timeout=600)
        outputs.append(f"{done.stdout[-1500:]} {done.stderr[-1500:]}")
    assert engine_up(), f"the engine did not come back: {outputs}"


def _reload_dockerd() -> None:
    pid = dockerd_pid()
    assert pid, "dockerd is not running on this host"
    os.kill(pid, signal.SIGHUP)


@contextlib.contextmanager
def extra_runtimes(client: Any, runtimes: dict[str, dict[str, Any]]) -> Iterator[None]:
    """Register ``runtimes`` in daemon.json and reload dockerd (SIGHUP); restore both afterwards.

    Needs root and an engine on this host. Other runs see the extra runtimes only meanwhile.
    """
    if os.geteuid() != 0 or dockerd_pid() is None or not DAEMON_JSON.exists():
        pytest.skip("registering a runtime needs root, a local dockerd and its daemon.json")
    original = DAEMON_JSON.read_text()
    config = json.loads(original)
    config.setdefault("runtimes", {}).update(runtimes)
    try:
        DAEMON_JSON.write_text(json.dumps(config, indent=2) + "\n")
        _reload_dockerd()
        assert wait_for(lambda: set(runtimes) <= set(client.info().get("Runtimes", {})), 20), \
            "dockerd did not pick up the test runtimes"
        yield
    finally:
        current = json.loads(DAEMON_JSON.read_text())
        for name in runtimes:  # only ours: keep whatever else changed meanwhile
            current.get("runtimes", {}).pop(name, None)
        DAEMON_JSON.write_text(json.dumps(current, indent=2) + "\n" if current != json.loads(original)
                               else original)
        _reload_dockerd()
        wait_for(lambda: not set(runtimes) & set(client.info().get("Runtimes", {})), 20)
