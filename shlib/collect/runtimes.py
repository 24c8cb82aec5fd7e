"""The runtime catalog: every runtime shlib knows, and whether this host can run it.

``native`` runs the probe straight on the host (the floor); the others are OCI runtimes
registered with the Docker engine. gVisor builds are smoke-tested with a bounded
``runsc do /bin/true`` because some platforms (kvm on some hosts) hang forever.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import docker

from shlib.collect.cache import add_to_cache, cache_file, read_cache
from shlib.errors import RuntimeUnavailable, SpecError
from shlib.results.schema import runtime_kind

if TYPE_CHECKING:
    from shlib.spec.spec import Spec

KATA_NAMES = ("io.containerd.kata.v2", "kata-runtime")
KATA_HINT = (
    "install Kata Containers (release tarball or kata-deploy; it needs /dev/kvm), then register it: "
    "Kata 2.x/3.x as runtime 'io.containerd.kata.v2' (Docker >= 22.06 finds containerd-shim-kata-v2 on PATH), "
    "Kata 1.x as 'kata-runtime' in /etc/docker/daemon.json; then run 'shlib doctor' again"
)
GVISOR_HINT = "install runsc (apt-get install runsc, or gVisor's release channel) and run scripts/setup-host.sh"
HANG_HINT = ("this gVisor platform does not start a sandbox on this host (runsc's kvm platform spins under "
             "nested virtualisation); measure the ptrace or systrap entries instead")
SMOKE_TIMEOUT_S = 10.0



@dataclass
class Runtime:
    """One runtime of the catalog, as found on this host."""

    name: str
    kind: str  # native | runc | crun | gvisor | kata | other
    available: bool
    reason: str = ""
    path: str | None = None
    args: list[str] = field(default_factory=list)
    version: str | None = None
    platform: str | None = None
    hint: str = ""

    @property
    def engine_name(self) -> str | None:
        """The name to pass to the engine (``runtime=``); None for native."""
        return None if self.kind == "native" else self.name

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


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
        out = subprocess.run([found, "--version"], capture_output=True, text=True, timeout=15)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (out.stdout or out.stderr).strip()
    version = text.splitlines()[0] if text else None
    add_to_cache(cache, key, version)
    return version


def smoke_runsc(path: str, args: list[str], timeout_s: float = SMOKE_TIMEOUT_S, recheck: bool = False) -> str:
    """'' when ``runsc <args> do /bin/true`` succeeds in time, else why not. Results are cached."""
    try:
        key = f"{path}|{os.stat(path).st_mtime_ns}|{' '.join(args)}"
    except OSError as exc:
        return f"binary {path} missing ({exc.strerror})"
    cache = cache_file("runtime-smoke.json")
    known = read_cache(cache)
    if isinstance(known.get(key), str) and not recheck:
        return known[key]
    if os.geteuid() != 0:
        return ""  # 'runsc do' needs root; the engine will tell at run time
    cmd = [path, *args, "do", "/bin/true"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _, err = proc.communicate(timeout=timeout_s)
        reason = "" if proc.returncode == 0 else f"smoke test failed (exit {proc.returncode}): {err.strip()[-300:]}"
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        reason = f"hangs: 'runsc {' '.join(args)} do /bin/true' did not finish in {timeout_s:.0f} s (killed)"
    add_to_cache(cache, key, reason)
    return reason


def _crun_problem() -> str:
    """Why crun cannot start containers on this host's cgroup layout ('' when it can)."""
    controllers = Path("/sys/fs/cgroup/unified/cgroup.controllers")
    if controllers.exists() and controllers.read_text().split():
        return ("cgroup v1 controllers plus a non-empty cgroup2 hierarchy at /sys/fs/cgroup/unified "
                "(crun refuses 'hybrid mode'); scripts/setup-host.sh fixes this")
    return ""


def catalog(client: docker.DockerClient | None, recheck: bool = False) -> dict[str, Runtime]:
    """Every known runtime by name: native, the engine's registered ones, and Kata."""
    runtimes: dict[str, Runtime] = {}
    node = shutil.which("node")
    runtimes["native"] = Runtime(
        name="native", kind="native", available=node is not None, path=node,
        reason="" if node else "no node on PATH", version=binary_version(node),
        hint="" if node else "install Node.js on the host",
    )
    registered: dict[str, Any] = {}
    engine_reason = "the Docker engine is not reachable"
    runc_version = None
    if client is not None:
        info = client.info()
        registered = info.get("Runtimes", {})
        runc_version = (client.version().get("Components") or [{}])
        runc_version = next((c.get("Version") for c in runc_version if c.get("Name") == "runc"), None)
    for name in sorted(registered):
        if name.startswith("io.containerd.run") and name not in KATA_NAMES:
            continue  # containerd's shim aliases for runc
        spec = registered[name] or {}
        path = spec.get("path") or name
        args = list(spec.get("runtimeArgs") or [])
        kind = runtime_kind(name, path)
        reason, version, platform = "", None, None
        if kind == "gvisor":
            version = binary_version(path)
            platform = next((a.split("=", 1)[1] for a in args if a.startswith("--platform=")), "default")
            reason = smoke_runsc(path, args, recheck=recheck)
        elif kind == "runc":
            version = runc_version
        elif kind == "crun":
            version = binary_version(path)
            reason = _crun_problem()
        else:
            version = binary_version(path)
        runtimes[name] = Runtime(name=name, kind=kind, available=not reason, reason=reason, path=path,
                                 args=args, version=version, platform=platform,
                                 hint=(HANG_HINT if reason.startswith("hangs") else GVISOR_HINT)
                                 if (kind == "gvisor" and reason) else "")
    for name in KATA_NAMES:
        if name not in runtimes:
            shim = shutil.which("containerd-shim-kata-v2") if name == KATA_NAMES[0] else shutil.which("kata-runtime")
            why = "not registered with the Docker engine" if client is not None else engine_reason
            if shim:
                why += f" (found {shim}; register it in /etc/docker/daemon.json)"
            elif not os.path.exists("/dev/kvm"):
                why += "; no /dev/kvm for its VMs"
            runtimes[name] = Runtime(name=name, kind="kata", available=False, reason=why, path=shim, hint=KATA_HINT)
    if client is None:
        for name in ("runc", "crun"):
            runtimes.setdefault(name, Runtime(name=name, kind=name, available=False, reason=engine_reason,
                                              hint="run scripts/setup-host.sh as root"))
    return runtimes


def version_date(version: str | None) -> str | None:
    """The build date in a runsc version string, ``20240729``."""
    match = re.search(r"(\d{8})", version or "")
    return match.group(1) if match else None


def select_runtimes(spec: Spec, known: dict[str, Runtime]) -> list[str]:
    """The spec's runtimes, checked against the catalog ('all' = every available one)."""
    if spec.runtimes == "all":
        return [name for name, rt in known.items() if rt.available]
    unknown = [name for name in spec.runtimes if name not in known]
    if unknown:
        raise SpecError(f"runtimes: unknown runtime(s) {', '.join(map(repr, unknown))}; "
                        f"known here: {', '.join(known)} (see 'shlib doctor')")
    missing = [f"{name} ({known[name].reason})" for name in spec.runtimes if not known[name].available]
    if missing:
        raise RuntimeUnavailable(f"runtimes: not available on this host: {'; '.join(missing)}. "
                                 "Remove them from the spec or install them (see 'shlib doctor').")
    return list(spec.runtimes)
