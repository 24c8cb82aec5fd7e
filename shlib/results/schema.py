"""The results format both sides share: the row schema, its version, statuses, runtime kinds.

Every row is one module load in one trial (one process). Collection writes rows with these
columns (``shlib.collect.records``); analysis reads them (``shlib.results.store.load_results``).
"""

from __future__ import annotations

import functools
import os
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow as pa

#: Version of the results directory (metadata.json + rows); its history is in shlib.results.metadata.
SCHEMA_VERSION = 3

#: Column -> type (string, int64, float64, timestamp: microseconds, UTC). One row: one module load in one trial.
COLUMN_TYPES: tuple[tuple[str, str], ...] = (
    ("run_id", "string"),
    ("batch_id", "int64"),      # index of the batch in the run's plan
    ("trial_id", "string"),     # one process: "b00012-s03"
    ("rep", "int64"),           # repetition of the batch's cell
    ("slot", "int64"),          # position of the container in its batch
    ("runtime", "string"),      # catalog name: native, runc, runsc-20240729-systrap, ...
    ("runtime_kind", "string"), # native | runc | crun | gvisor | kata | other
    ("concurrency", "int64"),   # processes loading at once in the batch
    ("module", "string"),
    ("module_version", "string"),
    ("load_mode", "string"),    # isolated (one module per process) | sequence
    ("position", "int64"),      # order of the module within its process
    ("mount", "string"),        # volume | bind | image | host (native)
    ("cache", "string"),        # warm | cold
    ("node_version", "string"),  # Node's version (Node trials only; see interpreter_version)
    ("language", "string"),     # node | python: the ecosystem of the module and the probe
    ("interpreter_version", "string"),  # version of the probe's interpreter (Node or Python)
    ("image_id", "string"),
    ("load_ms", "float64"),     # first require()/import() of the module, NaN unless ok
    ("status", "string"),       # ok | error | timeout | start_failed | crashed | skipped
    ("error", "string"),
    ("boot_ms", "float64"),     # start-up before the probe ran. Node: its own (performance.now()). Python: since
                                # the process was created (+-5 ms: 10 ms ticks; under runc that includes runc's
                                # init, which execs the interpreter in the same process, and start_ms does not):
                                # boot_ms and start_ms are not comparable across languages
    ("files_loaded", "int64"),  # Node: CommonJS files the load added to require.cache; Python: modules the
                                # import added to sys.modules (packages, submodules, extension modules)
    ("rss_mb", "float64"),      # resident memory of the process after loading
    ("start_skew_ms", "float64"),  # this process's go time minus the earliest in its batch
    ("batch_skew_ms", "float64"),  # latest minus earliest go time in the batch
    ("wall_ms", "float64"),     # harness: container create (or process spawn) to exit
    ("created_at", "timestamp"),   # engine's Created (native: the spawn begins)
    ("started_at", "timestamp"),   # engine's StartedAt (native: the spawned process runs)
    ("finished_at", "timestamp"),  # engine's FinishedAt (native: its exit seen by the harness)
    ("exit_code", "int64"),
    ("engine_runtime", "string"),  # HostConfig.Runtime as the engine recorded it
    # Where the trial ran: the engine (a label unique within a campaign), its kind and its host.
    ("engine", "string"),       # e.g. "default", a docker context name, or the engine's URL
    ("engine_kind", "string"),  # docker | podman | native (no engine)
    ("engine_host", "string"),  # the engine host's name as the engine reports it
    # Timeline of the trial, one phase per column (ms; clocks in shlib.collect.records).
    ("create_ms", "float64"),   # the engine's create call
    ("start_ms", "float64"),    # start call until the probe's process began
    ("teardown_ms", "float64"), # the probe's exit until the container was removed
    ("clock_offset_ms", "float64"),  # bound on |probe clock - harness clock| for this trial
    # The sandbox's own resources while the module loaded (between go and loaded).
    ("cpu_ms", "float64"),      # CPU time of the container's whole cgroup (sentry, gofer and app)
    ("proc_cpu_ms", "float64"), # the probe process's own CPU (user + sys), read from inside
    ("mem_peak_mb", "float64"), # peak memory of the container's cgroup
)
COLUMNS = [name for name, _ in COLUMN_TYPES]


@functools.cache
def arrow_schema() -> pa.Schema:
    """COLUMN_TYPES as an arrow schema (built on first use: pyarrow takes ~0.15 s to import, and the
    collection path needs it only once its first batch is done)."""
    import pyarrow as pa

    types = {"string": pa.string(), "int64": pa.int64(), "float64": pa.float64(),
             "timestamp": pa.timestamp("us", tz="UTC")}
    return pa.schema([(name, types[kind]) for name, kind in COLUMN_TYPES])


def __getattr__(name: str) -> Any:
    if name == "SCHEMA":
        return arrow_schema()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
STATUSES = ("ok", "error", "timeout", "start_failed", "crashed", "skipped")
RUNTIME_KINDS = ("native", "runc", "crun", "gvisor", "kata", "other")


def runtime_kind(name: str, path: str | None = None) -> str:
    """The ``runtime_kind`` of a runtime, from its name (and binary path, when known)."""
    base = os.path.basename(path or "")
    if name == "native":
        return "native"
    if "kata" in name or "kata" in base:
        return "kata"
    if "runsc" in name or "gvisor" in name or base == "runsc":
        return "gvisor"
    for kind in ("crun", "runc"):
        if name == kind or base == kind:
            return kind
    return "other"
#: Statuses that mean a trial was attempted and need not be repeated on --resume.
DONE_STATUSES = frozenset(STATUSES) - {"skipped"}


def to_table(rows: list[dict[str, Any]]) -> pa.Table:
    """Rows (dicts with the SCHEMA's keys; missing keys become null) as an arrow table."""
    import pyarrow as pa

    columns = {name: [row.get(name) for row in rows] for name in COLUMNS}
    return pa.Table.from_pydict(columns, schema=arrow_schema())
