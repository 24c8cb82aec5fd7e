"""A batch of probe containers through the Docker engine, started together (``shlib.collect.probe``).

A batch is ``n`` fresh containers of one runtime: created and started in a thread pool, released
at once by the barrier, each waited for in a thread of its own with a deadline, read and removed
whatever happens.

Containers are locked down: no network, read-only root file system and library, every
capability dropped, no-new-privileges, a non-root user, pids and memory limits.
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from pathlib import Path
from typing import Any

import docker
import docker.errors
import requests.exceptions

from shlib.collect.cgroup import Cgroup, find_cgroup
from shlib.collect.engine import LABEL, client_for_runtime, oci_runtime
from shlib.collect.image import PROBE_PATH, PROBE_USER
from shlib.collect.probe import (
    EXIT_MESSAGE,
    Outcome,
    _Frames,
    go_message,
    now_ms,
    parse_payload,
    probe_argument,
    wait_payload,
    wait_ready,
)
from shlib.errors import EngineUnavailable

#: Extra seconds the start phase allows per container of the batch (creating 64 sandboxes
#: on 2 cores takes a while; that time is outside every timed window).
START_S_PER_CONTAINER = 2.0
#: The cgroups' CPU is read this long (ms) before the shared go time: reading a batch's cgroups takes
#: well under a millisecond, and the margin absorbs a late wake-up on a busy host, so the reads end
#: before any probe starts loading (5 ms of an idle sandbox is noise beside a load's CPU).
GO_READ_EARLY_MS = 5.0
#: Seconds to wait for the engine to kill/remove a container before reaping its runtime.
CLEANUP_S = 10.0


def _engine_gone(exc: BaseException) -> bool:
    """The engine cannot be reached (as opposed to a slow answer: docker-py over a unix
    socket reports a read timeout as a ConnectionError saying 'Read timed out')."""
    if isinstance(exc, requests.exceptions.ConnectionError) and "timed out" in str(exc).lower():
        return False
    return isinstance(exc, (requests.exceptions.ConnectionError, FileNotFoundError, ConnectionRefusedError))


@contextlib.contextmanager
def signals_deferred() -> Iterator[None]:
    """Hold SIGINT/SIGTERM (main thread) while cleaning up; they are delivered right after,
    so a second Ctrl-C cannot cut the removal of a batch's containers short."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held = {signal.SIGINT, signal.SIGTERM}
    old = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def _gather(futures: list[Any], deadline: float | None = None) -> None:
    """Wait for ``futures`` (until ``deadline``, leaving late ones running); raise EngineUnavailable
    once all are seen if any found the engine gone (so the caller cleans up everything first)."""
    gone: BaseException | None = None
    for fut in futures:
        try:
            fut.result(timeout=None if deadline is None else max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            pass
        except BaseException as exc:
            if not _engine_gone(exc):
                raise
            gone = exc
    if gone is not None:
        raise EngineUnavailable(f"the Docker engine stopped answering during a batch ({gone})")


def reap_runtime(container_id: str) -> int:
    """Kill the runtime processes of a container the engine cannot stop (a hung sandbox).

    Only possible when the engine runs on this host; the shim is left to exit by itself.
    Returns how many processes were killed.
    """
    killed = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            comm = (entry / "comm").read_text().strip()
        except OSError:
            continue
        if container_id.encode() in cmdline and not comm.startswith("containerd-shim"):
            try:
                os.kill(int(entry.name), signal.SIGKILL)
                killed += 1
            except OSError:
                pass
    return killed


class ContainerBatch:
    """Runs batches of probe containers under one engine."""

    def __init__(self, client: docker.DockerClient, timeout_s: float, memory_mb: int = 1024,
                 pids_limit: int = 512, labels: dict[str, str] | None = None, extra: dict[str, Any] | None = None,
                 hold: bool = True):
        self.client = client
        #: Arguments an engine needs beyond the lock-down (``engine.container_quirks``: Podman's ulimits).
        self.extra = dict(extra or {})
        #: The probe holds after its JSON line until told to exit, so the cgroup is read while it exists.
        self.hold = hold
        self.timeout_s = timeout_s
        self.memory_mb = memory_mb
        self.pids_limit = pids_limit
        self.labels = {LABEL: "true", **(labels or {})}

    def create_kwargs(self, image: str, runtime: str | None, modules: tuple[str, ...], lib: str,
                      mount: dict[str, Any], labels: dict[str, str],
                      command: list[str] | None = None) -> dict[str, Any]:
        """Everything ``containers.create`` gets: the locked-down probe container.

        ``command``: the probe's command line when it is not the Node probe's (the Python probe's).
        """
        return dict(
            image=image, command=command or ["node", PROBE_PATH, probe_argument(lib, modules, self.hold)],
            runtime=runtime,
            network_mode="none", user=PROBE_USER, cap_drop=["ALL"], security_opt=["no-new-privileges"],
            read_only=True, pids_limit=self.pids_limit, mem_limit=f"{self.memory_mb}m",
            stdin_open=True, tty=False, labels={**self.labels, **labels}, **mount, **self.extra,
        )

    def run(self, n: int, kwargs: dict[str, Any]) -> list[Outcome]:
        """Create ``n`` containers, start them, release them together, collect what they print.

        Whatever happens (a hung runtime, the engine going away, Ctrl-C/SIGTERM in the main
        thread), every container of the batch is removed before this returns or raises.
        """
        outcomes = [Outcome(slot=i) for i in range(n)]
        client = client_for_runtime(self.client, kwargs.get("runtime"))  # Podman: that runtime's own service
        containers: dict[int, Any] = {}
        sockets: dict[int, Any] = {}
        # docker-py's attach handle owns the HTTP response: once garbage-collected it closes the
        # socket under us (fd -1, seen with 64 containers), so the handles live as long as the batch.
        handles: dict[int, Any] = {}
        cgroups: dict[int, Cgroup] = {}  # the containers' cgroups found on this host (none for a remote engine)
        # A label of this batch alone: the final sweep finds containers whose create call
        # returned too late to be recorded (an interrupt while the engine was creating them).
        token = uuid.uuid4().hex
        kwargs = {**kwargs, "labels": {**kwargs.get("labels", {}), "shlib.batch_token": token}}
        stopping = threading.Event()
        futures: list[Any] = []
        # Creating and removing: at most 16 engine calls at once. Waiting: one thread per container,
        # so that no container's exit is seen late because its wait queued behind others (wall_ms).
        pool = ThreadPoolExecutor(max_workers=min(n, 16), thread_name_prefix="shlib-batch")
        waiters = ThreadPoolExecutor(max_workers=n, thread_name_prefix="shlib-wait")
        try:
            def create_and_start(slot: int) -> None:
                out = outcomes[slot]
                if stopping.is_set():
                    out.fail("crashed", "not started: the batch was stopped")
                    return
                out.t_create, out.h_create = time.monotonic(), now_ms()
                try:
                    c = client.containers.create(**kwargs)
                    out.h_created = now_ms()
                    containers[slot] = c
                    sock = client.api.attach_socket(c.id, params={"stdin": 1, "stdout": 1, "stream": 1})
                    handles[slot] = sock
                    sockets[slot] = getattr(sock, "_sock", sock)
                    out.h_start = now_ms()
                    c.start()
                    cgroup = find_cgroup(c.id)
                    if cgroup is not None:
                        cgroups[slot] = cgroup
                except docker.errors.APIError as exc:
                    out.fail("start_failed", str(exc.explanation or exc))
                except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError) as exc:
                    if _engine_gone(exc):
                        raise
                    out.fail("timeout", f"the engine did not start the container in time ({exc})")

            futures = [pool.submit(create_and_start, i) for i in range(n)]
            start_deadline = time.monotonic() + self.timeout_s + START_S_PER_CONTAINER * n
            _gather(futures, start_deadline)
            hung = [i for i, fut in enumerate(futures) if not fut.done()]
            for slot in hung:
                outcomes[slot].fail("timeout", f"the runtime did not start the container within "
                                    f"{self.timeout_s + START_S_PER_CONTAINER * n:.0f} s")
                if slot in containers:
                    reap_runtime(containers[slot].id)
            for fut in futures:
                try:
                    fut.result(timeout=CLEANUP_S)
                except BaseException:
                    pass

            live = {i: (sockets[i], _Frames()) for i in sockets if outcomes[i].status == "ok"}
            closed: set[int] = set()
            ready = wait_ready(live, time.monotonic() + self.timeout_s, closed)
            for slot in ready:
                outcomes[slot].h_ready = live[slot][1].h_ready
            go = go_message(len(ready))
            for slot in ready:  # the barrier: release every ready probe at once
                outcomes[slot].ready = True
                try:
                    outcomes[slot].h_go = now_ms()
                    live[slot][0].sendall(go)
                except OSError as exc:
                    outcomes[slot].fail("crashed", f"could not release the probe: {exc}")
            # CPU so far, read as the shared go time comes (reads take microseconds), so that the
            # sandboxes' idle CPU while the go message leads is not counted as the load's.
            go_at_ms = float(go.split()[1])
            time.sleep(max(0.0, (go_at_ms - GO_READ_EARLY_MS) / 1e3 - time.time()))
            for slot in ready:
                if slot in cgroups:
                    outcomes[slot].cpu_before_ns = cgroups[slot].cpu_ns()
            for slot in live:
                # A probe whose output ended before 'ready' has exited: _collect reports it as
                # crashed with its exit code and stderr (it did not time out).
                if slot not in ready and slot not in closed:
                    outcomes[slot].fail("timeout", f"the probe was not ready within {self.timeout_s:.0f} s")
            go_time = time.monotonic()

            def finish(slot: int) -> None:
                out, c = outcomes[slot], containers[slot]
                if out.status == "ok":
                    if slot in live and wait_payload(*live[slot], go_time + self.timeout_s):
                        # The probe has reported and holds: its sandbox is still whole, read it now.
                        out.h_payload = now_ms()
                        if slot in cgroups:
                            out.cpu_after_ns = cgroups[slot].cpu_ns()
                            out.mem_peak_bytes = cgroups[slot].memory_peak_bytes()
                    out.h_release = now_ms() if self.hold else out.h_payload
                    if self.hold and slot in live:
                        try:
                            live[slot][0].sendall(EXIT_MESSAGE)
                        except OSError:
                            pass  # it has gone already: the wait below sees how
                    remaining = self.timeout_s - (time.monotonic() - go_time)
                    try:
                        result = c.wait(timeout=max(0.1, remaining))
                        out.h_exit = now_ms()
                        out.exit_code = result.get("StatusCode")
                    except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError) as exc:
                        if _engine_gone(exc):
                            raise
                        out.fail("timeout", f"the probe did not finish within {self.timeout_s:.0f} s of go")
                    out.wall_ms = (time.monotonic() - out.t_create) * 1e3
                if out.exit_code is None:  # the probe did not exit by itself
                    self._kill(c)
                self._collect(c, out)

            _gather([waiters.submit(finish, slot) for slot in list(containers)])
        finally:
            stopping.set()
            with signals_deferred():
                for sock in [*sockets.values(), *handles.values()]:
                    try:
                        sock.close()
                    except OSError:
                        pass
                # Creations in flight finish first (bounded), so that their containers are removed too.
                wait_futures(futures, timeout=CLEANUP_S)
                removals = [pool.submit(self._remove_timed, c, outcomes[slot]) for slot, c in list(containers.items())]
                wait_futures(removals, timeout=CLEANUP_S * 3)
                self._sweep(token, client)
                pool.shutdown(wait=False, cancel_futures=True)
                waiters.shutdown(wait=False, cancel_futures=True)
        return outcomes

    def _sweep(self, token: str, client: docker.DockerClient | None = None) -> None:
        """Remove any container of the batch still there (best effort: the engine may be gone)."""
        try:
            left = (client or self.client).containers.list(all=True, sparse=True,
                                               filters={"label": f"shlib.batch_token={token}"})
        except Exception:
            return
        for c in left:
            try:
                self._remove(c)
            except Exception:
                pass

    def _kill(self, container: Any) -> None:
        try:
            container.reload()
            if container.status in ("running", "created", "restarting", "paused"):
                container.kill()
        except docker.errors.APIError:
            pass

    def _collect(self, container: Any, out: Outcome) -> None:
        try:
            container.reload()
            attrs = container.attrs
            state = attrs.get("State", {})
            out.engine_runtime = attrs.get("HostConfig", {}).get("Runtime")
            if out.engine_runtime == "oci":  # Podman's compat answer: the runtime it really used is in libpod's
                out.engine_runtime = oci_runtime(container.client, container.id) or out.engine_runtime
            out.created_at, out.started_at, out.finished_at = attrs.get("Created"), state.get("StartedAt"), \
                state.get("FinishedAt")
            if out.exit_code is None and state.get("Status") == "exited":
                out.exit_code = state.get("ExitCode")
            if state.get("OOMKilled"):
                out.fail("crashed", "killed by the memory limit (OOM)")
            stdout = container.logs(stdout=True, stderr=False).decode(errors="replace")
            out.payload = parse_payload(stdout)
            if out.status == "ok" and (out.payload is None or out.exit_code != 0):
                stderr = container.logs(stdout=False, stderr=True).decode(errors="replace")
                out.fail("crashed", f"probe exited {out.exit_code} without a result: {stderr.strip()[-1500:]}")
        except docker.errors.APIError as exc:
            out.fail("crashed", f"could not read the container's record: {exc}")

    def _remove_timed(self, container: Any, out: Outcome) -> None:
        """Remove a container, stamping the call (teardown_ms: the engine's removal of the exited container).

        A batch's containers are removed together once all have exited, so no teardown overlaps a load.
        """
        began = now_ms()
        self._remove(container)
        if out.h_exit is not None:
            out.h_remove, out.h_removed = began, now_ms()

    def _remove(self, container: Any) -> None:
        """Remove a container; reap its runtime first when the engine cannot kill it."""
        try:
            container.remove(force=True)
        except docker.errors.NotFound:
            pass
        except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError, docker.errors.APIError) as exc:
            if _engine_gone(exc):
                raise
            reap_runtime(container.id)
            try:
                container.remove(force=True)
            except docker.errors.NotFound:
                pass


