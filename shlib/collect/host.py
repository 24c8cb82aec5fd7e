"""Facts about the host, for provenance: kernel, CPU, memory, cgroups."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
from pathlib import Path
from typing import Any

from shlib.collect.cache import add_to_cache, cache_file, read_cache


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


def binary_version(path: str | None) -> str | None:
    """First line of ``<path> --version``, None when it cannot run; cached per binary (path, mtime, size)."""
    found = shutil.which(path) if path else None
    if not found:
        return None
    try:
        stat = os.stat(found)
    except OSError:
        return None
    key = f"{found}|{stat.st_mtime_ns}|{stat.st_size}"
    cache = cache_file("binary-versions.json")
    known = read_cache(cache)
    if key in known and (known[key] is None or isinstance(known[key], str)):
        return known[key]
    try:
        out = subprocess.run([found, "--version"], capture_output=True, text=True, timeout=5)
    except subprocess.TimeoutExpired:  # a binary that hangs: cached, so that it costs the wait once
        add_to_cache(cache, key, None)
        return None
    except OSError:
        return None
    text = (out.stdout or out.stderr).strip()
    version = text.splitlines()[0] if text else None
    add_to_cache(cache, key, version)
    return version


def node_version(node: str = "node") -> str | None:
    """Version of the host's Node.js (``v20.20.2``), None when absent (the catalog has asked it already)."""
    return binary_version(node)


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


def host_root() -> Path:
    """Where /dev, /sys and /proc are looked up for the virtualisation facts: $SHLIB_HOST_ROOT (tests), else /."""
    return Path(os.environ.get("SHLIB_HOST_ROOT") or "/")


PVM_PROBLEM = (
    "/dev/kvm here is paravirtual (PVM: module kvm_pvm loaded, no vmx/svm flag in /proc/cpuinfo): this machine is "
    "itself a VM whose kernel offers KVM without hardware virtualisation. KVM_CREATE_VM works, but a guest only runs "
    "with a PVM-aware guest kernel, which Kata Containers' guest kernels (for QEMU, Cloud Hypervisor or Firecracker) "
    "are not: Kata cannot run on this host, and runsc's kvm platform spins for the same reason (use systrap or "
    "ptrace). Kata needs a host with VT-x/AMD-V (bare metal, or a VM with nested virtualisation)."
)


def kvm_facts(root: Path | None = None) -> dict[str, Any]:
    """What /dev/kvm is on this host, and why VM-based sandboxes cannot use it (``problem``, '' when they can).

    ``kind``: ``none`` (no /dev/kvm), ``pvm`` (paravirtual KVM: /sys/module/kvm_pvm, no vmx/svm in cpuid),
    ``hardware`` (vmx or svm) or ``unknown``. ``root`` replaces / (a fake sysfs and cpuinfo for tests).
    """
    root = root or host_root()
    dev = (root / "dev" / "kvm").exists()
    pvm = (root / "sys" / "module" / "kvm_pvm").is_dir()
    flags: set[str] = set()
    try:
        for line in (root / "proc" / "cpuinfo").read_text().splitlines():
            if line.startswith("flags"):
                flags |= set(line.split(":", 1)[1].split())
    except OSError:
        pass
    hw = sorted({"vmx", "svm"} & flags)
    if not dev:
        kind, problem = "none", ("no /dev/kvm: Kata Containers and runsc's kvm platform need KVM "
                                 "(load kvm_intel/kvm_amd, or enable nested virtualisation)")
        summary = "no /dev/kvm for its VMs"
    elif pvm and not hw:
        kind, problem = "pvm", PVM_PROBLEM
        summary = ("cannot run on this host: /dev/kvm is paravirtual (PVM, no VT-x/AMD-V); a guest needs a "
                   "PVM-aware kernel (see 'virtualisation' in shlib doctor)")
    else:
        kind, problem, summary = ("hardware" if hw else "unknown"), "", ""
    return {"dev_kvm": dev, "kvm_pvm_module": pvm, "hw_virt_flags": hw, "hypervisor_flag": "hypervisor" in flags,
            "kind": kind, "problem": problem, "summary": summary}


#: Run by Node in a container of the probe image on a remote engine: the facts ``host_facts`` reads here.
_FACTS_JS = r"""
const fs = require('fs'), os = require('os');
const read = (p) => { try { return fs.readFileSync(p, 'utf8'); } catch (e) { return ''; } };
const model = (read('/proc/cpuinfo').match(/^model name\s*:\s*(.*)$/m) || [])[1] || null;
const mem = (read('/proc/meminfo').match(/^MemTotal:\s*(\d+)/m) || [])[1];
const layout = fs.existsSync('/sys/fs/cgroup/cgroup.controllers') ? 'v2'
  : fs.existsSync('/sys/fs/cgroup/unified') ? 'hybrid' : 'v1';
const flags = ((read('/proc/cpuinfo').match(/^flags\s*:\s*(.*)$/m) || [])[1] || '').split(' ');
console.log(JSON.stringify({cpu_model: model, cpu_count: os.cpus().length, mem_total_bytes: mem ? mem * 1024 : null,
  kernel: os.release(), cgroup_layout: layout, hw_virt_flags: flags.filter(f => f === 'vmx' || f === 'svm'),
  dev_kvm: fs.existsSync('/dev/kvm')}));
"""


def engine_host_facts(client: Any, image: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Facts of the engine's host, for an engine on another machine (this machine's /proc is not its host's).

    From the engine's info (name, kernel, OS, cores, memory) and one small container of ``image``
    under the engine's default runtime (CPU model, cgroup layout, what /proc and /sys show there).
    ``extra``: more ``containers.run`` arguments (an engine's quirks). A failed container leaves
    the info's facts and says why in ``facts_error``.
    """
    import json

    info = client.info()
    facts: dict[str, Any] = {
        "hostname": info.get("Name"), "kernel": info.get("KernelVersion"), "os": info.get("OperatingSystem"),
        "cpu_model": None, "cpu_count": info.get("NCPU"), "mem_total_bytes": info.get("MemTotal"),
        "cgroup_layout": {"1": "v1", "2": "v2"}.get(str(info.get("CgroupVersion")), None),
        "kvm": None, "python": None, "host_node": None, "source": "engine",
    }
    try:
        out = client.containers.run(image, ["node", "-e", _FACTS_JS], remove=True, network_mode="none",
                                    labels={"shlib.managed": "true", "shlib.facts": "true"}, **(extra or {}))
        seen = json.loads(out.decode().strip().splitlines()[-1])
    except Exception as exc:  # the facts are provenance: a failure is recorded, never fatal
        facts["facts_error"] = f"the fact-finding container failed: {exc}"[:500]
        return facts
    facts["cpu_model"] = seen.get("cpu_model")
    facts["cgroup_layout"] = facts["cgroup_layout"] or seen.get("cgroup_layout")  # the engine knows best
    facts["kvm"] = bool(seen.get("dev_kvm"))
    facts["container_view"] = seen
    return facts
