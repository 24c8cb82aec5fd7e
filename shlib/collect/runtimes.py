"""The runtime catalog: every runtime shlib knows, and whether this host can run it.

``native`` runs the probe straight on the host (the floor); the others are OCI runtimes
registered with the Docker engine. A runtime counts as available only once it passed a
bounded smoke test: ``node -e 0`` for native; for every engine runtime (runc, crun, runsc,
anything registered) a trivial container created, started and waited on with a deadline,
locked down like a probe. Some runtimes hang forever (runsc's kvm platform on hosts without
hardware virtualisation, a broken shim): they are reported with the reason and left out of
``all``. Results are cached per binary (path, mtime, size, version) and flags, so a run's
start-up costs no container once a runtime was checked; ``shlib doctor --refresh`` checks again.
"""

from __future__ import annotations

import os
import platform as _platform
import re
import shutil
import struct
import subprocess
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import docker
import docker.errors
import requests.exceptions

from shlib.collect.cache import add_to_cache, cache_file, read_cache
from shlib.collect.docker_batch import reap_runtime
from shlib.collect.engine import (
    LABEL,
    client_for_runtime,
    client_is_local,
    client_kind,
    container_quirks,
    engine_id,
    podman_runtime_sockets,
    target_of,
)
from shlib.collect.host import binary_version, kvm_facts
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
#: Deadline of one smoke test (create + start + wait). A sandbox starts in about a second here.
SMOKE_TIMEOUT_S = 15.0
#: Bumped when the smoke test changes, so older cached verdicts are not read.
SMOKE_METHOD = "container-v1"
SMOKE_IMAGE = "shlib-smoke:exit0"

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
    smoke_checked_at: str | None = None  # when the smoke verdict (cached until --refresh) was established
    runtime_type: str | None = None  # a shim runtime's type (daemon.json runtimeType), e.g. io.containerd.kata.v2
    options: dict[str, Any] = field(default_factory=dict)  # its options, e.g. Kata's ConfigPath

    @property
    def setting_variant(self) -> bool:
        """A gVisor runtime with a file-system switch beyond its build's defaults (``-nodirectfs``,
        ``-exclusive``, ...): measured when named or with the gvisor-settings preset, not by ``all``."""
        base = ("--network=", "--platform=")
        return self.kind == "gvisor" and any(not a.startswith(base) for a in self.args)

    @property
    def engine_name(self) -> str | None:
        """The name to pass to the engine (``runtime=``); None for native."""
        return None if self.kind == "native" else self.name

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _file_id(path: str | None) -> str:
    """``path|mtime|size`` of a binary (resolved on PATH), or just the name when it is not on this host."""
    found = shutil.which(path) if path else None
    if not found:
        return str(path)
    try:
        stat = os.stat(found)
    except OSError:
        return found
    return f"{found}|{stat.st_mtime_ns}|{stat.st_size}"


def smoke_key(kind: str, path: str | None, args: list[str], version: str | None, engine: str = "") -> str:
    """What a smoke verdict depends on: the method, the binary (path, mtime, size, version) and its flags.

    ``engine``: '' for a Docker engine on this host (its binaries are this host's files); else what
    tells the engine apart (``podman``, or a remote engine's ID), since the same name may be another
    binary there, or behave differently under another engine.
    """
    parts = [SMOKE_METHOD, kind, _file_id(path) if not engine.startswith("remote:") else str(path), version or "",
             " ".join(args)]
    return "|".join([*parts, engine] if engine else parts)


def wrapper_args(path: str | None) -> list[str]:
    """The flags a runtime wrapper script adds (``exec /path/runsc --network=none ... "$@"``, as
    scripts/setup-podman.sh writes them for Podman, whose API takes no runtime flags); [] otherwise."""
    import shlex

    try:
        if not path or os.path.getsize(path) > 4096:
            return []
        with open(path, "rb") as fh:
            text = fh.read().decode(errors="replace")
    except OSError:
        return []
    if not text.startswith("#!"):
        return []
    for line in text.splitlines():
        if line.startswith("exec "):
            words = shlex.split(line)[2:]
            return [w for w in words if w.startswith("--")]
    return []


def cached_smoke(key: str, check: Callable[[], str], refresh: bool = False) -> str:
    """The cached verdict for ``key`` ('' = passed), else ``check()``'s, cached.

    A verdict that says nothing of the runtime ('not smoke-tested: ...', e.g. no engine image) is not cached.
    """
    cache = cache_file("runtime-smoke.json")
    known = read_cache(cache).get(key)
    if not refresh and isinstance(known, dict) and isinstance(known.get("reason"), str):
        return known["reason"]
    start = time.monotonic()
    reason = check()
    if not reason.startswith("not smoke-tested"):
        add_to_cache(cache, key, {"reason": reason, "checked_at": datetime.now(UTC).isoformat(timespec="seconds"),
                                  "seconds": round(time.monotonic() - start, 3)})
    return reason


