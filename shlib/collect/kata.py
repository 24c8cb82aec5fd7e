"""Kata Containers variants by shared file system and virtio-fs cache mode: one configuration file each.

Kata's trade-off for a shared library volume mirrors gVisor's file-access switches: how the guest
reaches host files (``shared_fs``: virtio-fs, the 2.x+ default, or virtio-9p, the 1.x default) and how
much of it the guest may cache (``virtio_fs_cache``: never, metadata, auto (default), always). Each
variant is a copy of the host's Kata configuration.toml with those two keys set, registered with Docker
as a runtime of its own that points at its file:

- Kata 2.x/3.x (Docker >= 23): ``{"runtimeType": "io.containerd.kata.v2", "options": {"ConfigPath": F}}``
  (containerd hands ``ConfigPath`` to the shim as runtime options);
- Kata 1.x: ``{"path": "kata-runtime", "runtimeArgs": ["--kata-config", F]}``.

Pure functions over text plus one writer; standard library only (``scripts/setup-host.sh`` runs it
through ``shlib.collect.daemon_json`` before shlib's dependencies exist). See docs/kata.md.
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

SHARED_FS = ("virtio-fs", "virtio-9p")
VIRTIO_FS_CACHE = ("never", "metadata", "auto", "always")
#: Where Kata's packages and release tarballs put the configuration (the /etc one overrides the others).
BASE_CONFIGS = (
    "/etc/kata-containers/configuration.toml",
    "/opt/kata/share/defaults/kata-containers/configuration.toml",
    "/usr/share/defaults/kata-containers/configuration.toml",
)
#: Hypervisors whose Kata driver offers virtio-9p (the others share files through virtio-fs only).
NINEP_HYPERVISORS = ("qemu",)


@dataclass(frozen=True)
class KataVariant:
    """One Kata variant: how the guest reaches the host's files and, for virtio-fs, its cache mode."""

    shared_fs: str
    virtio_fs_cache: str | None = None

    def __post_init__(self) -> None:
        if self.shared_fs not in SHARED_FS:
            raise ValueError(f"shared_fs {self.shared_fs!r}: choose one of {', '.join(SHARED_FS)}")
        if self.shared_fs == "virtio-fs" and self.virtio_fs_cache not in VIRTIO_FS_CACHE:
            raise ValueError(f"virtio_fs_cache {self.virtio_fs_cache!r}: choose one of {', '.join(VIRTIO_FS_CACHE)}")
        if self.shared_fs == "virtio-9p" and self.virtio_fs_cache is not None:
            raise ValueError("virtio_fs_cache applies to virtio-fs only")

    @property
    def name(self) -> str:
        """Runtime name: ``kata-virtiofs-auto``, ``kata-9p``."""
        if self.shared_fs == "virtio-9p":
            return "kata-9p"
        return f"kata-virtiofs-{self.virtio_fs_cache}"

    @property
    def keys(self) -> dict[str, str]:
        """The configuration keys this variant sets in the hypervisor section."""
        keys = {"shared_fs": self.shared_fs}
        if self.virtio_fs_cache is not None:
            keys["virtio_fs_cache"] = self.virtio_fs_cache
        return keys


def kata_variants(hypervisor: str = "qemu") -> list[KataVariant]:
    """The variants worth measuring with ``hypervisor``: virtio-fs in each cache mode, and virtio-9p where offered."""
    variants = [KataVariant("virtio-fs", cache) for cache in VIRTIO_FS_CACHE]
    if hypervisor in NINEP_HYPERVISORS:
        variants.append(KataVariant("virtio-9p"))
    return variants


_SECTION = re.compile(r"^\s*\[([^\[\]]+)\]\s*(#.*)?$")


def hypervisor_of(text: str) -> str:
    """The hypervisor a configuration uses: the name of its first ``[hypervisor.NAME]`` section."""
    for line in text.splitlines():
        match = _SECTION.match(line)
        if match and match.group(1).strip().startswith("hypervisor."):
            return match.group(1).strip().split(".", 1)[1]
    raise ValueError("not a Kata configuration: no [hypervisor.*] section")


def set_keys(text: str, section: str, values: dict[str, str]) -> str:
    """``text`` with ``key = "value"`` for each of ``values`` in ``[section]``, everything else kept as written.

    An active ``key = ...`` line of the section is replaced in place; a key the section lacks (or has only
    commented out) is added right after the section's header.
    """
    lines = text.splitlines(keepends=True)
    start = end = None
    for i, line in enumerate(lines):
        match = _SECTION.match(line)
        if match and start is None and match.group(1).strip() == section:
            start = i
        elif match and start is not None:
            end = i
            break
    if start is None:
        raise ValueError(f"no [{section}] section in the configuration")
    end = len(lines) if end is None else end
    missing = dict(values)
    for i in range(start + 1, end):
        key = re.match(r"^(\s*)([A-Za-z0-9_]+)\s*=", lines[i])
        if key and key.group(2) in missing:
            newline = "\n" if lines[i].endswith("\n") else ""
            lines[i] = f'{key.group(1)}{key.group(2)} = "{missing.pop(key.group(2))}"{newline}'
    added = [f'{key} = "{value}"  # set by shlib\n' for key, value in missing.items()]
    if added and not lines[start].endswith("\n"):
        lines[start] += "\n"
    return "".join(lines[: start + 1] + added + lines[start + 1:])


def variant_config(base_text: str, variant: KataVariant) -> str:
    """The configuration.toml of ``variant``: the base configuration with its hypervisor's keys set (checked)."""
    hypervisor = hypervisor_of(base_text)
    if variant.shared_fs == "virtio-9p" and hypervisor not in NINEP_HYPERVISORS:
        raise ValueError(f"hypervisor {hypervisor} offers no virtio-9p (only {', '.join(NINEP_HYPERVISORS)})")
    section = f"hypervisor.{hypervisor}"
    text = set_keys(base_text, section, variant.keys)
    parsed = tomllib.loads(text)["hypervisor"][hypervisor]
    wrong = {k: parsed.get(k) for k, v in variant.keys.items() if parsed.get(k) != v}
    if wrong:
        raise ValueError(f"the generated configuration does not hold {variant.keys} (got {wrong})")
    return text


def runtime_entry(config_path: str, kata_major: int = 3) -> dict[str, Any]:
    """The daemon.json ``runtimes`` entry of a variant whose configuration is at ``config_path``."""
    if kata_major >= 2:
        return {"runtimeType": "io.containerd.kata.v2", "options": {"ConfigPath": config_path}}
    return {"path": "kata-runtime", "runtimeArgs": ["--kata-config", config_path]}


def find_base_config(candidates: tuple[str, ...] = BASE_CONFIGS) -> Path | None:
    """The host's Kata configuration (the first of ``candidates`` that exists), None without Kata."""
    return next((Path(c) for c in candidates if Path(c).is_file()), None)


def write_variant_configs(base: Path, out_dir: Path, kata_major: int = 3) -> dict[str, dict[str, Any]]:
    """Write one configuration per variant to ``out_dir`` (atomically) and return their daemon.json entries."""
    text = base.read_text()
    out_dir.mkdir(parents=True, exist_ok=True)
    entries = {}
    for variant in kata_variants(hypervisor_of(text)):
        path = out_dir / f"configuration-{variant.name.removeprefix('kata-')}.toml"
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(f"# shlib: {variant.name}, generated from {base}\n" + variant_config(text, variant))
        os.replace(tmp, path)
        entries[variant.name] = runtime_entry(str(path), kata_major)
    return entries
