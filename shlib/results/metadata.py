"""A run's provenance, typed: what ``metadata.json`` holds, its version, and the migrations of older files.

Collection builds one ``RunMetadata`` and rewrites it as the run goes on; analysis and the report read
it. Every key has one definition here. A file written by an older shlib is migrated on read, one
version at a time (``MIGRATIONS``), never refused; a file from a newer shlib is refused with the
versions named.

Versions of the results directory (metadata.json + the row schema of ``shlib.results.schema``):

    1  first release.
    2  ``runtime_set``: the runtimes the plan was made for, in plan order (a resume re-plans from it,
       not from today's catalog, so batch ids keep pointing at the same cells). Rows: a native
       trial's ``created_at``/``started_at`` are its process spawn (v1: ``started_at`` was the go
       time); ``wall_ms`` no longer includes waiting for a worker thread above 16 containers.
    3  ``engine`` names the engine (``label``, ``kind``: docker | podman, ``id``, ``name``, ``version``).
       Rows: ``language`` and ``interpreter_version`` (Python beside Node), ``engine``,
       ``engine_kind``, ``engine_host``, the trial's timeline (``create_ms``, ``start_ms``,
       ``teardown_ms``, ``clock_offset_ms``) and the sandbox's resources (``cpu_ms``,
       ``proc_cpu_ms``, ``mem_peak_mb``). Rows of older runs read with ``language`` "node",
       ``interpreter_version`` = ``node_version`` and the engine of their metadata (label "default").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shlib.errors import ResultsError
from shlib.results.schema import SCHEMA_VERSION

RunStatus = Literal["running", "complete", "interrupted", "engine_failed"]


class _Record(BaseModel):
    """A nested record: typed where shlib reads it, other keys kept as they are."""

    model_config = ConfigDict(extra="allow")


class HostFacts(_Record):
    """The machine the probes ran on (``shlib.collect.host.host_facts``)."""

    hostname: str | None = None
    kernel: str | None = None
    cpu_model: str | None = None
    cpu_count: int | None = None
    mem_total_bytes: int | None = None
    cgroup_layout: str | None = None
    host_node: str | None = None


class RuntimeRecord(_Record):
    """One runtime of the catalog as it was when the run started (``shlib.collect.runtimes.Runtime``)."""

    name: str
    kind: str
    available: bool = True
    reason: str = ""
    path: str | None = None
    args: list[str] = Field(default_factory=list)
    version: str | None = None
    platform: str | None = None


class ImageRecord(_Record):
    """A probe image: tag, engine image id, Node version, where Node came from."""

    tag: str
    image_id: str
    node_version: str | None = None
    source: str | None = None


class LibraryRecord(_Record):
    """The shared library: where it was installed, each module's closure, the tree hash."""

    path: str | None = None
    modules: list[dict[str, Any]] = Field(default_factory=list)
    tree_hash: str | None = None
    files: int | None = None
    bytes: int | None = None
    #: Each module's syscall profile on the host (shlib.collect.syscalls); None without strace.
    syscall_profile: dict[str, Any] | None = None


class RunMetadata(BaseModel):
    """Everything needed to know what a run measured and to resume it."""

    model_config = ConfigDict(extra="forbid")

    schema_version: int = SCHEMA_VERSION
    run_id: str
    shlib_version: str | None = None
    status: RunStatus = "complete"
    spec: dict[str, Any] = Field(default_factory=dict)
    seed: int | None = None
    runtime_set: list[str] = Field(default_factory=list)
    started_at: str | None = None
    finished_at: str | None = None
    resumed_at: list[str] = Field(default_factory=list)
    hostname: str | None = None
    host: HostFacts = Field(default_factory=HostFacts)
    engine: dict[str, Any] | None = None
    runtimes: dict[str, RuntimeRecord] = Field(default_factory=dict)
    runtimes_unavailable: dict[str, str] = Field(default_factory=dict)
    skipped_runtimes: dict[str, str] = Field(default_factory=dict)
    images: dict[str, ImageRecord] = Field(default_factory=dict)
    library_images: dict[str, str] = Field(default_factory=dict)
    volume: str | None = None
    library: LibraryRecord = Field(default_factory=LibraryRecord)
    harness: dict[str, Any] = Field(default_factory=dict)
    counts: dict[str, int] = Field(default_factory=dict)
    n_rows: int | None = None
    simulated: bool = False

    def as_dict(self) -> dict[str, Any]:
        """The JSON form written to metadata.json."""
        return self.model_dump(mode="json")

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "metadata") -> RunMetadata:
        """Migrate ``data`` to this version and validate it; ResultsError naming the field otherwise."""
        data = migrate(data, where)
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'metadata'}: {e['msg']}" for e in exc.errors())
            raise ResultsError(f"{where} is not valid run metadata: {problems}") from None


def _v1_to_v2(data: dict[str, Any]) -> dict[str, Any]:
    """v1 recorded the chosen runtimes only as the keys of ``runtimes`` (in plan order)."""
    runtimes = data.get("runtimes") or {}
    for name, record in runtimes.items():
        if isinstance(record, dict):
            record.setdefault("name", name)
    return {**data, "runtime_set": list(runtimes), "schema_version": 2}


#: The label of the engine a run uses when none is named (DOCKER_HOST or the local socket); runs made
#: before v3 ran on one engine and carry it too.
DEFAULT_ENGINE_LABEL = "default"


def _v2_to_v3(data: dict[str, Any]) -> dict[str, Any]:
    """v2 ran on the local Docker engine and recorded only its facts."""
    engine = data.get("engine")
    if isinstance(engine, dict):
        engine = {"label": DEFAULT_ENGINE_LABEL, "kind": "docker", **engine}
    return {**data, "engine": engine, "schema_version": 3}


#: version -> function turning a metadata dict of that version into the next version's.
MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {1: _v1_to_v2, 2: _v2_to_v3}


def migrate(data: dict[str, Any], where: str = "metadata") -> dict[str, Any]:
    """``data`` brought up to SCHEMA_VERSION, one migration at a time."""
    if not isinstance(data, dict):
        raise ResultsError(f"{where} is not a JSON object")
    version = data.get("schema_version", 1)
    if not isinstance(version, int) or version < 1:
        raise ResultsError(f"{where} has schema_version {version!r}: expected a whole number from 1 to "
                           f"{SCHEMA_VERSION}")
    if version > SCHEMA_VERSION:
        raise ResultsError(f"{where} has schema_version {version}, written by a newer shlib; this shlib reads "
                           f"versions 1 to {SCHEMA_VERSION}: upgrade shlib to read it")
    while version < SCHEMA_VERSION:
        data = MIGRATIONS[version](dict(data))
        version = data["schema_version"]
    return data
