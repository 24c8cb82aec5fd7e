"""What the benchmarks share: the probe set-up, the three ways of running a trial, and ratio intervals.

Every timing is a wall-clock duration measured in this process (time.perf_counter, seconds);
the benchmarks report medians and ratios of medians measured in one run, never a lone absolute time.
"""

from __future__ import annotations

import json
import math
import shlex
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats

from shlib.collect.docker_batch import ContainerBatch
from shlib.collect.engine import LABEL, connect
from shlib.collect.image import PROBE_PATH, PROBE_USER, NodeImage, ensure_image
from shlib.collect.library import MOUNT_POINT, Library, ensure_volume, install_library, mount_kwargs
from shlib.collect.probe import parse_payload, probe_argument
from shlib.spec.modules import MODULE_SETS

#: runc and the faster gVisor build on this host kind (DESIGN.md section 5).
RUNTIMES = ("runc", "runsc-20240729-systrap")
MODULE = "lodash"
BENCH_LABELS = {"shlib.bench": "true"}
CONFIDENCE = 0.95
N_RESAMPLES = 2000


@dataclass
class Setup:
    """The same image, library volume and probe for every method."""

    client: Any
    image: NodeImage
    library: Library
    volume: str
    batch: ContainerBatch = field(init=False)

    def __post_init__(self) -> None:
        self.batch = ContainerBatch(self.client, timeout_s=120.0, labels=BENCH_LABELS)

    def shlib_kwargs(self, runtime: str, module: str = MODULE) -> dict[str, Any]:
        """What shlib's runner passes to containers.create for one probe of this cell."""
        return self.batch.create_kwargs(self.image.tag, runtime, (module,), MOUNT_POINT,
                                        mount_kwargs("volume", self.library, self.volume), {})


def make_setup(max_concurrency: int = 16) -> Setup:
    """Engine client, probe image and the paper library's volume (built once, reused)."""
    client = connect(pool_size=4 * max_concurrency + 8, timeout_s=180.0)
    image = ensure_image(client, "host")
    library = install_library(MODULE_SETS["paper"])
    return Setup(client, image, library, ensure_volume(client, library, image))


@dataclass
class Trial:
    """One probe run by one method: its wall time (s, as the caller sees it) and the probe's load_ms."""

    method: str
    runtime: str
    wall_s: float
    load_ms: float
    ok: bool
    error: str = ""


def shell_command(setup: Setup, runtime: str, module: str = MODULE) -> str:
    """The shell loop's body: ``echo go | docker run -i --rm ...`` with shlib's lock-down and mount."""
    arg = probe_argument(MOUNT_POINT, [module])
    return (f"echo go | docker run -i --rm --runtime {shlex.quote(runtime)} --network none --user {PROBE_USER} "
            f"--cap-drop ALL --security-opt no-new-privileges --read-only --pids-limit 512 --memory 1024m "
            f"--label {LABEL}=true --label shlib.bench=true "
            f"-v {setup.volume}:{MOUNT_POINT}:ro {setup.image.tag} node {PROBE_PATH} {shlex.quote(arg)}")


def run_shell(setup: Setup, runtime: str, module: str = MODULE) -> Trial:
    """One iteration of a shell loop (bash -c, so the shell's own start is counted, as in a loop)."""
    t0 = time.perf_counter()
    done = subprocess.run(["bash", "-c", shell_command(setup, runtime, module)], capture_output=True, text=True,
                          timeout=300)
    wall = time.perf_counter() - t0
    return _trial("shell", runtime, wall, parse_payload(done.stdout), done.stderr)


def run_docker_py(setup: Setup, runtime: str, module: str = MODULE) -> Trial:
    """A minimal docker-py loop body: create, start, wait, logs, remove (probe without the barrier)."""
    arg = json.dumps({"lib": MOUNT_POINT, "modules": [module], "barrier": False})
    t0 = time.perf_counter()
    container = setup.client.containers.create(
        image=setup.image.tag, command=["node", PROBE_PATH, arg], runtime=runtime, network_mode="none",
        user=PROBE_USER, cap_drop=["ALL"], security_opt=["no-new-privileges"], read_only=True, pids_limit=512,
        mem_limit="1024m", labels={LABEL: "true", **BENCH_LABELS},
        **mount_kwargs("volume", setup.library, setup.volume))
    try:
        container.start()
        container.wait(timeout=300)
        out = container.logs(stdout=True, stderr=False).decode(errors="replace")
    finally:
        container.remove(force=True)
    wall = time.perf_counter() - t0
    return _trial("docker-py", runtime, wall, parse_payload(out), "")


