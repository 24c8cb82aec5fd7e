"""The probe protocol: how the harness talks to a probe process, whatever runs it.

Every probe prints ``ready`` once Node has booted and then blocks on stdin; when all probes of a
batch are ready the harness sends ``go <epoch ms>`` to each (the barrier), so nothing of the
harness runs inside the timed window and the processes load together. The probe answers with one
JSON line. With ``hold`` (the default) the probe then waits for ``exit`` (or the end of its stdin):
the harness reads the container's cgroup between the JSON line and ``exit``, while the sandbox
still exists. The harness blocks in select(), never busy-polls.

Clocks: the harness stamps its side with ``time.time()`` (epoch ms, ``h_*`` fields of Outcome);
the probe stamps its side on its own clock (``*_wall_ms`` in the payload). The two meet in
``shlib.collect.records.timeline``, which bounds their offset.
"""

from __future__ import annotations

import json
import os
import selectors
import socket
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

#: The go message names a start time this far ahead (ms, plus GO_LEAD_MS_PER_PROBE each), so
#: that every probe has it before any starts loading and they start on the same clock tick.
#: A batch of one probe has nothing to synchronise with: it starts at once (no lead).
GO_LEAD_MS = 100.0
GO_LEAD_MS_PER_PROBE = 10.0


@dataclass
class Outcome:
    """What happened to one probe process (one trial)."""

    slot: int
    status: str = "ok"  # ok | timeout | start_failed | crashed
    error: str | None = None
    payload: dict[str, Any] | None = None
    wall_ms: float | None = None
    exit_code: int | None = None
    created_at: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    engine_runtime: str | None = None
    #: The probe booted and said "ready": the runtime did its part, a later failure is the load's.
    ready: bool = False
    t_create: float = field(default=0.0, repr=False)
    #: Harness wall-clock stamps (epoch ms): create call began/returned, start call began, "ready" seen,
    #: go sent, the JSON line seen, 'exit' sent (hold; else the JSON line), the exit seen, the remove
    #: call began and returned. None: did not happen.
    h_create: float | None = None
    h_created: float | None = None
    h_start: float | None = None
    h_ready: float | None = None
    h_go: float | None = None
    h_payload: float | None = None
    h_release: float | None = None
    h_exit: float | None = None
    h_remove: float | None = None
    h_removed: float | None = None
    #: The container's cgroup CPU (ns) just before go and once the JSON line arrived; its peak memory.
    cpu_before_ns: int | None = None
    cpu_after_ns: int | None = None
    mem_peak_bytes: int | None = None

    def fail(self, status: str, error: str) -> None:
        if self.status == "ok":
            self.status, self.error = status, error[-4000:]


def probe_argument(lib: str, modules: tuple[str, ...] | list[str], hold: bool = True) -> str:
    """The probe's one argument. ``hold``: wait for ``exit`` after the JSON line (see module doc)."""
    return json.dumps({"lib": lib, "modules": list(modules), "barrier": True, "hold": hold})


def now_ms() -> float:
    """The harness's wall clock, epoch ms (the clock the probe's ``*_wall_ms`` stamps are compared with)."""
    return time.time() * 1e3


EXIT_MESSAGE = b"exit\n"


def go_lead_ms(n: int) -> float:
    """How far ahead (ms) the go message of a batch of ``n`` probes names its start time."""
    return 0.0 if n <= 1 else GO_LEAD_MS + GO_LEAD_MS_PER_PROBE * n


def go_message(n: int) -> bytes:
    """'go <epoch ms>': the shared wall-clock time at which the ``n`` probes start loading."""
    return f"go {time.time() * 1e3 + go_lead_ms(n):.3f}\n".encode()