def smoke_native(node: str, timeout_s: float = SMOKE_TIMEOUT_S) -> str:
    """'' when ``node -e 0`` exits 0 within the deadline, else why not."""
    try:
        out = subprocess.run([node, "-e", "0"], capture_output=True, text=True, timeout=timeout_s)
    except subprocess.TimeoutExpired:
        return f"hangs: 'node -e 0' did not exit within {timeout_s:.0f} s"
    except OSError as exc:
        return f"fails: cannot run {node} ({exc.strerror})"
    return "" if out.returncode == 0 else f"fails: 'node -e 0' exited {out.returncode}: {out.stderr.strip()[-300:]}"


def exit0_elf() -> bytes | None:
    """A static executable that only exits 0 (x86-64 Linux, 129 bytes); None on other machines."""
    if _platform.machine() not in ("x86_64", "AMD64"):
        return None
    code = bytes.fromhex("31ff" "b83c000000" "0f05")  # xor edi, edi; mov eax, 60 (exit); syscall
    base, ehsize, phsize = 0x400000, 64, 56
    total = ehsize + phsize + len(code)
    header = b"\x7fELF" + bytes([2, 1, 1, 0]) + bytes(8) + struct.pack(
        "<HHIQQQIHHHHHH", 2, 0x3E, 1, base + ehsize + phsize, ehsize, 0, 0, ehsize, phsize, 1, 0, 0, 0)
    program = struct.pack("<IIQQQQQQ", 1, 5, 0, base, base, total, total, 0x1000)  # PT_LOAD, r-x
    return header + program + code


def smoke_image(client: docker.DockerClient) -> tuple[str, list[str]]:
    """(image, command) of the trivial smoke container: a 129-byte image that exits 0, imported once.

    Where no such executable is at hand (not x86-64), the probe image with ``node -e 0``.
    """
    import io
    import tarfile

    elf = exit0_elf()
    if elf is None:
        from shlib.collect.image import ensure_image

        return ensure_image(client, "host").tag, ["node", "-e", "0"]
    try:
        client.images.get(SMOKE_IMAGE)
    except docker.errors.ImageNotFound:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            info = tarfile.TarInfo("true")
            info.size, info.mode = len(elf), 0o755
            tar.addfile(info, io.BytesIO(elf))
        client.api.import_image_from_data(buf.getvalue(), repository=SMOKE_IMAGE,  # tag inside: Podman ignores tag=
                                          changes=[f"LABEL {LABEL}=true", 'CMD ["/true"]'])
    return SMOKE_IMAGE, ["/true"]


def smoke_container(client: docker.DockerClient, runtime: str, timeout_s: float = SMOKE_TIMEOUT_S) -> str:
    """'' when a trivial container under ``runtime`` is created, started and exits 0 within the deadline.

    Locked down like a probe (no network, uid 1000, no capabilities, read-only root). A runtime that
    does not answer in time is reaped (its processes killed) and its container removed.
    """
    try:
        image, command = smoke_image(client)
    except Exception as exc:  # the engine's trouble, not the runtime's: not cached
        return f"not smoke-tested: the smoke image could not be made ({exc})"
    try:
        api = target_of(client_for_runtime(client, runtime)).api_client(timeout_s)
    except RuntimeUnavailable as exc:
        return f"fails: {exc}"
    deadline = time.monotonic() + timeout_s
    name = f"shlib-smoke-{uuid.uuid4().hex[:12]}"
    phase, container_id = "be created", None
    try:
        container_id = api.create_container(
            image, command, name=name, labels={LABEL: "true", "shlib.smoke": runtime}, user="1000:1000",
            host_config=api.create_host_config(runtime=runtime, network_mode="none", cap_drop=["ALL"],
                                               security_opt=["no-new-privileges"], read_only=True,
                                               **container_quirks(client_kind(client))),
        )["Id"]
        phase = "start"
        api.start(container_id)
        phase = "exit"
        status = api.wait(container_id, timeout=max(1.0, deadline - time.monotonic()))
        code = status.get("StatusCode")
        if code != 0:
            logs = api.logs(container_id).decode(errors="replace").strip()[-300:]
            return f"fails: the smoke container exited {code}" + (f": {logs}" if logs else "")
        return ""
    except (requests.exceptions.ReadTimeout, requests.exceptions.ConnectionError) as exc:
        if isinstance(exc, requests.exceptions.ConnectionError) and "timed out" not in str(exc).lower():
            return f"not smoke-tested: the engine did not answer ({exc})"
        if container_id:
            reap_runtime(container_id)  # the engine holds the container until its runtime returns
        return f"hangs: did not {phase} within {timeout_s:.0f} s (killed)"
    except docker.errors.APIError as exc:
        return f"fails: could not {phase}: {(exc.explanation or str(exc)).strip()[-400:]}"
    finally:
        _remove_smoke(api, container_id or name)
        api.close()


