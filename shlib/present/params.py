"""Notebook parameters, checked before any work: each error names the parameter and what is allowed.

A notebook's first cell after its ``parameters`` cell calls one function here
(``analysis_inputs`` for the analysis notebooks, ``collect_spec`` for the collection notebook),
so a bad value (a results directory that does not exist, an unknown runtime or preset, a
baseline the data lacks) stops the notebook at once with a ``ParameterError`` rather than
deep inside pandas. ``shlib.present.report`` runs the same checks before it starts a kernel.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from shlib.analysis.defaults import DEFAULT_BASELINE, DEFAULT_RESAMPLES, DEFAULT_SEED, resolve_baseline
from shlib.errors import AnalysisError, ResultsError, SpecError
from shlib.paths import project_dir, repo_root
from shlib.results.metadata import RunMetadata

#: Where the analysis notebooks look when run_dir is not given: the committed dataset.
DEFAULT_RUN_DIR = "data/runs/quick"


class ParameterError(SpecError):
    """A notebook (or report) parameter is invalid: the message names it and lists what is allowed."""


def _listing(values: Sequence[Any]) -> str:
    return ", ".join(str(v) for v in values) if len(values) else "(none)"


def find_run_dir(run_dir: str | os.PathLike[str], name: str = "run_dir") -> Path:
    """A results directory, absolute or relative to the working directory or the project checkout.

    Notebooks run with the notebook's folder as working directory in JupyterLab and with the
    caller's under papermill; a relative path is tried against both, then the checkout.
    """
    if not isinstance(run_dir, str | os.PathLike) or not str(run_dir).strip():
        raise ParameterError(f"{name}: give a results directory (a folder holding metadata.json and "
                             f"results.parquet), e.g. {DEFAULT_RUN_DIR!r}; got {run_dir!r}")
    path = Path(run_dir).expanduser()
    candidates = [path] if path.is_absolute() else [Path.cwd() / path, repo_root() / path]
    for candidate in candidates:
        if candidate.is_dir() and ((candidate / "metadata.json").exists() or (candidate / "campaign.json").exists()):
            return candidate.resolve()
    tried = ", ".join(str(c) for c in dict.fromkeys(candidates))
    runs = (repo_root() / "data" / "runs").glob("*/metadata.json")
    near = sorted(str(p.parent.relative_to(repo_root())) for p in runs)
    hint = f"; results directories in this checkout: {_listing(near)}" if near else ""
    if any(c.is_dir() for c in candidates):
        raise ParameterError(f"{name}: {run_dir} is not a shlib results directory (no metadata.json; tried {tried})"
                             f"{hint}")
    raise ParameterError(f"{name}: results directory {run_dir} does not exist (tried {tried}){hint}")


def check_choice(name: str, value: Any, allowed: Sequence[Any]) -> Any:
    """``value`` if it is one of ``allowed``, else a ParameterError listing them."""
    if value not in allowed:
        raise ParameterError(f"{name}: {value!r} is not allowed; choose one of: {_listing(list(allowed))}")
    return value


def check_int(name: str, value: Any, minimum: int = 0, maximum: int | None = None) -> int:
    """A whole number within [minimum, maximum]."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum or (
            maximum is not None and value > maximum):
        upper = f" to {maximum}" if maximum is not None else " or more"
        raise ParameterError(f"{name}: {value!r} is not allowed; give a whole number from {minimum}{upper}")
    return value


def check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ParameterError(f"{name}: {value!r} is not allowed; give True or False")
    return value


def check_str_list(name: str, value: Any) -> list[str]:
    """A list of strings (a lone string is a list of one; empty means 'all')."""
    if isinstance(value, str):
        value = [value] if value else []
    if not isinstance(value, list | tuple) or not all(isinstance(v, str) and v for v in value):
        raise ParameterError(f"{name}: {value!r} is not allowed; give a list of names, e.g. ['runc', 'native'], "
                             "or [] for all")
    return list(value)


def check_runtimes(runtimes: Any, present: Sequence[str], name: str = "runtimes") -> list[str]:
    """The runtimes asked for (all present when empty), each one of ``present``."""
    asked = check_str_list(name, runtimes)
    unknown = [r for r in asked if r not in present]
    if unknown:
        raise ParameterError(f"{name}: unknown runtime(s) {', '.join(map(repr, unknown))}; "
                             f"the results hold: {_listing(sorted(present))}")
    return asked or sorted(present)


