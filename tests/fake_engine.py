"""One fake ``docker.DockerClient`` for unit tests: exactly the surface ``ContainerBatch`` uses.

As docker-py's own unit tests do (tests/unit/fake_api_client.py), one canned fake: tests read
what was asked of the engine (``client.created``: the kwargs of every create) and script what
the engine and each probe do (``Script``, given per container in order of creation).

Each started container runs a fake probe in a thread on one end of a socketpair; the harness
holds the other end as the attached stream. The probe speaks the real protocol: it writes
docker's multiplexed frames (8-byte header ``>BxxxL``, stream 1 = stdout) with ``ready``, reads
the ``go <epoch ms>`` line, then sends its JSON line (the shape of probes/load.js) and puts it in
its logs; with ``hold`` in its argument it then waits for the ``exit`` line (or the end of its
stdin) and exits 0.
"""

from __future__ import annotations

import copy
import itertools
import json
import socket
import struct
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import docker.errors
import requests.exceptions

#: What a scripted probe does. normal: ready, go, result, exit 0. crash: exits 1 with ``stderr``
#: before ready. never_ready: hangs before ready. hang: ready, go, then hangs. oom: ready, go,
#: then killed by the memory limit (exit 137, OOMKilled). deaf: reports, then never exits (ignores 'exit').
BEHAVIOURS = ("normal", "crash", "never_ready", "hang", "oom", "deaf")


@dataclass
class Script:
    """What one fake container does (and how the fake engine answers for it)."""

    behaviour: str = "normal"
    stderr: str = "node: something went wrong"
    #: Seconds Node takes to boot before the probe prints ready.
    ready_delay_s: float = 0.0
    #: start() raises docker.errors.APIError with this explanation (nothing runs).
    start_error: str | None = None
    #: wait() answers only after this many seconds (a slow engine), then as usual.
    wait_delay_s: float = 0.0
    #: wait() raises this instead of answering (e.g. a ConnectionError: the engine went away).
    wait_raises: BaseException | None = None
    #: create() makes the container, then raises this (the answer lost, as in an interrupt).
    create_raises: BaseException | None = None

    def __post_init__(self) -> None:
        assert self.behaviour in BEHAVIOURS, self.behaviour


def frame(data: bytes, stream: int = 1) -> bytes:
    """One frame of docker's multiplexed (non-TTY) attach stream."""
    return struct.pack(">BxxxL", stream, len(data)) + data


