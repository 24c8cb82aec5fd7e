"""The hold for the cgroup read costs the load nothing: the same batches with the probe's hold on and off.

With ``hold`` the probe, having printed its JSON line, waits for the harness's ``exit`` so that the
harness can read the container's cgroup (CPU, peak memory) while the sandbox still exists; without it
the probe exits at once and the cgroup is gone. Everything the hold adds happens after the load's
last stamp, so load_ms should not move. Measured: the same runtime, module and concurrency, the two
settings interleaved in a seeded random order within each round, one unmeasured warm-up each;
median load_ms with hold / without, with a 95% bootstrap interval (the unit is a trial; batches of
one container, so a batch is a trial).

    runtimes: runc and runsc-20240729-systrap (benchmarks.common.RUNTIMES); module: express@4.17.1
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Callable

from benchmarks.common import RUNTIMES, Row, Setup, ratio_of_medians, verdict
from shlib.collect.docker_batch import ContainerBatch
from shlib.collect.library import MOUNT_POINT, mount_kwargs

SECTION = "7 hold"
MODULE = "express"  # of the paper library (express@4.17.1): ~100 files, long enough to see a few percent
#: No effect, shown: the interval must hold 1 and lie within this band (10% either way; 20 interleaved rounds
#: of express on a quiet 2-core host give an interval about that wide).
BAND = (0.90, 1.10)


def trial(setup: Setup, batches: dict[bool, ContainerBatch], runtime: str, hold: bool) -> float:
    """One batch of one container with the hold on or off: its load_ms (NaN if it failed)."""
    batch = batches[hold]
    kwargs = batch.create_kwargs(setup.image.tag, runtime, (MODULE,), MOUNT_POINT,
                                 mount_kwargs("volume", setup.library, setup.volume), {})
    (out,) = batch.run(1, kwargs)
    results = (out.payload or {}).get("results") or [{}]
    return float(results[0]["load_ms"]) if out.status == "ok" and results[0].get("ok") else math.nan


def run(setup: Setup, rounds: int, seed: int, log: Callable[[str], None] = print,
        runtimes: tuple[str, ...] = RUNTIMES, quick: bool = False) -> list[Row]:
    """``rounds`` interleaved pairs of trials per runtime; ``quick`` checks it runs and judges nothing."""
    batches = {hold: ContainerBatch(setup.client, timeout_s=120.0, labels=setup.batch.labels, hold=hold)
               for hold in (True, False)}
    rng = random.Random(seed)
    rows: list[Row] = []
    for runtime in runtimes:
        for hold in (True, False):  # warm-up: the first container of a runtime pays for cold caches
            trial(setup, batches, runtime, hold)
        loads: dict[bool, list[float]] = {True: [], False: []}
        for r in range(rounds):
            order = [True, False]
            rng.shuffle(order)
            for hold in order:
                loads[hold].append(trial(setup, batches, runtime, hold))
            log(f"  {runtime} round {r + 1}/{rounds}")
        on, off = ([v for v in loads[h] if math.isfinite(v)] for h in (True, False))
        ratio, low, high = ratio_of_medians(on, off, seed)
        judged = not quick and math.isfinite(low) and math.isfinite(high)
        ok = (BAND[0] <= low <= 1.0 <= high <= BAND[1]) if judged else None
        n = f"{len(on)} + {len(off)} trials"
        rows += [
            Row(SECTION, f"{MODULE} load_ms, hold on (ms)", runtime, statistics.median(on) if on else math.nan, n=n),
            Row(SECTION, f"{MODULE} load_ms, hold off (ms)", runtime, statistics.median(off) if off else math.nan,
                n=n),
            Row(SECTION, "load_ms ratio hold on / hold off", runtime, ratio, low, high, n=n,
                goal="(quick: not judged)" if quick else f"interval holds 1, within [{BAND[0]}, {BAND[1]}]",
                verdict=verdict(ok)),
        ]
    return rows