def run_shlib(setup: Setup, runtime: str, module: str = MODULE) -> Trial:
    """shlib's ContainerBatch.run(1, kwargs): create, attach, start, barrier, wait, record, remove."""
    kwargs = setup.shlib_kwargs(runtime, module)
    t0 = time.perf_counter()
    outcome = setup.batch.run(1, kwargs)[0]
    wall = time.perf_counter() - t0
    return _trial("shlib", runtime, wall, outcome.payload, outcome.error or "")


def wait_for_engine(client: Any, timeout_s: float = 180.0) -> bool:
    """Block until the engine answers a ping again (others may restart it); False after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            client.ping()
            return True
        except Exception:  # noqa: BLE001
            time.sleep(2)
    return False


def guarded(fn: Callable[[Setup, str], Trial], setup: Setup, runtime: str, name: str) -> Trial:
    """Run one trial; an error (this engine is shared: others restart it) is a failed trial, not a crash.

    After an error, waits (up to 2 minutes) for the engine to answer again before going on.
    """
    try:
        return fn(setup, runtime)
    except Exception as exc:  # noqa: BLE001 - any failure of one trial is recorded and the run goes on
        wait_for_engine(setup.client)
        return Trial(name, runtime, math.nan, math.nan, False, f"{type(exc).__name__}: {exc}"[-300:])


def _trial(method: str, runtime: str, wall: float, payload: dict[str, Any] | None, error: str) -> Trial:
    results = (payload or {}).get("results") or [{}]
    first = results[0]
    ok = bool(first.get("ok"))
    return Trial(method, runtime, wall, float(first["load_ms"]) if ok else math.nan, ok,
                 "" if ok else (error or str(first.get("error")))[-300:])


def ratio_of_medians(a: Sequence[float], b: Sequence[float], seed: int,
                     n_resamples: int = N_RESAMPLES) -> tuple[float, float, float]:
    """median(a) / median(b) with a seeded two-sample bootstrap interval (BCa; percentile where BCa fails).

    Returns (ratio, low, high); the interval is NaN with fewer than 3 values on a side.
    """
    x = np.asarray([v for v in a if math.isfinite(v)], dtype=float)
    y = np.asarray([v for v in b if math.isfinite(v)], dtype=float)
    if len(x) == 0 or len(y) == 0:
        return math.nan, math.nan, math.nan
    ratio = float(np.median(x) / np.median(y))
    if min(len(x), len(y)) < 3:
        return ratio, math.nan, math.nan

    def statistic(u: np.ndarray, v: np.ndarray, axis: int = -1) -> np.ndarray:
        return np.median(u, axis=axis) / np.median(v, axis=axis)

    for method in ("BCa", "percentile"):
        try:
            res = stats.bootstrap((x, y), statistic, n_resamples=n_resamples, confidence_level=CONFIDENCE,
                                  method=method, rng=np.random.default_rng(seed), vectorized=True)
        except (ValueError, FloatingPointError):
            continue
        low, high = float(res.confidence_interval.low), float(res.confidence_interval.high)
        if math.isfinite(low) and math.isfinite(high):
            return ratio, low, high
    return ratio, math.nan, math.nan


@dataclass
class Row:
    """One line of the benchmark table."""

    section: str
    measure: str
    runtime: str
    value: float
    low: float = math.nan
    high: float = math.nan
    n: str = ""
    goal: str = ""
    verdict: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"section": self.section, "measure": self.measure, "runtime": self.runtime, "value": self.value,
                "ci_low": self.low, "ci_high": self.high, "n": self.n, "goal": self.goal, "verdict": self.verdict}


def verdict(ok: bool | None) -> str:
    return "" if ok is None else ("met" if ok else "NOT met")
