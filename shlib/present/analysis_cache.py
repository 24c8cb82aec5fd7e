"""One analysis per run and parameters: computed once, then read by every notebook of a report.

The bootstrap makes an analysis the slow step (seconds to minutes); a report runs several notebooks
on the same run and parameters, and a reader re-runs cells. ``analysis_of`` computes the analysis of
a notebook's inputs once and keeps it in shlib's cache directory, keyed by everything it depends on:
the run's files (metadata.json's bytes, each parquet's name, size and modification time), the
runtimes, baseline, seed and resamples, the analysis code itself, and the versions of shlib, numpy,
pandas and scipy.
"""

from __future__ import annotations

import functools
import hashlib
import os
import pickle
import tempfile
from importlib import metadata as importlib_metadata
from pathlib import Path

import shlib.analysis as analysis_package
from shlib import __version__
from shlib.analysis.analyze import AnalysisResult, analyze_frame, analyze_runs
from shlib.paths import cache_dir
from shlib.present.params import AnalysisInputs


def analysis_key(inputs: AnalysisInputs) -> str:
    """The cache key of ``inputs``: what the analysis depends on, hashed."""
    digest = hashlib.sha256()
    for run in inputs.run_dirs or [Path(inputs.run_dir)]:
        digest.update((run / "metadata.json").read_bytes())
        for part in sorted([run / "results.parquet", *(run / "parts").glob("batch-*.parquet")]):
            if part.exists():
                stat = part.stat()
                digest.update(f"{part.name}|{stat.st_size}|{stat.st_mtime_ns}".encode())
    versions = [__version__, *(importlib_metadata.version(p) for p in ("numpy", "pandas", "scipy"))]
    digest.update(repr((sorted(inputs.runtimes), inputs.baseline, inputs.seed, inputs.n_resamples, versions)).encode())
    digest.update(_analysis_code())
    return digest.hexdigest()[:24]


@functools.cache
def _analysis_code() -> bytes:
    """The analysis package's own files, hashed: a changed method never serves a stale cached analysis."""
    digest = hashlib.sha256()
    root = Path(analysis_package.__file__).parent
    for path in sorted(p for p in root.rglob("*") if p.suffix in (".py", ".csv") and p.is_file()):
        digest.update(path.relative_to(root).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.digest()


def cache_path(inputs: AnalysisInputs) -> Path:
    return cache_dir() / "analyses" / f"{analysis_key(inputs)}.pickle"


def analysis_of(inputs: AnalysisInputs) -> AnalysisResult:
    """The analysis of ``inputs``: read from the cache when this run and these parameters were analysed before."""
    path = cache_path(inputs)
    try:
        with open(path, "rb") as fh:
            cached = pickle.load(fh)
        if isinstance(cached, AnalysisResult):
            return cached
    except (OSError, pickle.UnpicklingError, EOFError, AttributeError, ImportError):
        pass  # absent, or written by another version of a library: compute it again
    if len(inputs.metadatas) > 1:
        result = analyze_runs(inputs.frame, inputs.metadatas, baseline=inputs.baseline, seed=inputs.seed,
                              n_resamples=inputs.n_resamples)
    else:
        result = analyze_frame(inputs.frame, baseline=inputs.baseline, seed=inputs.seed,
                               n_resamples=inputs.n_resamples, metadata=inputs.metadata)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            pickle.dump(result, fh, protocol=pickle.HIGHEST_PROTOCOL)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return result
