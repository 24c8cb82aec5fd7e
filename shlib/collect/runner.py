"""Run an experiment: prepare the host, execute the plan batch by batch, keep every result.

    spec -> runtimes + image + library -> plan -> batches of probes -> rows on disk

Every finished batch is on disk before the next starts. Ctrl-C / SIGTERM, a hung runtime,
a dying engine or a kill -9 lose at most the batch in flight; ``resume=True`` completes
the plan without repeating a trial.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
from collections import defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import docker
from tqdm.auto import tqdm

import shlib
from shlib.collect.cgroup import cgroup_layout
from shlib.collect.docker_batch import ContainerBatch
from shlib.collect.engine import client_is_local, client_kind, connect, container_quirks, engine_facts
from shlib.collect.host import engine_host_facts, host_facts, node_version
from shlib.collect.image import NodeImage, ensure_image, wheel_node
from shlib.collect.library import (
    Library,
    ensure_library_image,
    ensure_volume,
    install_library,
    mount_kwargs,
)
from shlib.collect.native_batch import NativeBatch
from shlib.collect.probe import GO_LEAD_MS, GO_LEAD_MS_PER_PROBE, Outcome, probe_argument
from shlib.collect.pyimage import (
    PY_FLAGS,
    PY_PROBE_PATH,
    PythonImage,
    ensure_python_image,
    find_interpreter,
    python_command,
)
from shlib.collect.pylibrary import install_python_library
from shlib.collect.records import rows_for, skipped_rows
from shlib.collect.runtimes import Runtime, catalog, select_runtimes
from shlib.collect.syscalls import syscall_profiles
from shlib.errors import EngineUnavailable, Interrupted, ResultsError, RuntimeUnavailable, SpecError
from shlib.paths import runs_dir
from shlib.results.metadata import RunMetadata, RunStatus
from shlib.results.schema import DONE_STATUSES, runtime_kind
from shlib.results.store import ResultsStore, load_frame
from shlib.spec import adaptive
from shlib.spec.modules import parse_ref
from shlib.spec.plan import NATIVE, Batch, plan
from shlib.spec.spec import Spec, make_spec

if TYPE_CHECKING:
    import pandas as pd

#: Trial statuses that count towards skipping a runtime (the runtime failed, not the module):
#: only when the probe never got to "ready" (a module that hangs or crashes Node after the
#: barrier is the module's failure, recorded per module, and does not skip the runtime).
RUNTIME_FAILURES = frozenset({"timeout", "start_failed", "crashed"})


def runtime_failed(outcome: Outcome) -> bool:
    """Whether a trial failed because of its runtime (it never ran the probe up to 'ready')."""
    return outcome.status in RUNTIME_FAILURES and not outcome.ready


def new_run_id(spec: Spec) -> str:
    return f"{datetime.now(UTC):%Y%m%dT%H%M%S}-{spec.name.replace(' ', '_')}-{os.urandom(2).hex()}"


def check_out_dir(out_dir: Path, spec: Spec, resume: bool) -> RunMetadata | None:
    """Refuse a results directory that cannot be written or holds another run; return its metadata."""
    if out_dir.exists() and not out_dir.is_dir():
        raise ResultsError(f"--out {out_dir} exists and is not a directory")
    meta = None
    if (out_dir / "metadata.json").exists():
        meta = ResultsStore(out_dir).read_metadata()
        if not resume:
            raise ResultsError(f"--out {out_dir} already holds run {meta.run_id}; pass --resume to complete "
                               "it, or choose another directory")
        saved = make_spec(meta.spec)
        if saved.model_copy(update={"seed": None}) != spec.model_copy(update={"seed": None}) or (
                spec.seed is not None and spec.seed != saved.seed):
            raise ResultsError(f"--out {out_dir} holds run {meta.run_id} of a different spec; resume it with "
                               "its own spec (shown in its metadata.json) or choose another directory")
    elif out_dir.exists() and any(not _stray_tmp(p) for p in out_dir.iterdir()):
        raise ResultsError(f"--out {out_dir} is not empty and holds no shlib run; choose an empty or new directory")
    elif resume:
        raise ResultsError(f"--resume: {out_dir} holds no run to resume")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out_dir):
            pass
    except OSError as exc:
        raise ResultsError(f"--out {out_dir} is not writable ({exc.strerror or exc})") from None
    return meta


def resume_runtimes(meta: RunMetadata, known: dict[str, Runtime]) -> tuple[dict[str, Runtime], dict[str, str]]:
    """The runtimes a resumed run was planned for (its recorded set, never today's catalog), and those gone.

    A runtime registered since is not added (batch ids are positions in the plan, so the plan must be the
    same); one that is no longer available is returned with the reason, and its remaining batches are
    recorded as skipped. One whose binary version or flags changed is refused: two builds would be
    measured under one name.
    """
    runtimes: dict[str, Runtime] = {}
    gone: dict[str, str] = {}
    for name in meta.runtime_set:
        record = meta.runtimes.get(name)
        now = known.get(name)
        if now is None or not now.available:
            why = now.reason if now is not None else "no longer registered with the engine"
            gone[name] = f"unavailable when the run was resumed: {why}"
            runtimes[name] = Runtime(name=name, kind=record.kind if record else runtime_kind(name), available=False,
                                     reason=why)
            continue
        if record is not None and (record.version, list(record.args)) != (now.version, list(now.args)):
            raise ResultsError(f"runtime {name} changed since run {meta.run_id} started (version {record.version!r}, "
                               f"flags {record.args} then; {now.version!r}, {now.args} now): resuming would mix two "
                               "builds under one name. Start a new run, or restore the runtime")
        runtimes[name] = now
    return runtimes, gone


def check_resume_inputs(meta: RunMetadata, prep: Prepared) -> None:
    """Refuse to resume onto another image or library than the run started with (as pyperf checks metadata)."""
    if meta.library.tree_hash and meta.library.tree_hash != prep.library.tree_hash:
        raise ResultsError(f"the shared library changed since run {meta.run_id} started (tree hash "
                           f"{meta.library.tree_hash[:12]} then, {prep.library.tree_hash[:12]} now): start a new run")
    then_py = (meta.library.model_extra or {}).get("python_libraries") or {}
    for key, now in _python_libraries(prep).get("python_libraries", {}).items():
        if key in then_py and then_py[key].get("tree_hash") != now["tree_hash"]:
            raise ResultsError(f"the Python library of {key!r} changed since run {meta.run_id} started (tree hash "
                               f"{str(then_py[key].get('tree_hash'))[:12]} then, {now['tree_hash'][:12]} now): "
                               "start a new run")
    for source, image in prep.images.items():
        then = meta.images.get(source)
        if then is not None and then.image_id != image.image_id:
            raise ResultsError(f"the Node image for {source!r} changed since run {meta.run_id} started ("
                               f"{then.image_id[:19]} then, {image.image_id[:19]} now): start a new run")


def _python_libraries(prep: Prepared) -> dict[str, Any]:
    """The Python libraries' manifests by ``library_key``, for the run's metadata (beside the Node one)."""
    found = {key: {"path": str(lib.path), "volume": prep.volumes.get(key), **lib.manifest}
             for key, lib in prep.libraries.items() if lib.language == "python"}
    return {"python_libraries": found} if found else {}


def _stray_tmp(path: Path) -> bool:
    """A temporary file a killed run left half-written (results.py writes .NAME.*.tmp, then renames)."""
    return path.is_file() and path.name.startswith(".") and path.name.endswith(".tmp")


def remove_leftovers(client: docker.DockerClient | None, run_id: str) -> int:
    """Remove containers of ``run_id`` that a killed run (kill -9, engine crash) left behind."""
    if client is None:
        return 0
    from shlib.collect.cleanup import clean_all

    return len(clean_all(client, run_id=run_id)["containers"])


@contextmanager
def signals_raise() -> Iterator[None]:
    """Turn SIGTERM (and SIGINT) into KeyboardInterrupt in the main thread, for cleanup."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(signal.Signals(signum).name)

    old = {s: signal.signal(s, handler) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


@dataclass
class Prepared:
    """What the batches need, made once per run."""

    client: docker.DockerClient | None
    runtimes: dict[str, Runtime]
    #: The Node library (the Python one when the spec has no npm module).
    library: Library
    timeout_s: float
    #: Probe images by interpreter source: Node sources, and ``python:<source>`` for Python.
    images: dict[str, NodeImage | PythonImage] = field(default_factory=dict)
    lib_images: dict[str, str] = field(default_factory=dict)
    volume: str | None = None
    native_nodes: dict[str, str] = field(default_factory=dict)
    #: Every library by ``library_key`` ("node", "python:<source>"), and the volumes holding them.
    libraries: dict[str, Library] = field(default_factory=dict)
    volumes: dict[str, str] = field(default_factory=dict)
    containers: ContainerBatch | None = None
    #: The engine's identity (``engine.engine_facts``); None for a native-only run.
    engine: dict[str, Any] | None = None
    #: Each module's syscall profile (``syscalls.syscall_profiles``); None without strace.
    syscalls: dict[str, Any] | None = None


def library_key(language: str, source: str) -> str:
    """Which library a cell loads from: "node", or "python:<source>" (one per Python interpreter)."""
    return "node" if language == "node" else source


def _libraries(spec: Spec, given: Library | list[Library] | None) -> dict[str, Library]:
    """The spec's libraries by ``library_key``: those given (by language), the others installed now."""
    given_list = list(given) if isinstance(given, (list, tuple)) else [given] if given is not None else []
    by_language = {lib.language if isinstance(getattr(lib, "language", None), str) else "node": lib
                   for lib in given_list}
    refs = spec.module_refs()
    out: dict[str, Library] = {}
    if "node" in spec.languages():
        out["node"] = by_language.get("node") or install_library([r.requirement for r in refs
                                                                  if r.language == "node"])
    for source in spec.python if "python" in spec.languages() else []:
        out[f"python:{source}"] = by_language.get("python") or install_python_library(
            [m for m, r in zip(spec.modules, refs, strict=True) if r.language == "python"], source=source)
    for key, lib in out.items():
        language = "node" if key == "node" else "python"
        wanted = {r.name for r in refs if r.language == language}
        absent = wanted - {m["module"] for m in lib.manifest["modules"]}
        if absent:
            raise SpecError(f"modules: {', '.join(sorted(absent))} not in the given {language} library")
    return out


def prepare(spec: Spec, runtimes: dict[str, Runtime], client: docker.DockerClient | None, run_id: str,
            library: Library | list[Library] | None = None) -> Prepared:
    """Install the libraries (unless given), build images and the volumes the plan needs.

    ``runtimes``: every runtime of the plan; those not available (gone since a resume) need nothing.
    ``library``: a library (or one per language) to use instead of installing the spec's modules.
    """
    libraries = _libraries(spec, library)
    library = libraries.get("node") or next(iter(libraries.values()))
    prep = Prepared(client=client, runtimes=runtimes, library=library, timeout_s=spec.timeout_s,
                    libraries=libraries)
    names = [n for n, rt in runtimes.items() if rt.available]
    node_sources = spec.node if "node" in libraries else []
    if any(n != NATIVE for n in names):
        assert client is not None
        for key, lib in libraries.items():
            if lib.language == "python":
                image = prep.images[key] = ensure_python_image(client, key.split(":", 1)[1], lib.content)
                if "image" in spec.mount:
                    prep.lib_images[key] = ensure_library_image(client, lib, image)
                if "volume" in spec.mount:
                    prep.volumes[key] = ensure_volume(client, lib, image)
        for source in node_sources:
            prep.images[source] = ensure_image(client, source)
            if "image" in spec.mount:
                prep.lib_images[source] = ensure_library_image(client, library, prep.images[source])
        if "volume" in spec.mount and node_sources:
            prep.volume = prep.volumes["node"] = ensure_volume(client, library, prep.images[spec.node[0]])
        prep.containers = ContainerBatch(client, spec.timeout_s, spec.memory_mb, spec.pids_limit,
                                         labels={"shlib.run_id": run_id}, extra=container_quirks(client_kind(client)))
    # The syscall profile is Node's (the host's node under strace, loading the npm library).
    prep.syscalls = module_syscalls(library, runtimes, spec.timeout_s) if "node" in libraries else None
    if NATIVE in names:
        for source in node_sources:
            if source == "host":
                prep.native_nodes[source] = runtimes[NATIVE].path or "node"
            elif source.startswith("wheel:"):
                prep.native_nodes[source] = str(wheel_node(source.split(":", 1)[1]))
    return prep


def check_remote_spec(spec: Spec, engine: dict[str, Any]) -> None:
    """Refuse what only works beside the engine: bind mounts of this machine's directory, native, cold cache."""
    where = f"engine {engine.get('label')!r} ({engine.get('url')}) runs on another host ({engine.get('name')})"
    if "bind" in spec.mount:
        raise SpecError(f"mount: 'bind' mounts a directory of this machine, and the {where}: use 'volume' (filled "
                        "through the engine's API) or 'image'")
    if spec.runtimes != "all" and NATIVE in spec.runtimes:
        raise SpecError(f"runtimes: 'native' runs the probe on this machine, and the {where}: drop native, or run "
                        "shlib on the engine's host")
    if "cold" in spec.cache:
        raise SpecError(f"cache: 'cold' drops this machine's page cache, and the {where}: use 'warm'")


def module_syscalls(library: Library, runtimes: dict[str, Runtime], timeout_s: float = 60.0) -> dict[str, Any] | None:
    """Each module's syscall profile, measured once with the host's node under strace (cached with the
    library); None without strace or node, {"error": ...} when the measurement failed (the run goes on)."""
    native = runtimes.get(NATIVE)
    node = (native.path if native is not None and native.path else None) or shutil.which("node")
    if node is None or shutil.which("strace") is None:
        return None
    modules = [m["module"] for m in library.manifest["modules"]]
    with resources.as_file(resources.files("shlib.collect.probes").joinpath("load.js")) as probe:
        try:
            return syscall_profiles(library.path, library.tree_hash, modules, node, probe, node_version(node),
                                    timeout_s=min(timeout_s, 60.0))
        except (OSError, RuntimeError, ValueError, subprocess.SubprocessError) as exc:
            return {"error": f"strace of the probe failed: {exc}"[:2000]}


def drop_caches() -> None:
    """Empty the host's page cache (cold-cache trials); needs root."""
    os.sync()
    Path("/proc/sys/vm/drop_caches").write_text("3\n")


def execute(batch: Batch, prep: Prepared) -> list[Outcome]:
    """Run one batch and return one outcome per process."""
    cell = batch.cell
    if cell.cache == "cold":
        drop_caches()
    key = library_key(cell.language, cell.node)
    lib = prep.libraries.get(key, prep.library)
    names = probe_names(cell, lib)
    python = cell.language == "python"
    hold = prep.containers.hold if prep.containers is not None else True
    if cell.runtime == NATIVE:
        probe_file = "load.py" if python else "load.js"
        with resources.as_file(resources.files("shlib.collect.probes").joinpath(probe_file)) as probe:
            if python:
                interp = find_interpreter(cell.node.split(":", 1)[1])
                native = NativeBatch(interp.argv[0], probe, prep.timeout_s, hold=hold,
                                     flags=(*interp.argv[1:], *PY_FLAGS))
            else:
                native = NativeBatch(prep.native_nodes[cell.node], probe, prep.timeout_s)
            return native.run(cell.concurrency, str(lib.content), names)
    assert prep.containers is not None
    image = prep.lib_images[cell.node] if cell.mount == "image" else prep.images[cell.node].tag
    py_image = prep.images[cell.node]
    command = python_command(py_image.executable, PY_PROBE_PATH,
                             probe_argument(lib.mount_point, names, prep.containers.hold)) \
        if isinstance(py_image, PythonImage) else None
    kwargs = prep.containers.create_kwargs(
        image, prep.runtimes[cell.runtime].engine_name, names, lib.mount_point,
        mount_kwargs(cell.mount, lib, prep.volumes.get(key, prep.volume)), {"shlib.batch_id": str(batch.batch_id)},
        command=command)
    return prep.containers.run(cell.concurrency, kwargs)


def probe_names(cell: Batch | Any, lib: Library) -> tuple[str, ...]:
    """What the probe is asked to load for the cell's modules: npm names, or the Python import names."""
    refs = [parse_ref(m) for m in cell.modules]
    if cell.language != "python":
        return tuple(r.name for r in refs)
    imports = {m["module"]: m.get("import", m["module"]) for m in lib.manifest["modules"]}
    return tuple(imports.get(r.name, r.name) for r in refs)


def _counts(frame: pd.DataFrame) -> dict[str, int]:
    trials = frame.drop_duplicates("trial_id")
    return {str(k): int(v) for k, v in trials["status"].value_counts().items() if v}


def unfinished_cells(frame: pd.DataFrame, target: float) -> set[tuple[Any, ...]]:
    """Cells (runtime, language, module, concurrency, mount, cache) whose median is not yet known to ``target``.

    ``target``: the relative half-width wanted for ratios (see ``adaptive.cell_done``). A cell is
    open while any of its interpreter versions is; a cell without one successful trial is not (repeating
    it would not narrow anything; its failures are in the results).
    """
    ok = frame[frame["status"] == "ok"]
    keys = ["runtime", "language", "module", "concurrency", "mount", "cache", "interpreter_version"]
    batch_medians = ok.groupby([*keys, "batch_id"], observed=True)["load_ms"].median().reset_index()
    open_cells = set()
    for key, group in batch_medians.groupby(keys, observed=True):
        if not adaptive.cell_done(group.sort_values("batch_id")["load_ms"].tolist(), target):
            open_cells.add(tuple(key)[:6])
    return open_cells


def _is_open(batch: Batch, open_cells: set[tuple[Any, ...]]) -> bool:
    """Whether any module a batch loads (all of them in sequence mode) is in a cell still open."""
    cell = batch.cell
    return any((cell.runtime, cell.language, parse_ref(m).name, cell.concurrency, cell.mount, cell.cache)
               in open_cells for m in cell.modules)


def run_experiment(spec: Spec | dict[str, Any], out_dir: str | Path | None = None, resume: bool = False,
                   client: docker.DockerClient | None = None, progress: bool = True,
                   on_batch: Callable[[Batch, list[dict[str, Any]]], None] | None = None,
                   library: Library | None = None, engine: str | None = None) -> Path:
    """Run ``spec`` into ``out_dir`` (default runs/<run_id>) and return the results directory.

    ``library`` replaces the npm install of ``spec.modules`` (e.g. one with local packages).
    ``engine``: the engine to run on (URL or docker context, see ``engine.resolve_engine``; default
    DOCKER_HOST or the local socket), checked before anything starts.
    Raises Interrupted (after saving) on Ctrl-C/SIGTERM and EngineUnavailable when the
    engine goes away; in both cases ``resume=True`` completes the run later.
    """
    spec = make_spec(spec)
    out = Path(out_dir) if out_dir is not None else None
    meta = check_out_dir(out, spec, resume) if out is not None else None
    if meta is not None:
        spec = make_spec(meta.spec)
    spec = spec.with_seed()
    if "cold" in spec.cache and os.geteuid() != 0:
        raise SpecError("cache: 'cold' drops the host's page cache and needs root; run as root or use 'warm'")
    run_id = meta.run_id if meta else new_run_id(spec)
    if out is None:
        out = runs_dir() / run_id
        check_out_dir(out, spec, False)
    needs_engine = spec.runtimes == "all" or any(r != NATIVE for r in spec.runtimes) or engine is not None
    if client is None and needs_engine:
        client = connect(pool_size=4 * max(spec.concurrency) + 8, timeout_s=max(120.0, spec.timeout_s + 60),
                         engine=engine)
    local = client is None or client_is_local(client)
    facts = engine_facts(client) if client is not None else None
    if not local:
        check_remote_spec(spec, facts)
    known = catalog(client)
    if meta is None:
        runtimes, gone = {n: known[n] for n in select_runtimes(spec, known)}, {}
    else:
        runtimes, gone = resume_runtimes(meta, known)
    names = list(runtimes)
    if not names:
        raise RuntimeUnavailable("no runtime is available on this host; run 'shlib doctor' to see why")
    if meta is not None:
        removed = remove_leftovers(client, run_id)
        if removed and progress:
            tqdm.write(f"shlib: removed {removed} container(s) the interrupted run left behind")
    prep = prepare(spec, runtimes, client, run_id, library)
    prep.engine = facts
    if local:
        host = host_facts()
    else:
        image = next(iter(prep.images.values()), None)
        host = engine_host_facts(client, image.tag, container_quirks(client_kind(client))) if image else {}
    if meta is not None:
        check_resume_inputs(meta, prep)
        then = (meta.engine or {}).get("id")
        if then and prep.engine and then != prep.engine.get("id"):
            raise ResultsError(f"run {meta.run_id} started on engine {meta.engine.get('label')!r} (id {then}), "
                               f"not on {prep.engine.get('label')!r} (id {prep.engine.get('id')}): resume it on its "
                               f"own engine with --engine {meta.engine.get('label')}")
    store = ResultsStore(out)
    done_batches = _done_batches(out) if meta else set()
    now = datetime.now(UTC).isoformat()
    metadata = RunMetadata(
        run_id=run_id, shlib_version=shlib.__version__, status="running", spec=spec.as_dict(), seed=spec.seed,
        runtime_set=names, started_at=meta.started_at if meta else now,
        resumed_at=[*meta.resumed_at, now] if meta else [], hostname=socket.gethostname(), host=host,
        engine=prep.engine,
        runtimes={n: (meta.runtimes[n].model_dump() if n in gone and meta and n in meta.runtimes else rt.as_dict())
                  for n, rt in runtimes.items()},
        runtimes_unavailable={n: rt.reason for n, rt in known.items() if not rt.available},
        skipped_runtimes=dict(gone), images={s: img.as_dict() for s, img in prep.images.items()},
        library_images=prep.lib_images, volume=prep.volume,
        library={"path": str(prep.library.path), **prep.library.manifest, "syscall_profile": prep.syscalls,
                 **_python_libraries(prep)},
        harness={"go_lead_ms": GO_LEAD_MS, "go_lead_ms_per_probe": GO_LEAD_MS_PER_PROBE,
                 "go_lead_note": "a batch of one probe starts at once (no lead)",
                 "probe_hold": prep.containers.hold if prep.containers is not None else True,
                 "cgroup": cgroup_layout(),
                 "lockdown": {"network": "none", "user": "1000:1000", "cap_drop": "ALL", "no_new_privileges": True,
                              "read_only_rootfs": True, "library": "read-only", "memory_mb": spec.memory_mb,
                              "pids_limit": spec.pids_limit}},
    )
    store.write_metadata(metadata)

    adaptive = spec.target_rel_halfwidth is not None
    first_reps = spec.min_repetitions if adaptive else spec.repetitions
    todo = [b for b in plan(spec, names, first_reps) if b.batch_id not in done_batches]
    failures: dict[str, int] = defaultdict(int)
    skipped = metadata.skipped_runtimes
    next_rep = first_reps
    bar = tqdm(total=len(todo), unit="batch", disable=not progress, desc=spec.name)
    try:
        with signals_raise():
            while todo or adaptive:
                if not todo:  # adaptive: one more repetition of the cells not yet known to the target
                    open_cells = unfinished_cells(load_frame(out), spec.target_rel_halfwidth or 0) \
                        if next_rep < spec.repetitions else set()
                    if not open_cells:
                        break
                    todo = [b for b in plan(spec, names, 1, next_rep)
                            if _is_open(b, open_cells) and b.batch_id not in done_batches
                            and b.cell.runtime not in skipped]
                    next_rep += 1
                    bar.total += len(todo)
                    continue
                batch = todo.pop(0)
                runtime = batch.cell.runtime
                if runtime in skipped:
                    outcomes: list[Outcome] = []
                    rows = skipped_rows(batch, run_id, prep, skipped[runtime])
                else:
                    outcomes = execute(batch, prep)
                    rows = rows_for(batch, outcomes, run_id, prep)
                store.append_batch(batch.batch_id, rows)
                for outcome in outcomes:
                    failures[runtime] = failures[runtime] + 1 if runtime_failed(outcome) else 0
                if runtime not in skipped and failures[runtime] >= spec.max_consecutive_failures:
                    last = next(o.error for o in reversed(outcomes) if runtime_failed(o))
                    skipped[runtime] = (f"skipped after {failures[runtime]} consecutive failed trials; "
                                        f"last: {last}")[:2000]
                    bar.write(f"shlib: runtime {runtime} {skipped[runtime]}")
                    store.write_metadata(metadata)
                if on_batch is not None:
                    on_batch(batch, rows)
                bar.update(1)
    except KeyboardInterrupt as exc:
        _finish(store, metadata, "interrupted")
        raise Interrupted(f"interrupted ({exc or 'SIGINT'}); every finished batch is saved in {out}. "
                          f"Complete the run with: shlib run --resume --out {out}") from None
    except EngineUnavailable as exc:
        _finish(store, metadata, "engine_failed")
        raise EngineUnavailable(f"{exc}. Every finished batch is saved in {out}; once the engine is back "
                                f"(scripts/setup-host.sh), complete the run with: shlib run --resume --out {out}") \
            from None
    finally:
        bar.close()
    _finish(store, metadata, "complete", consolidate=True)
    return out


def _finish(store: ResultsStore, metadata: RunMetadata, status: RunStatus, consolidate: bool = False) -> None:
    frame = store.consolidate() if consolidate else load_frame(store.run_dir)
    metadata.status, metadata.finished_at = status, datetime.now(UTC).isoformat()
    metadata.counts, metadata.n_rows = _counts(frame), len(frame)
    store.write_metadata(metadata)


def _done_batches(run_dir: Path) -> set[int]:
    """Batches of an earlier attempt that need not run again (every status but skipped)."""
    previous = load_frame(run_dir)
    return set(previous.loc[previous["status"].isin(DONE_STATUSES), "batch_id"].astype(int))
