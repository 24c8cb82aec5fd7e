"""Throughput with concurrency, and how the cost grows with the number of trials.

    trials/s:  ``c`` probes started together by ContainerBatch.run(c, kwargs), for c in 1, 4, 8, 16,
               under runc and runsc; batches of every (runtime, c) interleaved in a seeded random order.
               Reported as the median over batches of c / batch wall time, and as a speed-up over c=1.
    scaling:   run_experiment of R and of 2R one-container batches (runc, one module), the two sizes
               alternating; time(2R) / time(R) should be about 2 (no cost that grows with the run).
    bookkeeping: the same with the probe replaced by a stub that returns at once (no containers), at
               N and 2N batches: the runner's own per-batch cost (plan, results parts, progress) alone.
"""

from __future__ import annotations

import random
import statistics
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any
from unittest import mock

from benchmarks.common import MODULE, RUNTIMES, Row, Setup, ratio_of_medians, verdict, wait_for_engine
from shlib.collect import runner
from shlib.collect.probe import Outcome
from shlib.spec.modules import MODULE_SETS

#: 2x the batches may cost up to 2.2x the time (sub-linear is fine: a run has a fixed set-up cost).
SCALING_GOAL = 2.2


def throughput(setup: Setup, levels: tuple[int, ...], batches: int, seed: int,
               log: Callable[[str], None] = print) -> list[Row]:
    rng = random.Random(seed)
    order = [(rt, c) for rt in RUNTIMES for c in levels for _ in range(batches)]
    rng.shuffle(order)
    rates: dict[tuple[str, int], list[float]] = defaultdict(list)
    failed: dict[tuple[str, int], int] = defaultdict(int)
    for i, (runtime, conc) in enumerate(order):
        kwargs = setup.shlib_kwargs(runtime)
        t0 = time.perf_counter()
        try:
            outcomes = setup.batch.run(conc, kwargs)
        except Exception as exc:  # noqa: BLE001 - a shared engine may be restarted by others
            log(f"  throughput: batch {runtime} x{conc} failed: {exc}")
            failed[(runtime, conc)] += conc
            wait_for_engine(setup.client)
            continue
        wall = time.perf_counter() - t0
        ok = sum(o.status == "ok" for o in outcomes)
        failed[(runtime, conc)] += conc - ok
        rates[(runtime, conc)].append(ok / wall)
        if (i + 1) % max(1, len(order) // 5) == 0:
            log(f"  throughput: batch {i + 1}/{len(order)}")
    rows = []
    for runtime in RUNTIMES:
        base = rates.get((runtime, levels[0]), [])
        for conc in levels:
            vals = rates.get((runtime, conc), [])
            n = f"{len(vals)} batches" + (f", {failed[(runtime, conc)]} failed trials" if failed[(runtime, conc)]
                                          else "")
            rows.append(Row("3 throughput", f"trials/s at concurrency {conc}", runtime,
                            statistics.median(vals) if vals else float("nan"), n=n))
            if conc != levels[0]:
                r, lo, hi = ratio_of_medians(vals, base, seed + conc)
                rows.append(Row("3 throughput", f"speed-up, concurrency {conc} / {levels[0]}", runtime, r, lo, hi, n))
    return rows


def _spec(reps: int, seed: int) -> dict[str, Any]:
    return {"name": "bench-scaling", "runtimes": ["runc"], "modules": [MODULE_SETS["paper"][0]],
            "concurrency": [1], "repetitions": reps, "seed": seed, "timeout_s": 120}


def _timed_run(spec: dict[str, Any], setup: Setup, engine: bool = True) -> float:
    with tempfile.TemporaryDirectory(prefix="shlib-bench-") as tmp:
        t0 = time.perf_counter()
        runner.run_experiment(spec, Path(tmp) / "run", client=setup.client if engine else None, progress=False,
                              library=setup.library)
        return time.perf_counter() - t0


def scaling(setup: Setup, reps: int, pairs: int, seed: int, log: Callable[[str], None] = print) -> list[Row]:
    """Wall time of run_experiment at R and 2R batches (alternating, R first or second at random)."""
    rng = random.Random(seed)
    times: dict[int, list[float]] = {reps: [], 2 * reps: []}
    for i in range(pairs):
        sizes = [reps, 2 * reps]
        rng.shuffle(sizes)
        for size in sizes:
            try:
                times[size].append(_timed_run(_spec(size, seed + i), setup))
            except Exception as exc:  # noqa: BLE001
                log(f"  scaling: run of {size} batches failed: {exc}")
                wait_for_engine(setup.client)
        log(f"  scaling: pair {i + 1}/{pairs}")
    r, lo, hi = ratio_of_medians(times[2 * reps], times[reps], seed)
    n = f"{len(times[reps])}+{len(times[2 * reps])} runs"
    rows = [Row("3 throughput", f"run_experiment time, {2 * reps} / {reps} one-container batches (runc)", "runc",
                r, lo, hi, n, f"<= {SCALING_GOAL}", verdict(r <= SCALING_GOAL if r == r else None))]
    if times[reps] and times[2 * reps]:
        t1, t2 = statistics.median(times[reps]), statistics.median(times[2 * reps])
        rows.append(Row("3 throughput", "run_experiment: marginal s per batch / s per batch of the smaller run",
                        "runc", (t2 - t1) / reps / (t1 / reps), n=n, goal="<= 1 (no cost growing with the run)"))
    return rows


def _stub_execute(batch: Any, prep: Any) -> list[Outcome]:
    payload = {"probe": "load", "node": "v0-stub", "boot_ms": 1.0, "go_wall_ms": 0.0, "rss_bytes": 1,
               "results": [{"module": m.split("@")[0], "ok": True, "load_ms": 1.0, "files": 1}
                           for m in batch.cell.modules]}
    return [Outcome(slot=i, payload=payload, wall_ms=1.0, exit_code=0) for i in range(batch.cell.concurrency)]


def bookkeeping(setup: Setup, batches: int, pairs: int, seed: int) -> list[Row]:
    """run_experiment's own cost per batch at N and 2N batches, the probe replaced by a stub (native runtime)."""
    spec = {"name": "bench-bookkeeping", "runtimes": ["native"], "modules": [MODULE_SETS["paper"][0]],
            "concurrency": [1], "seed": seed}
    times: dict[int, list[float]] = {batches: [], 2 * batches: []}
    with mock.patch.object(runner, "execute", _stub_execute):
        for _ in range(pairs):
            for size in (batches, 2 * batches):
                times[size].append(_timed_run({**spec, "repetitions": size}, setup, engine=False))
    r, lo, hi = ratio_of_medians(times[2 * batches], times[batches], seed)
    per_batch_ms = statistics.median(times[2 * batches]) / (2 * batches) * 1e3
    n = f"{pairs}+{pairs} runs"
    return [Row("3 throughput", f"runner bookkeeping (stub probe), {2 * batches} / {batches} batches", "none",
                r, lo, hi, n, f"<= {SCALING_GOAL}", verdict(r <= SCALING_GOAL if r == r else None)),
            Row("3 throughput", "runner bookkeeping per batch (stub probe, ms)", "none", per_batch_ms, n=n)]


def run(setup: Setup, levels: tuple[int, ...], batches: int, scaling_reps: int, scaling_pairs: int,
        bookkeeping_batches: int, seed: int, log: Callable[[str], None] = print) -> list[Row]:
    rows = throughput(setup, levels, batches, seed, log)
    rows += scaling(setup, scaling_reps, scaling_pairs, seed, log)
    rows += bookkeeping(setup, bookkeeping_batches, 2, seed)
    return rows


__all__ = ["run", "throughput", "scaling", "bookkeeping", "MODULE"]
