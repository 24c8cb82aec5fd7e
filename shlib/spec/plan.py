"""The plan: an experiment spec turned into an ordered list of batches.

Every repetition visits every cell once, in a fresh seeded random order, so runtimes are
interleaved in time and the machine's drift spreads over all of them (blocked
randomisation), and the same seed gives the same plan (which is what ``--resume`` needs).
"""

from __future__ import annotations

import itertools
import random
from dataclasses import asdict, dataclass
from typing import Any

from shlib.spec.modules import parse_ref
from shlib.spec.spec import Spec

NATIVE = "native"


@dataclass(frozen=True)
class Cell:
    """One combination of the experiment's factors."""

    runtime: str
    modules: tuple[str, ...]  # module specs loaded by each process, in order
    concurrency: int
    mount: str  # volume | bind | image; "host" for native
    cache: str
    #: The interpreter source: a Node source (``host``, ``wheel:22``, ...) for node cells, ``python:<source>``
    #: (``python:host``) for python cells; it keys the cell's image.
    node: str
    language: str = "node"  # node | python: the modules' ecosystem and the probe that loads them


@dataclass(frozen=True)
class Batch:
    """``cell.concurrency`` processes of one cell that start loading together."""

    batch_id: int
    rep: int
    cell: Cell

    def as_dict(self) -> dict[str, Any]:
        return {"batch_id": self.batch_id, "rep": self.rep, **asdict(self.cell)}


def cells(spec: Spec, runtimes: list[str]) -> list[Cell]:
    """Every cell of the spec for these runtimes (native has one mount level: the host)."""
    out: list[Cell] = []
    for language in spec.languages():
        mine = [m for m in spec.modules if parse_ref(m).language == language]
        units = [(m,) for m in mine] if spec.load_mode == "isolated" else [tuple(mine)]
        sources = spec.node if language == "node" else [f"python:{s}" for s in spec.python]
        for runtime, unit, conc, mount, cache, node in itertools.product(
                runtimes, units, spec.concurrency, spec.mount, spec.cache, sources):
            if runtime == NATIVE:
                if node.startswith("pull:") or mount != spec.mount[0]:
                    continue
                mount = "host"
            out.append(Cell(runtime, unit, conc, mount, cache, node, language))
    return out


def plan(spec: Spec, runtimes: list[str], repetitions: int | None = None, first_rep: int = 0) -> list[Batch]:
    """Batches for repetitions ``first_rep`` .. ``first_rep + repetitions - 1``, seeded and interleaved."""
    if spec.seed is None:
        raise ValueError("plan() needs a spec with a seed; call spec.with_seed() first")
    all_cells = cells(spec, runtimes)
    reps = spec.repetitions if repetitions is None else repetitions
    batches = []
    for rep in range(first_rep, first_rep + reps):
        order = list(all_cells)
        random.Random(f"{spec.seed}-{rep}").shuffle(order)
        batches += [Batch(batch_id=rep * len(all_cells) + i, rep=rep, cell=cell) for i, cell in enumerate(order)]
    return batches
