"""Start-up to the first container: ``shlib run`` of a minimal spec against ``docker run``, side by side.

For each method, the time from launching the command as a subprocess (host clock, just before
``Popen``) to the moment the engine records the ``create`` event of that command's first container
(the event's ``timeNano``, engine clock: the same host clock for a local engine). Everything the
command does before it asks for a container counts: interpreter start, imports, the runtime
catalog, the image and library checks, the volume's completeness check.

    shlib       python -m shlib.cli run SPEC --out TMP   (runc, lodash@4.17.20, concurrency 1, 1 repetition)
    docker run  docker run --rm --runtime runc --network none <shlib's node image> node -e 0

The engine is shared, so every create event is heard (one listener for the whole section) and each
trial's is found by a label only that trial's container carries: the run's ``shlib.run_id`` (read
from its metadata.json) for shlib, a fresh ``shlib.bench.startup`` token for docker run.
Trials are interleaved: each round runs both methods in a seeded random order, after one unmeasured
warm-up of each (the first shlib run may install the library and fill its volume).
"""

from __future__ import annotations

import json
import math
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.common import Row, Setup, ratio_of_medians, verdict
from shlib.collect.engine import LABEL

ROOT = Path(__file__).resolve().parent.parent
RUNTIME = "runc"
MODULE = "lodash@4.17.20"
GOAL_MS = 500.0
SECTION = "6 start-up"
TOKEN_LABEL = "shlib.bench.startup"
#: How long a trial's command may take, and how long to wait for its create event to be heard.
COMMAND_TIMEOUT_S = 300.0
EVENT_WAIT_S = 10.0

SPEC = {"name": "startup", "runtimes": [RUNTIME], "modules": [MODULE], "concurrency": [1], "repetitions": 1}


class CreateEvents:
    """Every container ``create`` event of the engine from now on, heard by one background thread."""

    def __init__(self, client: Any):
        self._stream = client.events(decode=True, since=int(time.time()) - 1,
                                     filters={"type": "container", "event": "create"})
        self._events: list[dict[str, Any]] = []
        self._cond = threading.Condition()
        self._thread = threading.Thread(target=self._listen, name="create-events", daemon=True)
        self._thread.start()

    def _listen(self) -> None:
        try:
            for event in self._stream:
                with self._cond:
                    self._events.append(event)
                    self._cond.notify_all()
        except Exception:  # noqa: BLE001 - the stream ends when it is closed (or the engine restarts)
            pass

    def first(self, label: str, value: str, timeout_s: float = EVENT_WAIT_S) -> int | None:
        """``timeNano`` of the earliest create event of a container labelled ``label=value``, None if unheard."""
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while True:
                times = [int(e.get("timeNano") or int(e.get("time", 0)) * 10**9) for e in self._events
                         if (e.get("Actor") or {}).get("Attributes", {}).get(label) == value]
                if times:
                    return min(times)
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self._cond.wait(left)

    def close(self) -> None:
        self._stream.close()
        self._thread.join(timeout=5)


def shlib_command(spec: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "shlib.cli", "run", str(spec), "--out", str(out)]


def docker_run_command(image_tag: str, token: str) -> list[str]:
    return ["docker", "run", "--rm", "--runtime", RUNTIME, "--network", "none",
            "--label", f"{LABEL}=true", "--label", f"{TOKEN_LABEL}={token}", image_tag, "node", "-e", "0"]


def _launch(cmd: list[str]) -> tuple[int, subprocess.CompletedProcess[str]]:
    """(host time in ns just before the launch, the finished process)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    t0 = time.time_ns()
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=COMMAND_TIMEOUT_S)
    return t0, done


def trial_shlib(events: CreateEvents, spec: Path, work: Path) -> float:
    """ms from launching ``shlib run`` to its first container's create event (NaN when it failed)."""
    out = work / f"run-{uuid.uuid4().hex[:8]}"
    try:
        t0, done = _launch(shlib_command(spec, out))
        if done.returncode != 0:
            raise RuntimeError(f"shlib run exited {done.returncode}: {done.stderr.strip()[-300:]}")
        run_id = json.loads((out / "metadata.json").read_text())["run_id"]
        created = events.first("shlib.run_id", run_id)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return math.nan if created is None else (created - t0) / 1e6


def trial_docker_run(events: CreateEvents, image_tag: str) -> float:
    """ms from launching ``docker run`` to its container's create event (NaN when it failed)."""
    token = uuid.uuid4().hex
    t0, done = _launch(docker_run_command(image_tag, token))
    if done.returncode != 0:
        raise RuntimeError(f"docker run exited {done.returncode}: {done.stderr.strip()[-300:]}")
    created = events.first(TOKEN_LABEL, token)
    return math.nan if created is None else (created - t0) / 1e6


def collect(setup: Setup, rounds: int, seed: int, log: Callable[[str], None] = print) -> dict[str, list[float]]:
    """``rounds`` interleaved trials of each method (ms), after one unmeasured warm-up of each."""
    rng = random.Random(seed)
    times: dict[str, list[float]] = {"shlib": [], "docker run": []}
    failures: list[str] = []
    events = CreateEvents(setup.client)
    with tempfile.TemporaryDirectory(prefix="shlib-bench-startup-") as tmp:
        work = Path(tmp)
        spec = work / "spec.json"  # JSON is YAML
        spec.write_text(json.dumps(SPEC))
        methods: dict[str, Callable[[], float]] = {
            "shlib": lambda: trial_shlib(events, spec, work),
            "docker run": lambda: trial_docker_run(events, setup.image.tag),
        }
        try:
            for name in methods:
                methods[name]()  # warm-up: library, volume, image, smoke cache, page cache
            for i in range(rounds):
                order = list(methods)
                rng.shuffle(order)
                for name in order:
                    try:
                        times[name].append(methods[name]())
                    except Exception as exc:  # noqa: BLE001 - a failed trial is counted, the run goes on
                        failures.append(f"{name}: {type(exc).__name__}: {exc}"[:300])
                        times[name].append(math.nan)
                if (i + 1) % max(1, rounds // 5) == 0:
                    log(f"  start-up: round {i + 1}/{rounds}")
        finally:
            events.close()
    for failure in failures[:5]:
        log(f"  start-up: failed trial: {failure}")
    return times


def summarize(times: dict[str, list[float]], seed: int) -> list[Row]:
    ok = {name: [v for v in values if math.isfinite(v)] for name, values in times.items()}
    failed = sum(len(v) for v in times.values()) - sum(len(v) for v in ok.values())
    n = f"{min(len(v) for v in ok.values())}/method" + (f", {failed} failed" if failed else "")
    shlib_ms = statistics.median(ok["shlib"]) if ok["shlib"] else math.nan
    docker_ms = statistics.median(ok["docker run"]) if ok["docker run"] else math.nan
    r, lo, hi = ratio_of_medians(ok["shlib"], ok["docker run"], seed)
    return [
        Row(SECTION, "start-up to first container create, shlib run (ms)", RUNTIME, shlib_ms, n=n,
            goal=f"<= {GOAL_MS:.0f} ms", verdict=verdict(shlib_ms <= GOAL_MS if math.isfinite(shlib_ms) else None)),
        Row(SECTION, "start-up to first container create, docker run (ms)", RUNTIME, docker_ms, n=n),
        Row(SECTION, "start-up ratio shlib run / docker run", RUNTIME, r, lo, hi, n),
    ]


def run(setup: Setup, rounds: int, seed: int, log: Callable[[str], None] = print) -> list[Row]:
    return summarize(collect(setup, rounds, seed, log), seed)