def engine_time() -> str:
    """A timestamp as the engine writes them (RFC 3339, nanoseconds)."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "123Z"


class FakeContainer:
    def __init__(self, client: FakeClient, kwargs: dict[str, Any], script: Script, number: int):
        self.client, self.kwargs, self.script = client, kwargs, script
        self.id = f"{number:04d}" + "f" * 60
        self.name = f"fake-{number}"
        self.labels: dict[str, str] = dict(kwargs.get("labels") or {})
        self.attrs: dict[str, Any] = {
            "Id": self.id, "Name": f"/{self.name}", "Created": engine_time(),
            "HostConfig": {"Runtime": kwargs.get("runtime")},
            "State": {"Status": "created", "StartedAt": "0001-01-01T00:00:00Z",
                      "FinishedAt": "0001-01-01T00:00:00Z", "ExitCode": 0, "OOMKilled": False},
        }
        self.stdout, self.stderr = b"", b""
        self.removed = False
        #: time.monotonic() when the probe printed ready / read go / read exit (None: it did not).
        self.ready_at: float | None = None
        self.go_at: float | None = None
        #: time.monotonic() when the go line arrived (go_at is when the time it names came: the load).
        self.go_received_at: float | None = None
        self.exit_at: float | None = None
        self.calls: list[str] = []
        self._killed = threading.Event()
        self._exited = threading.Event()
        self._exit_lock = threading.Lock()
        self._harness_end, self._probe_end = socket.socketpair()

    @property
    def status(self) -> str:
        return self.attrs["State"]["Status"]

    # --- the engine's side ----------------------------------------------------------------------
    def start(self) -> None:
        self.calls.append("start")
        if self.script.start_error is not None:
            raise docker.errors.APIError("500 Server Error: Internal Server Error",
                                         explanation=self.script.start_error)
        self.attrs["State"].update(Status="running", StartedAt=engine_time())
        threading.Thread(target=self._probe, daemon=True, name=f"fake-probe-{self.name}").start()

    def wait(self, timeout: float | None = None) -> dict[str, Any]:
        self.calls.append("wait")
        if self.script.wait_raises is not None:
            raise self.script.wait_raises
        time.sleep(self.script.wait_delay_s)
        if not self._exited.wait(timeout):
            raise requests.exceptions.ReadTimeout("Read timed out. (fake)")
        return {"StatusCode": self.attrs["State"]["ExitCode"], "Error": None}

    def reload(self) -> None:
        self.calls.append("reload")

    def logs(self, stdout: bool = True, stderr: bool = True) -> bytes:
        return (self.stdout if stdout else b"") + (self.stderr if stderr else b"")

    def kill(self) -> None:
        self.calls.append("kill")
        if self.status != "running":
            raise docker.errors.APIError("409 Conflict", explanation=f"Container {self.id} is not running")
        self._killed.set()
        self._exit(137)

    def remove(self, force: bool = False) -> None:
        self.calls.append("remove")
        if self.removed:
            raise docker.errors.NotFound(f"No such container: {self.id}")
        if self.status == "running" and not force:
            raise docker.errors.APIError("409 Conflict", explanation="container is running")
        self._killed.set()
        if self.status == "running":
            self._exit(137)
        self.removed = True
        self._harness_end.close()

    # --- the probe inside -----------------------------------------------------------------------
    def _probe(self) -> None:
        behaviour = self.script.behaviour
        if behaviour == "crash":
            self.stderr = self.script.stderr.encode() + b"\n"
            return self._exit(1)
        if behaviour == "never_ready" or self._killed.wait(self.script.ready_delay_s):
            self._killed.wait()
            return self._exit(137)
        self.ready_at = time.monotonic()
        self._send(frame(b"ready\n"))
        go = self._read_line()
        if go is None or self._killed.is_set():
            return self._exit(137)
        self.go_received_at = time.monotonic()
        at_ms = float(go.split()[1]) if len(go.split()) > 1 else 0.0  # like the probe: load at the named time
        if self._killed.wait(max(0.0, at_ms / 1e3 - time.time())):
            return self._exit(137)
        self.go_at = time.monotonic()
        if behaviour == "hang":
            self._killed.wait()
            return self._exit(137)
        if behaviour == "oom":
            self.attrs["State"]["OOMKilled"] = True
            return self._exit(137)
        line = json.dumps(self._payload(go)).encode() + b"\n"
        self.stdout = b"ready\n" + line
        self._send(frame(line))
        if behaviour == "deaf":
            self._killed.wait()
            return self._exit(137)
        if json.loads(self.kwargs["command"][-1]).get("hold"):
            said = self._read_line()
            self.exit_at = time.monotonic() if said is not None else None
            if said is None or self._killed.is_set():
                return self._exit(137)
        self._exit(0)

    def _payload(self, go: str) -> dict[str, Any]:
        modules = json.loads(self.kwargs["command"][-1])["modules"]
        now = time.time() * 1e3
        return {"probe": "load", "node": "v20.11.1", "boot_ms": 31.5, "ready_wall_ms": now,
                "process_start_wall_ms": now - 40.0, "go_recv_wall_ms": now, "go_wall_ms": float(go.split()[1]),
                "loaded_wall_ms": time.time() * 1e3, "proc_cpu_ms": 10.0, "rss_bytes": 48 * 2**20,
                "results": [{"module": m, "version": "1.0.0", "kind": "cjs", "ok": True, "error": None,
                             "load_ms": 12.5, "files": 3} for m in modules]}

    def _send(self, data: bytes) -> None:
        try:
            self._probe_end.sendall(data)
        except OSError:
            pass

    def _read_line(self) -> str | None:
        buf = b""
        while not buf.endswith(b"\n"):
            try:
                chunk = self._probe_end.recv(4096)
            except OSError:
                return None
            if not chunk:
                return None
            buf += chunk
        return buf.decode()

    def _exit(self, code: int) -> None:
        with self._exit_lock:  # once: by the probe itself, or by kill/remove
            if self._exited.is_set():
                return
            self.attrs["State"].update(Status="exited", ExitCode=code, FinishedAt=engine_time())
            try:  # the attached stream ends with the process (shutdown wakes a blocked recv)
                self._probe_end.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._probe_end.close()
            self._exited.set()


class _Attached:
    """What docker-py's attach_socket returns: the socket is its ``_sock``."""

    def __init__(self, sock: socket.socket):
        self._sock = sock

    def close(self) -> None:
        self._sock.close()


class _Api:
    def __init__(self, client: FakeClient):
        self.client = client

    def attach_socket(self, container_id: str, params: dict[str, Any] | None = None) -> _Attached:
        self.client.attach_params.append(params)
        return _Attached(self.client.get(container_id)._harness_end)


class _Containers:
    def __init__(self, client: FakeClient):
        self.client = client

    def create(self, **kwargs: Any) -> FakeContainer:
        return self.client._create(kwargs)

    def list(self, all: bool = False, sparse: bool = False,  # noqa: A002  (docker-py's name)
             filters: dict[str, Any] | None = None) -> list[FakeContainer]:
        found = [c for c in self.client.containers_made if not c.removed and (all or c.status == "running")]
        label = (filters or {}).get("label")
        for want in [label] if isinstance(label, str) else (label or []):
            key, _, value = want.partition("=")
            found = [c for c in found if key in c.labels and (not value or c.labels[key] == value)]
        self.client.listed.append([c.name for c in found])
        return found


class FakeClient:
    """A fake docker.DockerClient. ``scripts[k]`` scripts the k-th container created (then ``default``)."""

    def __init__(self, *scripts: Script, default: Script | None = None):
        self.scripts, self.default = list(scripts), default or Script()
        self.containers = _Containers(self)
        self.api = _Api(self)
        self.containers_made: list[FakeContainer] = []
        self.created: list[dict[str, Any]] = []  # the kwargs of every create, in order
        self.attach_params: list[Any] = []
        self.listed: list[list[str]] = []  # the names every containers.list() answered
        self._lock = threading.Lock()
        self._numbers = itertools.count()

    def _create(self, kwargs: dict[str, Any]) -> FakeContainer:
        with self._lock:
            number = next(self._numbers)
            script = self.scripts[number] if number < len(self.scripts) else self.default
            container = FakeContainer(self, kwargs, script, number)
            self.containers_made.append(container)
            self.created.append(copy.deepcopy(kwargs))
        if script.create_raises is not None:
            raise script.create_raises
        return container

    def get(self, container_id: str) -> FakeContainer:
        return next(c for c in self.containers_made if c.id == container_id)

    def left(self) -> list[FakeContainer]:
        """Containers not removed."""
        return [c for c in self.containers_made if not c.removed]
