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
from typing import TYPE_CHECKING, Any, overload

from shlib.errors import ResultsError
from shlib.results.metadata import DEFAULT_ENGINE_LABEL, RunMetadata
from shlib.results.schema import arrow_schema, to_table

if TYPE_CHECKING:
    import pandas as pd
    import pyarrow as pa


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
    import pyarrow.parquet as pq  # not needed on the way to the first container

    _atomic_write(path, lambda tmp: pq.write_table(table, tmp))


class ResultsStore:
    """Writes one run's directory; every finished batch lands on disk at once."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self.parts = self.run_dir / "parts"

    @property
    def metadata_path(self) -> Path:
        return self.run_dir / "metadata.json"

    def write_metadata(self, metadata: RunMetadata) -> None:
        write_json(self.metadata_path, metadata.as_dict())

    def read_metadata(self) -> RunMetadata:
        return read_metadata(self.run_dir)

    def append_batch(self, batch_id: int, rows: list[dict[str, Any]]) -> None:
        """Persist the rows of one finished batch (replacing an earlier attempt of it)."""
        write_table(self.parts / f"batch-{batch_id:06d}.parquet", to_table(rows))

    def consolidate(self) -> pd.DataFrame:
        """Merge every part into results.parquet (atomically), then drop the parts."""
        frame = load_frame(self.run_dir)
        import pyarrow as pa

        write_table(self.run_dir / "results.parquet",
                    pa.Table.from_pandas(frame, schema=arrow_schema(), preserve_index=False))
        for part in self.parts.glob("batch-*.parquet"):
            part.unlink()
        return frame


def read_metadata(run_dir: Path) -> RunMetadata:
    """A run's metadata.json, migrated to this shlib's schema version and validated."""
    path = Path(run_dir) / "metadata.json"
    if not path.exists():
        raise ResultsError(f"{run_dir} is not a shlib results directory: it has no metadata.json")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ResultsError(f"{path} is not valid JSON ({exc})") from exc
    return RunMetadata.from_dict(data, str(path))


def load_frame(run_dir: Path) -> pd.DataFrame:
    """All rows of a run (results.parquet plus any parts), latest attempt of each trial kept."""
    run_dir = Path(run_dir)
    files = [run_dir / "results.parquet"] if (run_dir / "results.parquet").exists() else []
    files += sorted((run_dir / "parts").glob("batch-*.parquet"))
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables = []
    for file in files:
        try:
            tables.append(pq.read_table(file, schema=arrow_schema()))
        except (pa.ArrowInvalid, OSError) as exc:
            raise ResultsError(f"{file} cannot be read ({exc}); move it aside to load the rest") from exc
    frame = frame_of(pa.concat_tables(tables) if tables else arrow_schema().empty_table())
    frame = frame.drop_duplicates(subset=["trial_id", "module", "position"], keep="last")
    meta = read_metadata(run_dir) if (run_dir / "metadata.json").exists() else None
    return fill_older_rows(frame.reset_index(drop=True), meta)


def fill_older_rows(frame: pd.DataFrame, meta: RunMetadata | None) -> pd.DataFrame:
    """Rows written before schema v3 given the v3 columns they imply (Node; the run's one engine)."""
    if frame["language"].isna().any():
        frame["language"] = frame["language"].astype(object).fillna("node").astype("category")
    missing = frame["interpreter_version"].isna()
    if missing.any():
        frame.loc[missing, "interpreter_version"] = frame.loc[missing, "node_version"]
    engine = (meta.engine if meta else None) or {}
    native = frame["runtime_kind"].astype(str) == "native"
    for column, value in (("engine", engine.get("label", DEFAULT_ENGINE_LABEL)),
                          ("engine_host", (meta.host.hostname or meta.hostname) if meta else None)):
        if value is not None:
            frame[column] = frame[column].fillna(value)
    kinds = frame["engine_kind"].isna()
    if kinds.any():
        frame.loc[kinds & native, "engine_kind"] = "native"
        frame.loc[kinds & ~native, "engine_kind"] = engine.get("kind", "docker")
    return frame


#: Factor columns that a results frame holds as pandas categories.
CATEGORIES = ("runtime", "runtime_kind", "module", "status", "mount", "cache", "load_mode", "language")


def frame_of(table: pa.Table) -> pd.DataFrame:
    """Rows of the schema as pandas with the dtypes analysis expects: strings, nullable ints, categories."""
    import pandas as pd  # ~0.3 s: imported when a frame is read, never on the way to the first container
    import pyarrow as pa

    frame = table.to_pandas(types_mapper={pa.string(): pd.StringDtype(), pa.int64(): pd.Int64Dtype()}.get)
    for name in CATEGORIES:
        frame[name] = frame[name].astype("category")
    return frame


@overload
def load_results(run_dir: str | os.PathLike[str]) -> tuple[pd.DataFrame, RunMetadata]: ...


@overload
def load_results(run_dir: list[str | os.PathLike[str]] | tuple[str | os.PathLike[str], ...]
                 ) -> tuple[pd.DataFrame, list[RunMetadata]]: ...


def load_results(run_dir: Any) -> tuple[pd.DataFrame, Any]:
    """Load a results directory: (rows as a DataFrame with proper dtypes, metadata).

    Given a list of directories (runs, or campaigns: each stands for its engines' runs), the runs
    merged: (rows of every run, one RunMetadata per run in order); see ``merge_runs``.
    """
    if isinstance(run_dir, (list, tuple)):
        return merge_runs(run_dirs(run_dir))
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise ResultsError(f"results directory {run_dir} does not exist")
    meta = read_metadata(run_dir)
    return load_frame(run_dir), meta


#: A campaign directory's record (``shlib.collect.campaign``): spec, engines, their directories and status.
CAMPAIGN_FILE = "campaign.json"


def read_campaign(campaign_dir: Path) -> dict[str, Any]:
    """A campaign's record, checked for the keys shlib reads."""
    path = Path(campaign_dir) / CAMPAIGN_FILE
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ResultsError(f"{path} cannot be read as a campaign record ({exc})") from exc
    if not isinstance(data, dict) or not isinstance(data.get("engines"), list) or "spec" not in data:
        raise ResultsError(f"{path} is not a campaign record: it needs 'spec' and a list 'engines'")
    return data


def run_dirs(paths: list[str | os.PathLike[str]] | tuple[str | os.PathLike[str], ...]) -> list[Path]:
    """Results directories named by ``paths``: a run directory as it is, a campaign directory as its
    engines' runs (those that recorded anything, complete or not: a lost engine keeps its batches)."""
    found: list[Path] = []
    for item in paths:
        path = Path(item)
        if (path / CAMPAIGN_FILE).exists() and not (path / "metadata.json").exists():
            runs = [path / e["dir"] for e in read_campaign(path)["engines"]
                    if isinstance(e, dict) and (path / str(e.get("dir", ""))).joinpath("metadata.json").exists()]
            if not runs:
                raise ResultsError(f"campaign {path} holds no run yet (see {path / CAMPAIGN_FILE})")
            found += runs
        elif not path.is_dir():
            raise ResultsError(f"results directory {path} does not exist")
        else:
            found.append(path)
    if not found:
        raise ResultsError("no results directory given")
    return found


def merge_runs(dirs: list[Path]) -> tuple[pd.DataFrame, list[RunMetadata]]:
    """Rows of several runs in one frame (``run_id`` tells them apart) and each run's metadata.

    Engine labels are what the analysis compares within, so two runs whose engines share a label
    but not an ID (two machines' "default") have theirs made distinct: ``label@host`` (and the ID's
    first characters if that is not enough). A run given twice is refused.
    """
    import pandas as pd

    metas = [read_metadata(d) for d in dirs]
    ids = [m.run_id for m in metas]
    twice = sorted({i for i in ids if ids.count(i) > 1})
    if twice:
        raise ResultsError(f"run(s) {', '.join(twice)} given twice: each run counts once")
    frames = [load_frame(d) for d in dirs]
    labels = [str((m.engine or {}).get("label") or DEFAULT_ENGINE_LABEL) for m in metas]
    for label in set(labels):
        same = [i for i, lab in enumerate(labels) if lab == label]
        if len({(metas[i].engine or {}).get("id") for i in same}) > 1:
            for i in same:
                engine = metas[i].engine or {}
                new = f"{label}@{engine.get('name') or metas[i].host.hostname or 'unknown'}"
                if sum(1 for j in same if (metas[j].engine or {}).get("name") == engine.get("name")) > 1 and len(
                        {(metas[j].engine or {}).get("id") for j in same
                         if (metas[j].engine or {}).get("name") == engine.get("name")}) > 1:
                    new += f"-{str(engine.get('id') or '')[:8]}"
                frames[i]["engine"] = new
                if metas[i].engine is not None:
                    metas[i].engine = {**metas[i].engine, "label": new, "label_recorded": label}
    frame = pd.concat(frames, ignore_index=True)
    for name in CATEGORIES:
        frame[name] = frame[name].astype(str).where(frame[name].notna()).astype("category")
    return frame, metas
