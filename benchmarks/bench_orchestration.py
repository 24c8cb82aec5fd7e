"""Orchestration cost per trial and fidelity: shlib against a shell loop and a minimal docker-py loop.

Same image, runtime, library volume, probe and module, one container at a time. Trials are
interleaved: every round runs each runtime and, within it, each method once, in a seeded random
order, so the machine's drift falls on all three alike.

    cost:      median wall time per trial (create .. removed) of shlib / docker-py and shlib / shell
    go lead:   shlib as it was (a fixed 110 ms lead before a single probe starts) is run too, as a fourth
               method, so the cost of that lead is measured rather than assumed
    fidelity:  median load_ms shlib records / median load_ms of the same probe run by the shell loop
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Callable

import shlib.collect.probe
from benchmarks.common import (
    MODULE,
    RUNTIMES,
    Row,
    Setup,
    Trial,
    guarded,
    ratio_of_medians,
    run_docker_py,
    run_shell,
    run_shlib,
    verdict,
)
from shlib.collect.probe import GO_LEAD_MS, GO_LEAD_MS_PER_PROBE, go_lead_ms


def run_shlib_fixed_lead(setup: Setup, runtime: str) -> Trial:
    """shlib as it was before the lead became adaptive: a go lead of 110 ms even for one probe."""
    adaptive = shlib.collect.probe.go_lead_ms
    shlib.collect.probe.go_lead_ms = lambda n: GO_LEAD_MS + GO_LEAD_MS_PER_PROBE * n  # type: ignore[assignment]
    try:
        trial = run_shlib(setup, runtime)
    finally:
        shlib.collect.probe.go_lead_ms = adaptive  # type: ignore[assignment]
    trial.method = "shlib, fixed lead"
    return trial


METHODS: dict[str, Callable[[Setup, str], Trial]] = {"shlib": run_shlib, "docker-py": run_docker_py,
                                                     "shell": run_shell, "shlib, fixed lead": run_shlib_fixed_lead}
COST_GOAL_DOCKER_PY = 1.10
COST_GOAL_SHELL = 1.00
FIDELITY_BAND = (0.95, 1.05)


def collect(setup: Setup, rounds: int, seed: int, runtimes: tuple[str, ...] = RUNTIMES,
            log: Callable[[str], None] = print) -> list[Trial]:
    """``rounds`` trials of every method under every runtime, interleaved in a seeded random order."""
    rng = random.Random(seed)
    trials: list[Trial] = []
    for runtime in runtimes:  # one unmeasured warm-up per runtime and method (first use of the image)
        for method in METHODS.values():
            guarded(method, setup, runtime, "warm-up")
    for i in range(rounds):
        order = [(rt, m) for rt in runtimes for m in METHODS]
        rng.shuffle(order)
        for runtime, method in order:
            trials.append(guarded(METHODS[method], setup, runtime, method))
        if (i + 1) % max(1, rounds // 5) == 0:
            log(f"  orchestration: round {i + 1}/{rounds}")
    return trials


def summarize(trials: list[Trial], seed: int) -> list[Row]:
    rows: list[Row] = []
    runtimes = sorted({t.runtime for t in trials}, key=lambda r: RUNTIMES.index(r) if r in RUNTIMES else 99)
    for runtime in runtimes:
        wall = {m: [t.wall_s for t in trials if t.runtime == runtime and t.method == m and t.ok] for m in METHODS}
        load = {m: [t.load_ms for t in trials if t.runtime == runtime and t.method == m and t.ok] for m in METHODS}
        failed = sum(1 for t in trials if t.runtime == runtime and not t.ok)
        n = f"{min(len(v) for v in wall.values())}/method" + (f", {failed} failed" if failed else "")
        for method in METHODS:
            if wall[method]:
                rows.append(Row("1 orchestration", f"median wall per trial, {method} (s)", runtime,
                                statistics.median(wall[method]), n=n))
        r, lo, hi = ratio_of_medians(wall["shlib"], wall["docker-py"], seed)
        rows.append(Row("1 orchestration", "cost ratio shlib / docker-py loop", runtime, r, lo, hi, n,
                        f"<= {COST_GOAL_DOCKER_PY:.2f}", verdict(r <= COST_GOAL_DOCKER_PY if r == r else None)))
        r, lo, hi = ratio_of_medians(wall["shlib"], wall["shell"], seed + 1)
        rows.append(Row("1 orchestration", "cost ratio shlib / shell loop", runtime, r, lo, hi, n,
                        f"<= {COST_GOAL_SHELL:.2f}", verdict(r <= COST_GOAL_SHELL if r == r else None)))
        r, lo, hi = ratio_of_medians(wall["shlib, fixed lead"], wall["docker-py"], seed + 5)
        rows.append(Row("1 orchestration", "cost ratio shlib with the old fixed 110 ms lead / docker-py loop", runtime,
                        r, lo, hi, n))
        r, lo, hi = ratio_of_medians(wall["docker-py"], wall["shell"], seed + 2)
        rows.append(Row("1 orchestration", "cost ratio docker-py loop / shell loop", runtime, r, lo, hi, n))
        r, lo, hi = ratio_of_medians(load["shlib"], load["shell"], seed + 3)
        rows.append(Row("2 fidelity", f"{MODULE} load_ms ratio shlib / shell loop", runtime, r, lo, hi, n,
                        f"{FIDELITY_BAND[0]:.2f}-{FIDELITY_BAND[1]:.2f}",
                        verdict(FIDELITY_BAND[0] <= r <= FIDELITY_BAND[1] if r == r else None)))
        r, lo, hi = ratio_of_medians(load["docker-py"], load["shell"], seed + 4)
        rows.append(Row("2 fidelity", f"{MODULE} load_ms ratio docker-py / shell loop", runtime, r, lo, hi, n))
        if load["shell"]:
            rows.append(Row("2 fidelity", f"median {MODULE} load_ms, shell loop (ms)", runtime,
                            statistics.median(load["shell"]), n=n))
    rows.append(Row("1 orchestration", "shlib go lead, batch of 1 (ms)", "all", go_lead_ms(1), n="by design",
                    goal="0 (was 110)"))
    rows.append(Row("1 orchestration", "shlib go lead, batch of 8 (ms)", "all", go_lead_ms(8), n="by design",
                    goal="start together"))
    return rows


def run(setup: Setup, rounds: int, seed: int, log: Callable[[str], None] = print) -> list[Row]:
    return summarize(collect(setup, rounds, seed, log=log), seed)
