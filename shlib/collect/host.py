"""Facts about the host, for provenance: kernel, CPU, memory, cgroups."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from pathlib import Path
from typing import Any


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo (or the platform's guess)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cgroup_version() -> str:
    """'v2' on a unified hierarchy, 'v1' (or 'hybrid') otherwise."""
    if Path("/sys/fs/cgroup/cgroup.controllers").exists():
        return "v2"
    if Path("/sys/fs/cgroup/unified").exists():
        return "hybrid"
    return "v1"


def node_version(node: str = "node") -> str | None:
    """Version of the host's Node.js (``v20.20.2``), None when absent."""
    path = shutil.which(node)
    if not path:
        return None
    out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30)
    return out.stdout.strip() or None


def host_facts() -> dict[str, Any]:
    """Kernel, CPU, cores, memory, cgroup layout, Python and Node versions."""
    mem_kb = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                mem_kb = int(line.split()[1])
    except OSError:
        pass
    return {
        "hostname": platform.node(),
        "kernel": platform.release(),
        "os": platform.platform(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "mem_total_bytes": mem_kb * 1024 if mem_kb else None,
        "cgroup_layout": cgroup_version(),
        "kvm": os.path.exists("/dev/kvm"),
        "python": platform.python_version(),
        "host_node": node_version(),
    }