def check_baseline(baseline: Any, present: Sequence[str], name: str = "baseline") -> tuple[str, list[str]]:
    """The baseline runtime to use and notes (``shlib.analysis.defaults.resolve_baseline``)."""
    if not isinstance(baseline, str) or not baseline:
        raise ParameterError(f"{name}: {baseline!r} is not allowed; choose one of the runtimes in the results: "
                             f"{_listing(sorted(present))}")
    try:
        return resolve_baseline(list(present), baseline)
    except AnalysisError:
        raise ParameterError(f"{name}: runtime {baseline!r} is not in the results; choose one of: "
                             f"{_listing(sorted(present))}") from None


def check_out_dir(value: Any, name: str = "out_dir") -> Path | None:
    """An output directory, or None when empty (the default place is used)."""
    if value is None or value == "":
        return None
    if not isinstance(value, str | os.PathLike):
        raise ParameterError(f"{name}: {value!r} is not allowed; give a directory path or '' for the default")
    path = Path(value).expanduser()
    if path.exists() and not path.is_dir():
        raise ParameterError(f"{name}: {path} exists and is not a directory")
    return path


@dataclass
class AnalysisInputs:
    """What an analysis notebook works on, after its parameters were checked."""

    run_dir: Path
    frame: pd.DataFrame           # the run's rows, restricted to ``runtimes``
    metadata: RunMetadata
    baseline: str                 # the baseline actually used (after a runc <-> native fallback)
    runtimes: list[str]           # runtimes analysed
    seed: int
    n_resamples: int
    figures_dir: Path | None      # where figures are saved (None: shown only)
    notes: list[str] = field(default_factory=list)
    #: Merged runs (several engines): every run's directory and metadata, ``run_dir``/``metadata`` the first.
    run_dirs: list[Path] = field(default_factory=list)
    metadatas: list[RunMetadata] = field(default_factory=list)

    @property
    def run_id(self) -> str:
        return self.metadata.run_id or self.run_dir.name


def analysis_inputs(run_dir: str | os.PathLike[str] = DEFAULT_RUN_DIR, baseline: str = DEFAULT_BASELINE,
                    runtimes: Any = (), seed: Any = DEFAULT_SEED, n_resamples: Any = DEFAULT_RESAMPLES,
                    figures_dir: Any = "", more_run_dirs: Any = ()) -> AnalysisInputs:
    """Check an analysis notebook's parameters and load its results (one call, the first cell after them).

    ``more_run_dirs``: further results directories merged with ``run_dir`` (engine as a factor); a
    campaign directory (``shlib.collect.campaign``) stands for its engines' runs.
    """
    from shlib.results.store import load_results, run_dirs

    path = find_run_dir(run_dir)
    more = [find_run_dir(d, "more_run_dirs") for d in check_str_list("more_run_dirs", list(more_run_dirs or []))]
    seed = check_int("seed", seed, 0, 2**32 - 1)
    n_resamples = check_int("n_resamples", n_resamples, 100, 1_000_000)
    figures = check_out_dir(figures_dir, "figures_dir")
    try:
        dirs = run_dirs([path, *more])
        if len(dirs) == 1:
            frame, meta = load_results(dirs[0])
            metas = [meta]
        else:
            frame, metas = load_results(dirs)
            meta = metas[0]
    except ResultsError as exc:
        raise ParameterError(f"run_dir: {exc}") from None
    present = sorted(frame["runtime"].astype(str).unique())
    if not present:
        raise ParameterError(f"run_dir: {path} holds no trials yet (status {meta.status!r}); "
                             "choose a run that recorded at least one batch")
    chosen = check_runtimes(runtimes, present)
    used, notes = check_baseline(baseline, present)
    if used not in chosen:
        chosen = sorted({*chosen, used})
        notes.append(f"the baseline {used} was added to the runtimes analysed")
    for each in metas:
        if each.status != "complete":
            notes.append(f"{'this run' if len(metas) == 1 else 'run ' + each.run_id}'s status is {each.status!r}, not "
                         "'complete': the analysis covers the batches recorded so far")
    if meta.simulated:
        notes.append("this run is simulated (shlib.simulate), not measured")
    rows = frame[frame["runtime"].astype(str).isin(chosen)].copy()
    for column in rows.select_dtypes("category"):
        rows[column] = rows[column].cat.remove_unused_categories()
    return AnalysisInputs(run_dir=dirs[0], frame=rows.reset_index(drop=True), metadata=meta, baseline=used,
                          runtimes=chosen, seed=seed, n_resamples=n_resamples, figures_dir=figures, notes=notes,
                          run_dirs=dirs, metadatas=metas)


