"""Results on disk: one directory per run, tidy rows in parquet, provenance in JSON.

    RUN_DIR/
      metadata.json        provenance: schema version, spec, host, engine, runtimes, image,
                           module manifest, start/end, counts by status
      results.parquet      one row per module load per trial (written when a run ends)
      parts/batch-*.parquet  rows of each finished batch, written atomically as it ends

A run killed at any moment keeps every finished batch in ``parts/``; ``load_results``
reads both and ``--resume`` completes the plan from them.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from shlib.errors import ResultsError

SCHEMA_VERSION = 1

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
    ("created_at", pa.timestamp("us", tz="UTC")),   # engine's record (native: spawn time)
    ("started_at", pa.timestamp("us", tz="UTC")),
    ("finished_at", pa.timestamp("us", tz="UTC")),
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


def _atomic_write(path: Path, write: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        write(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_json(path: Path, data: dict[str, Any]) -> None:
    """Write JSON atomically (a crash leaves the old file or the new one, never half)."""
    _atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(data, indent=2, default=str) + "\n"))


def write_table(path: Path, table: pa.Table) -> None:
    _atomic_write(path, lambda tmp: pq.write_table(table, tmp))


class ResultsStore:
    """Writes one run's directory; every finished batch lands on disk at once."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.parts = self.run_dir / "parts"

    @property
    def metadata_path(self) -> Path:
        return self.run_dir / "metadata.json"

    def write_metadata(self, metadata: dict[str, Any]) -> None:
        write_json(self.metadata_path, {"schema_version": SCHEMA_VERSION, **metadata})

    def read_metadata(self) -> dict[str, Any]:
        return read_metadata(self.run_dir)

    def append_batch(self, batch_id: int, rows: list[dict[str, Any]]) -> None:
        """Persist the rows of one finished batch (replacing an earlier attempt of it)."""
        write_table(self.parts / f"batch-{batch_id:06d}.parquet", to_table(rows))

    def consolidate(self) -> pd.DataFrame:
        """Merge every part into results.parquet (atomically), then drop the parts."""
        frame = load_frame(self.run_dir)
        write_table(self.run_dir / "results.parquet", pa.Table.from_pandas(frame, schema=SCHEMA, preserve_index=False))
        for part in self.parts.glob("batch-*.parquet"):
            part.unlink()
        return frame


def read_metadata(run_dir: Path) -> dict[str, Any]:
    path = Path(run_dir) / "metadata.json"
    if not path.exists():
        raise ResultsError(f"{run_dir} is not a shlib results directory: it has no metadata.json")
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ResultsError(f"{path} is not valid JSON ({exc})") from exc
    if meta.get("schema_version") != SCHEMA_VERSION:
        raise ResultsError(f"{path} has schema_version {meta.get('schema_version')!r}; "
                           f"this shlib reads {SCHEMA_VERSION}")
    return meta


def load_frame(run_dir: Path) -> pd.DataFrame:
    """All rows of a run (results.parquet plus any parts), latest attempt of each trial kept."""
    run_dir = Path(run_dir)
    files = [run_dir / "results.parquet"] if (run_dir / "results.parquet").exists() else []
    files += sorted((run_dir / "parts").glob("batch-*.parquet"))
    tables = []
    for file in files:
        try:
            tables.append(pq.read_table(file, schema=SCHEMA))
        except (pa.ArrowInvalid, OSError) as exc:
            raise ResultsError(f"{file} cannot be read ({exc}); move it aside to load the rest") from exc
    table = pa.concat_tables(tables) if tables else SCHEMA.empty_table()
    frame = table.to_pandas(types_mapper={pa.string(): pd.StringDtype(), pa.int64(): pd.Int64Dtype()}.get)
    frame = frame.drop_duplicates(subset=["trial_id", "module", "position"], keep="last")
    for name in ("runtime", "runtime_kind", "module", "status", "mount", "cache", "load_mode"):
        frame[name] = frame[name].astype("category")
    return frame.reset_index(drop=True)


def load_results(run_dir: str | os.PathLike[str]) -> tuple[pd.DataFrame, dict[str, Any]]:
    """Load a results directory: (rows as a DataFrame with proper dtypes, metadata)."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ResultsError(f"results directory {run_dir} does not exist")
    meta = read_metadata(run_dir)
    return load_frame(run_dir), meta