def _remove_smoke(api: docker.APIClient, container: str) -> None:
    """Remove a smoke container; when the engine cannot (a runtime that hangs), kill the runtime first."""
    api.timeout = 30
    for _ in range(3):
        try:
            api.remove_container(container, force=True)
            return
        except docker.errors.NotFound:
            return
        except (requests.exceptions.RequestException, docker.errors.APIError):
            try:
                ident = api.inspect_container(container)["Id"]
            except (requests.exceptions.RequestException, docker.errors.APIError):
                ident = container
            reap_runtime(ident)
            time.sleep(0.5)


def _engine_key(client: docker.DockerClient, local: bool) -> str:
    """What sets this engine's smoke verdicts apart from the local Docker engine's (see ``smoke_key``)."""
    kind = client_kind(client)
    if local:
        return "" if kind == "docker" else kind
    return f"remote:{engine_id(kind, client.info(), target_of(client))}"


def engine_label(client: docker.DockerClient) -> str:
    """How the engine was named (its label and redacted URL), for messages."""
    from shlib.collect.engine import redact

    target = target_of(client)
    return f"engine {target.label!r} at {redact(target.base_url)}"


def _crun_problem() -> str:
    """Why crun cannot start containers on this host's cgroup layout ('' when it can)."""
    controllers = Path("/sys/fs/cgroup/unified/cgroup.controllers")
    if controllers.exists() and controllers.read_text().split():
        return ("cgroup v1 controllers plus a non-empty cgroup2 hierarchy at /sys/fs/cgroup/unified "
                "(crun refuses 'hybrid mode'); scripts/setup-host.sh fixes this")
    return ""


