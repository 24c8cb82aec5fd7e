"""The container's cgroup on this host: its CPU time and peak memory, read from the cgroup files.

Under gVisor the sandbox's sentry and gofer run in the container's cgroup beside the app, so the
cgroup sees the sandbox's own cost, which the probe process cannot see from inside. Found by the
container's id (every Docker cgroup driver puts the id in the directory name), so a container of a
remote engine, whose cgroup is not on this host, is simply not found: the reader is then None and
the columns stay null.

    cgroup v1 (cgroupfs driver)   <root>/cpuacct/docker/<id>/cpuacct.usage             (ns)
                                  <root>/memory/docker/<id>/memory.max_usage_in_bytes
    cgroup v1 (systemd driver)    <root>/cpuacct/system.slice/docker-<id>.scope/...
    cgroup v2                     <root>/docker/<id>/cpu.stat usage_usec, memory.peak
                                  (or <root>/system.slice/docker-<id>.scope/)

``memory.peak`` exists from Linux 5.19 on; without it the peak is unknown (None), never guessed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

ROOT = Path("/sys/fs/cgroup")
#: v1 hierarchies that carry CPU accounting (mounted alone or together, as distributions do).
_CPU_V1 = ("cpuacct", "cpu,cpuacct", "cpuacct,cpu")
#: Directories under a hierarchy where engines put a container's cgroup (cgroupfs, then systemd driver).
_PARENTS = ("docker/{id}", "system.slice/docker-{id}.scope", "libpod_parent/libpod-{id}",
            "machine.slice/libpod-{id}.scope")


@dataclass(frozen=True)
class Cgroup:
    """Where one container's accounting files are. ``version``: 1 or 2."""

    version: int
    cpu_dir: Path | None
    memory_dir: Path | None

    def cpu_ns(self) -> int | None:
        """CPU time (user + system) of every process the cgroup has held, in ns; None if unreadable."""
        if self.cpu_dir is None:
            return None
        try:
            if self.version == 1:
                return int((self.cpu_dir / "cpuacct.usage").read_text().split()[0])
            for line in (self.cpu_dir / "cpu.stat").read_text().splitlines():
                key, _, value = line.partition(" ")
                if key == "usage_usec":
                    return int(value) * 1000
        except (OSError, ValueError, IndexError):
            return None
        return None

    def memory_peak_bytes(self) -> int | None:
        """The cgroup's peak memory use in bytes since it was made; None where the kernel keeps no peak."""
        if self.memory_dir is None:
            return None
        name = "memory.max_usage_in_bytes" if self.version == 1 else "memory.peak"
        try:
            return int((self.memory_dir / name).read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None


def find_cgroup(container_id: str, root: Path = ROOT) -> Cgroup | None:
    """The cgroup of container ``container_id`` on this host, or None (not here: e.g. a remote engine).

    cgroup v2 is used when ``root`` is itself a cgroup2 mount (it holds ``cgroup.controllers``);
    otherwise v1's cpuacct and memory hierarchies are searched. A hybrid host (v1 controllers plus an
    empty cgroup2 under ``unified``) counts as v1, as the engine does.
    """
    if not container_id or "/" in container_id or container_id in (".", ".."):
        return None
    parents = [p.format(id=container_id) for p in _PARENTS]
    if (root / "cgroup.controllers").exists():
        for parent in parents:
            path = root / parent
            if (path / "cpu.stat").exists():
                return Cgroup(2, path, path if (path / "memory.current").exists() else None)
        return None
    cpu = _first_dir(root, _CPU_V1, parents, "cpuacct.usage")
    memory = _first_dir(root, ("memory",), parents, "memory.usage_in_bytes")
    if cpu is None and memory is None:
        return None
    return Cgroup(1, cpu, memory)


def _first_dir(root: Path, hierarchies: tuple[str, ...], parents: list[str], marker: str) -> Path | None:
    for hierarchy in hierarchies:
        for parent in parents:
            path = root / hierarchy / parent
            if (path / marker).exists():
                return path
    return None


def cpu_ms_between(before_ns: int | None, after_ns: int | None) -> float | None:
    """CPU ms between two readings of ``Cgroup.cpu_ns``; None unless both exist and run forward."""
    if before_ns is None or after_ns is None or after_ns < before_ns:
        return None
    return (after_ns - before_ns) / 1e6


def cgroup_layout(root: Path = ROOT) -> dict[str, object]:
    """This host's cgroup layout for the run's metadata: the version and whether the kernel keeps a peak."""
    if (root / "cgroup.controllers").exists():
        peak = any(root.glob("*/memory.peak")) or (root / "memory.peak").exists()
        return {"version": 2, "memory_peak": "memory.peak" if peak else None,
                "note": None if peak else "this kernel has no memory.peak (Linux < 5.19): mem_peak_mb is null"}
    return {"version": 1, "memory_peak": "memory.max_usage_in_bytes" if (root / "memory").is_dir() else None,
            "note": None}
