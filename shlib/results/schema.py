"""The results format both sides share: the row schema, its version, statuses, runtime kinds.

Every row is one module load in one trial (one process). Collection writes rows with these
columns (``shlib.collect.records``); analysis reads them (``shlib.results.store.load_results``).
"""

from __future__ import annotations

import os
from typing import Any

import pyarrow as pa

#: Version of the results directory (metadata.json + rows); its history is in shlib.results.metadata.
SCHEMA_VERSION = 2

#: Column -> arrow type. Every row is one module load in one trial (one process).
SCHEMA = pa.schema([
    ("run_id", pa.string()),
    ("batch_id", pa.int64()),      # index of the batch in the run's plan
    ("trial_id", pa.string()),     # one process: "b00012-s03"
    ("rep", pa.int64()),           # repetition of the batch's cell
    ("slot", pa.int64()),          # position of the container in its batch
    ("runtime", pa.string()),      # catalog name: native, runc, runsc-20240729-systrap, ...
    ("runtime_kind", pa.string()), # native | runc | crun | gvisor | kata | other
    ("concurrency", pa.int64()),   # processes loading at once in the batch
    ("module", pa.string()),
    ("module_version", pa.string()),
    ("load_mode", pa.string()),    # isolated (one module per process) | sequence
    ("position", pa.int64()),      # order of the module within its process
    ("mount", pa.string()),        # volume | bind | image | host (native)
    ("cache", pa.string()),        # warm | cold
    ("node_version", pa.string()),
    ("image_id", pa.string()),
    ("load_ms", pa.float64()),     # first require()/import() of the module, NaN unless ok
    ("status", pa.string()),       # ok | error | timeout | start_failed | crashed | skipped
    ("error", pa.string()),
    ("boot_ms", pa.float64()),     # Node's own start-up before the probe ran
    ("files_loaded", pa.int64()),  # CommonJS files the load added to require.cache
    ("rss_mb", pa.float64()),      # resident memory of the process after loading
    ("start_skew_ms", pa.float64()),  # this process's go time minus the earliest in its batch
    ("batch_skew_ms", pa.float64()),  # latest minus earliest go time in the batch
    ("wall_ms", pa.float64()),     # harness: container create (or process spawn) to exit
    ("created_at", pa.timestamp("us", tz="UTC")),   # engine's Created (native: the spawn begins)
    ("started_at", pa.timestamp("us", tz="UTC")),   # engine's StartedAt (native: the spawned process runs)
    ("finished_at", pa.timestamp("us", tz="UTC")),  # engine's FinishedAt (native: its exit seen by the harness)
    ("exit_code", pa.int64()),
    ("engine_runtime", pa.string()),  # HostConfig.Runtime as the engine recorded it
])
COLUMNS = SCHEMA.names
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
    columns = {name: [row.get(name) for row in rows] for name in COLUMNS}
    return pa.Table.from_pydict(columns, schema=SCHEMA)