def catalog(client: docker.DockerClient | None, refresh: bool = False, timeout_s: float = SMOKE_TIMEOUT_S,
            recheck: bool | None = None) -> dict[str, Runtime]:
    """Every known runtime by name: native, the engine's registered ones, and Kata.

    Each runtime present is smoke-tested (bounded, cached per binary and flags; ``refresh`` tests again)
    and counts as available only when it passed. ``recheck`` is the old name of ``refresh``.
    """
    refresh = refresh or bool(recheck)
    runtimes: dict[str, Runtime] = {}
    # Host paths and binaries (versions, crun's cgroup layout, KVM, Kata's shim) are read only when the
    # engine runs on this machine; for a remote engine they would describe the wrong host.
    local = client is None or client_is_local(client)
    engine_key = "" if client is None else _engine_key(client, local)
    node = shutil.which("node")
    version = binary_version(node)
    if local:
        reason = (cached_smoke(smoke_key("native", node, ["-e", "0"], version), lambda: smoke_native(node, timeout_s),
                               refresh) if node else "no node on PATH")
    else:
        reason = (f"shlib does not run on the engine's host ({engine_label(client)}): native would time this "
                  "machine, not the engine's; run shlib on that host to measure native")
    runtimes["native"] = Runtime(
        name="native", kind="native", available=not reason, path=node, reason=reason, version=version,
        hint="" if node and not reason else "install Node.js on the host" if local else
        "native is measured where shlib runs beside the engine",
    )
    registered: dict[str, Any] = {}
    engine_reason = "the Docker engine is not reachable"
    runc_version = None
    if client is not None:
        info = client.info()
        registered = info.get("Runtimes", {})
        runc_version = (client.version().get("Components") or [{}])
        runc_version = next((c.get("Version") for c in runc_version if c.get("Name") == "runc"), None)
    todo: dict[str, Callable[[], str]] = {}
    keys: dict[str, str] = {}
    podman = client is not None and client_kind(client) == "podman"
    podman_sockets = podman_runtime_sockets(target_of(client)) if podman and local else {}
    unserved: dict[str, str] = {}  # Podman runtimes no service runs with: unavailable, not smoke-tested
    for name in sorted(registered):
        if name.startswith("io.containerd.run") and name not in KATA_NAMES:
            continue  # containerd's shim aliases for runc
        spec = registered[name] or {}
        path = spec.get("path") or name
        args = list(spec.get("runtimeArgs") or []) or (wrapper_args(path) if local else [])
        runtime_type, options = spec.get("runtimeType"), dict(spec.get("options") or {})
        kind = runtime_kind(name, path)
        version = (runc_version if kind == "runc" else None) or (binary_version(path) if local else None)
        platform = (next((a.split("=", 1)[1] for a in args if a.startswith("--platform=")), "default")
                    if kind == "gvisor" else None)
        runtimes[name] = Runtime(name=name, kind=kind, available=False, path=path, args=args, version=version,
                                 platform=platform, runtime_type=runtime_type, options=options)
        extra = [f"{runtime_type}", *(f"{k}={v}" for k, v in sorted(options.items()))] if runtime_type else []
        keys[name] = smoke_key(kind, path, [*args, *extra], version, engine_key)
        if podman and name != info.get("DefaultRuntime") and name not in podman_sockets:
            unserved[name] = (f"Podman's API cannot choose the runtime per container and no Podman service runs with "
                              f"{name} (scripts/setup-podman.sh starts one per runtime)")
            continue
        todo[name] = (lambda n=name: smoke_container(client, n, timeout_s))  # type: ignore[misc]
    # uncached runtimes are tried side by side: a hang costs its deadline once, not once per runtime
    with ThreadPoolExecutor(max_workers=4) as pool:
        verdicts = dict(zip(todo, pool.map(lambda n: cached_smoke(keys[n], todo[n], refresh), todo), strict=True))
    verdicts.update(unserved)
    smoke_cache = read_cache(cache_file("runtime-smoke.json"))
    native_entry = smoke_cache.get(smoke_key("native", node, ["-e", "0"], runtimes["native"].version)) if node else None
    runtimes["native"].smoke_checked_at = native_entry.get("checked_at") if isinstance(native_entry, dict) else None
    for name, reason in verdicts.items():
        rt = runtimes[name]
        entry = smoke_cache.get(keys[name])
        rt.smoke_checked_at = entry.get("checked_at") if isinstance(entry, dict) else None
        if rt.kind == "crun" and reason and local and _crun_problem():
            reason += f"; likely cause: {_crun_problem()}"
        rt.available, rt.reason = not reason, reason
        if reason and rt.kind == "gvisor":
            rt.hint = HANG_HINT if reason.startswith("hangs") else GVISOR_HINT
        elif reason:
            rt.hint = ("the runtime did not pass a trivial container; check it by hand: docker run --rm "
                       f"--runtime={name} --network=none {SMOKE_IMAGE}")
    kvm = kvm_facts() if local else {"kind": "unknown", "summary": ""}
    for rt in runtimes.values():
        if kvm["kind"] == "pvm" and not rt.available and (rt.kind == "kata" or rt.platform == "kvm"):
            rt.reason += f"; {kvm['summary']}"  # a registered one that failed: say why it cannot work here
    for name in KATA_NAMES:
        if name not in runtimes:
            binary = "containerd-shim-kata-v2" if name == KATA_NAMES[0] else "kata-runtime"
            shim = shutil.which(binary) if local else None
            why = "not registered with the Docker engine" if client is not None else engine_reason
            if shim:
                why += f" (found {shim}; register it in /etc/docker/daemon.json)"
            if kvm["summary"]:
                why += f"; {kvm['summary']}"
            runtimes[name] = Runtime(name=name, kind="kata", available=False, reason=why, path=shim,
                                     hint=KATA_HINT if kvm["kind"] != "pvm" else
                                     "Kata cannot run on this host (paravirtual KVM); measure it on a host with "
                                     "VT-x/AMD-V: " + KATA_HINT)
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
    """The spec's runtimes, checked against the catalog.

    'all' is every available runtime but the gVisor setting variants (one switch changed from the
    build's default, see ``Runtime.setting_variant``): there are eight of them here, and a default
    measurement should not take three times as long for them; name them, or use the gvisor-settings
    preset.
    """
    if spec.runtimes == "all":
        return [name for name, rt in known.items() if rt.available and not rt.setting_variant]
    unknown = [name for name in spec.runtimes if name not in known]
    if unknown:
        raise SpecError(f"runtimes: unknown runtime(s) {', '.join(map(repr, unknown))}; "
                        f"known here: {', '.join(known)} (see 'shlib doctor')")
    missing = [f"{name} ({known[name].reason})" for name in spec.runtimes if not known[name].available]
    if missing:
        raise RuntimeUnavailable(f"runtimes: not available on this host: {'; '.join(missing)}. "
                                 "Remove them from the spec or install them (see 'shlib doctor').")
    return list(spec.runtimes)
