"""A second Docker engine on this machine, for the tests of naming engines, merging runs and losing one.

Its own data-root, exec-root, pidfile, socket and containerd (a managed one under its exec-root, in
a namespace of its own), no bridge and no iptables, and the runtimes of the main engine's
daemon.json. Started and stopped by the tests; stopping removes its directory.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

SOCKET = "/run/shlib-test-dockerd.sock"
MAIN_DAEMON_JSON = Path("/etc/docker/daemon.json")


class SecondEngine:
    """``dockerd`` beside the main one; ``url`` names it for ``--engine``."""

    def __init__(self, socket: str = SOCKET):
        self.socket = socket
        self.root = Path(tempfile.mkdtemp(prefix="shlib-test-dockerd-", dir="/var/tmp"))
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def start(self, timeout_s: float = 60.0) -> SecondEngine:
        runtimes = {}
        if MAIN_DAEMON_JSON.exists():
            runtimes = json.loads(MAIN_DAEMON_JSON.read_text()).get("runtimes", {})
        config = self.root / "daemon.json"
        # its own trust key, hence its own engine ID (Docker 20.10 derives the ID from /etc/docker/key.json)
        config.write_text(json.dumps({"runtimes": runtimes, "deprecated-key-path": str(self.root / "key.json")},
                                     indent=2))
        if os.path.exists(self.socket):
            os.unlink(self.socket)
        log = open(self.root / "dockerd.log", "wb")  # noqa: SIM115 - lives as long as the daemon
        self.process = subprocess.Popen(
            ["dockerd", "--config-file", str(config), "--data-root", str(self.root / "data"),
             "--exec-root", str(self.root / "exec"), "--pidfile", str(self.root / "dockerd.pid"), "-H", self.url,
             "--bridge=none", "--iptables=false", "--ip-masq=false", "--ip-forward=false",
             "--containerd-namespace", "shlib-test", "--containerd-plugins-namespace", "shlib-test-plugins"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the second dockerd exited {self.process.returncode}: {self.log_tail()}")
            if os.path.exists(self.socket):
                done = subprocess.run(["docker", "-H", self.url, "info", "--format", "{{.ID}}"], capture_output=True,
                                      text=True, timeout=30)
                if done.returncode == 0:
                    return self
            time.sleep(0.3)
        raise RuntimeError(f"the second dockerd did not answer within {timeout_s:.0f} s: {self.log_tail()}")

    def log_tail(self) -> str:
        try:
            return (self.root / "dockerd.log").read_text(errors="replace")[-1500:]
        except OSError:
            return ""

    def own_processes(self) -> list[int]:
        """This engine's processes (dockerd, its containerd, shims, runtimes): those naming its directory."""
        found = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit() and int(entry.name) != os.getpid():
                try:
                    if str(self.root).encode() in (entry / "cmdline").read_bytes():
                        found.append(int(entry.name))
                except OSError:
                    continue
        return found

    def kill(self) -> None:
        """Lose the engine: SIGKILL to its dockerd (its containerd and shims are left, as after a crash)."""
        assert self.process is not None
        self.process.kill()
        self.process.wait(timeout=30)

    def stop(self) -> None:
        """Stop it (SIGTERM, then SIGKILL), kill what it left, unmount and remove its directory."""
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=30)
        for pid in self.own_processes():
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
        time.sleep(0.5)
        mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()
                  if line.split()[1].startswith(str(self.root))]
        for mount in sorted(mounts, key=len, reverse=True):
            subprocess.run(["umount", "-l", mount], capture_output=True)
        shutil.rmtree(self.root, ignore_errors=True)
        if os.path.exists(self.socket):
            os.unlink(self.socket)