def parse_payload(stdout: str) -> dict[str, Any] | None:
    """The probe's JSON line from its stdout (None when there is none)."""
    for line in reversed(stdout.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                data = json.loads(line)
            except json.JSONDecodeError:
                continue
            if data.get("probe") == "load":
                return data
    return None


class _Frames:
    """Demultiplexes an attached (non-TTY) container stream; collects stdout."""

    def __init__(self) -> None:
        self.buf = b""
        self.stdout = b""
        self.h_ready: float | None = None  # harness wall clock (epoch ms) when 'ready' was seen

    def feed(self, data: bytes) -> None:
        self.buf += data
        while len(self.buf) >= 8:
            stream, size = struct.unpack(">BxxxL", self.buf[:8])
            if len(self.buf) < 8 + size:
                break
            if stream == 1:
                self.stdout += self.buf[8 : 8 + size]
            self.buf = self.buf[8 + size :]


def has_payload(stdout: bytes) -> bool:
    """Whether ``stdout`` holds the probe's complete JSON line (a line after 'ready' that ends)."""
    head, sep, rest = stdout.partition(b"ready\n")
    return any(line.lstrip().startswith(b"{") for line in (rest if sep else head).split(b"\n")[:-1])


def wait_payload(stream: Any, parser: Any, deadline: float) -> bool:
    """Block until ``stream`` (one probe's stdout) has given its JSON line; False when it ended or the
    deadline (time.monotonic()) passed first. What it reads is fed to ``parser`` (see ``wait_ready``)."""
    return bool(wait_payloads({0: (stream, parser)}, deadline))


def _read_some(key: selectors.SelectorKey) -> bytes:
    """What a ready stream (socket or pipe) has; b"" once it has ended or failed."""
    try:
        return key.fileobj.recv(65536) if isinstance(key.fileobj, socket.socket) else os.read(key.fd, 65536)
    except OSError:
        return b""


def _watch(streams: dict[int, tuple[Any, Any]], deadline: float, reached: Callable[[Any], bool],
           on_reached: Callable[[int, Any], None], on_ended: Callable[[int], None]) -> None:
    """Read each stream into its parser until ``reached(parser)`` (then ``on_reached(slot, parser)``) or the
    stream ends (``on_ended(slot)``), or the deadline (time.monotonic()) passes. Blocks in select()."""
    with selectors.DefaultSelector() as sel:
        for slot, (stream, parser) in streams.items():
            if reached(parser):
                on_reached(slot, parser)
            elif stream.fileno() < 0:  # closed already: nothing more will come
                on_ended(slot)
            else:
                sel.register(stream, selectors.EVENT_READ, (slot, parser))
        while sel.get_map():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            for key, _ in sel.select(timeout=remaining):
                slot, parser = key.data
                data = _read_some(key)
                if data:
                    parser.feed(data)
                if not data or reached(parser):
                    sel.unregister(key.fileobj)
                    if data:
                        on_reached(slot, parser)
                    else:
                        on_ended(slot)


def wait_payloads(streams: dict[int, tuple[Any, Any]], deadline: float,
                  on_payload: Callable[[int], None] | None = None) -> set[int]:
    """Block until each stream has given its JSON line (or ended, or the deadline passed).

    ``on_payload(slot)`` runs as soon as a slot's line is in, before the others are waited for (the
    harness reads that probe's cgroup and tells it to exit). Returns the slots whose line came.
    """
    done: set[int] = set()

    def arrived(slot: int, parser: Any) -> None:
        done.add(slot)
        if on_payload is not None:
            on_payload(slot)

    _watch(streams, deadline, lambda parser: has_payload(parser.stdout), arrived, lambda slot: None)
    return done


def wait_ready(streams: dict[int, tuple[Any, Any]], deadline: float, closed: set[int] | None = None) -> set[int]:
    """Block until each stream has printed 'ready' (or closed, or the deadline passed).

    ``streams`` maps slot -> (readable file object or socket, parser with feed()/stdout).
    Returns the slots that are ready; adds those whose stream ended before to ``closed``.
    """
    ready: set[int] = set()

    def is_ready(slot: int, parser: Any) -> None:
        ready.add(slot)
        if hasattr(parser, "h_ready"):
            parser.h_ready = now_ms()

    _watch(streams, deadline, lambda parser: b"ready\n" in parser.stdout, is_ready,
           closed.add if closed is not None else lambda slot: None)
    return ready


class _Lines:
    def __init__(self) -> None:
        self.stdout = b""
        self.h_ready: float | None = None

    def feed(self, data: bytes) -> None:
        self.stdout += data