def collect_spec(preset: Any = "quick", spec_file: Any = "", runtimes: Any = (), modules: Any = (),
                 concurrency: Any = (), repetitions: Any = 0, seed: Any = -1, name: Any = "",
                 client: Any = None) -> Any:
    """The experiment spec of the collection notebook: a preset or spec file with fields overridden.

    Empty values keep the preset's; runtimes are checked against this host's catalog (needs the
    engine unless they are all ``native``). Returns a validated ``shlib.spec.spec.Spec``.
    """
    from shlib.spec.spec import load_spec, make_spec, preset_names
    from shlib.spec.spec import preset as load_preset

    overrides: dict[str, Any] = {}
    asked = check_str_list("runtimes", runtimes)
    if asked:
        overrides["runtimes"] = asked
    module_list = check_str_list("modules", modules)
    if module_list:
        overrides["modules"] = module_list
    if isinstance(concurrency, int) and not isinstance(concurrency, bool):
        concurrency = [concurrency]
    if not isinstance(concurrency, list | tuple):
        raise ParameterError(f"concurrency: {concurrency!r} is not allowed; give a list of whole numbers, "
                             "e.g. [1, 4], or [] for the preset's")
    if concurrency:
        overrides["concurrency"] = list(concurrency)
    if check_int("repetitions", repetitions, 0):
        overrides["repetitions"] = repetitions
    if check_int("seed", seed, -1) >= 0:
        overrides["seed"] = seed
    if name:
        overrides["name"] = name
    if spec_file:
        if not Path(spec_file).is_file():
            raise ParameterError(f"spec_file: {spec_file} does not exist; give a YAML spec file or '' to use "
                                 f"preset (one of: {_listing(preset_names())})")
        try:
            spec = make_spec({**load_spec(spec_file).as_dict(), **overrides})
        except SpecError as exc:
            raise ParameterError(f"spec_file {spec_file}: {exc}") from None
    else:
        if preset not in preset_names():
            raise ParameterError(f"preset: {preset!r} does not exist; choose one of: {_listing(preset_names())}")
        try:
            spec = load_preset(preset, **overrides)
        except SpecError as exc:
            raise ParameterError(f"parameters of preset {preset!r}: {exc}") from None
    check_host_runtimes(spec, client)
    return spec


def check_host_runtimes(spec: Any, client: Any = None) -> list[str]:
    """The spec's runtimes, each known to and available on this host (``shlib doctor`` explains why not)."""
    from shlib.collect.runtimes import catalog, select_runtimes
    from shlib.errors import EngineUnavailable, RuntimeUnavailable

    if client is None and spec.runtimes != ["native"]:
        from shlib.collect.engine import connect

        try:
            client = connect()
        except EngineUnavailable:
            client = None
    known = catalog(client)
    try:
        return select_runtimes(spec, known)
    except (SpecError, RuntimeUnavailable) as exc:
        available = [n for n, rt in known.items() if rt.available]
        raise ParameterError(f"{exc}. Available on this host: {_listing(available)}") from None


def collect_out_dir(out_dir: Any, resume: Any) -> Path | None:
    """The collection notebook's results directory; resuming needs one.

    None means the project's runs/<run_id> (``shlib.paths.runs_dir``); a relative path is taken from the
    project, not from the notebook's folder (JupyterLab runs a notebook inside notebooks/).
    """
    path = check_out_dir(out_dir)
    if path is not None and not path.is_absolute():
        path = project_dir() / path
    if check_bool("resume", resume) and path is None:
        raise ParameterError("resume: True needs out_dir, the directory of the run to complete")
    return path
