"""A batch of probe processes straight on the host (``native``: the floor, no container).

No container: no create or teardown phase and no cgroup of its own (cpu_ms and mem_peak_mb stay
null; proc_cpu_ms comes from the probe). start_ms is the spawn: Popen until the process began.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

from shlib.collect.probe import (
    EXIT_MESSAGE,
    Outcome,
    _Lines,
    go_message,
    now_ms,
    parse_payload,
    probe_argument,
    wait_payloads,
    wait_ready,
)


class NativeBatch:
    """Runs batches of probe processes directly on the host (the floor)."""

    def __init__(self, node: str, probe: Path, timeout_s: float, hold: bool = True, flags: tuple[str, ...] = ()):
        """``node``: the interpreter (Node, or Python with its ``flags``) that runs ``probe``."""
        self.node = node
        self.hold = hold
        self.probe = probe
        self.timeout_s = timeout_s
        self.flags = flags

    def run(self, n: int, lib: str, modules: tuple[str, ...]) -> list[Outcome]:
        outcomes = [Outcome(slot=i) for i in range(n)]
        procs: dict[int, subprocess.Popen[bytes]] = {}
        try:
            for i in range(n):
                # The spawn: created_at as it begins, started_at once the process runs (the
                # engine's Created and StartedAt of a container).
                outcomes[i].t_create = time.monotonic()
                outcomes[i].created_at = _now_iso()
                outcomes[i].h_create = outcomes[i].h_start = now_ms()
                procs[i] = subprocess.Popen([self.node, *self.flags, str(self.probe),
                                             probe_argument(lib, modules, self.hold)],
                                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                            start_new_session=True)
                outcomes[i].started_at = _now_iso()
            streams = {i: (p.stdout, _Lines()) for i, p in procs.items()}
            closed: set[int] = set()
            ready = wait_ready(streams, time.monotonic() + self.timeout_s, closed)
            go = go_message(len(ready))
            for i in ready:
                outcomes[i].ready = True
                outcomes[i].h_ready = streams[i][1].h_ready
                outcomes[i].h_go = now_ms()
                procs[i].stdin.write(go)  # type: ignore[union-attr]
                procs[i].stdin.flush()  # type: ignore[union-attr]
            go_time = time.monotonic()

            def reported(i: int) -> None:  # as soon as a probe has reported, it is told to exit (hold)
                outcomes[i].h_payload = outcomes[i].h_release = now_ms()
                if self.hold:
                    _tell_exit(procs[i])

            wait_payloads({i: streams[i] for i in ready}, go_time + self.timeout_s, reported)
            for i in ready:
                if outcomes[i].h_payload is None and self.hold:
                    _tell_exit(procs[i])
            for i, proc in procs.items():
                out = outcomes[i]
                # A probe whose output ended before 'ready' has exited: reported below as crashed with
                # its exit code and stderr, as ContainerBatch does (it did not time out).
                if i not in ready and i not in closed:
                    out.fail("timeout", f"the probe was not ready within {self.timeout_s:.0f} s")
                    os.killpg(proc.pid, signal.SIGKILL)
                try:
                    rest, err = proc.communicate(timeout=max(0.1, self.timeout_s - (time.monotonic() - go_time)))
                except subprocess.TimeoutExpired:
                    os.killpg(proc.pid, signal.SIGKILL)
                    rest, err = proc.communicate()
                    out.fail("timeout", f"the probe did not finish within {self.timeout_s:.0f} s of go")
                out.wall_ms = (time.monotonic() - out.t_create) * 1e3
                out.h_exit = now_ms()
                out.finished_at = _now_iso()
                out.exit_code = proc.returncode
                out.payload = parse_payload((streams[i][1].stdout + rest).decode(errors="replace"))
                if out.status == "ok" and (out.payload is None or proc.returncode != 0):
                    out.fail("crashed", f"probe exited {proc.returncode} without a result: "
                             f"{err.decode(errors='replace').strip()[-1500:]}")
        finally:
            for proc in procs.values():
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGKILL)
                    proc.wait()
        return outcomes


def _tell_exit(proc: subprocess.Popen[bytes]) -> None:
    """Send the probe its 'exit' line (a probe gone already is seen by communicate())."""
    try:
        proc.stdin.write(EXIT_MESSAGE)  # type: ignore[union-attr]
        proc.stdin.flush()  # type: ignore[union-attr]
    except OSError:
        pass


def _now_iso() -> str:
    """Now, UTC, to the microsecond, as the engine writes its timestamps (one reading of the clock)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
