"""Connection to a container engine: the local Docker engine, a remote one, or Podman's Docker API.

An engine is named by ``--engine`` (``unix://PATH``, ``tcp://HOST:PORT`` with TLS from
DOCKER_TLS_VERIFY/DOCKER_CERT_PATH, ``ssh://[USER@]HOST[:PORT]``, or a docker context name) or,
when none is named, by DOCKER_HOST (default: the local socket). The name is checked before
anything starts; the label recorded with the results never carries credentials.
"""

from __future__ import annotations

import ipaddress
import os
import re
import socket
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import docker
import docker.errors
import requests.exceptions

from shlib.errors import EngineUnavailable
from shlib.results.metadata import DEFAULT_ENGINE_LABEL

#: Every object shlib creates carries this label (``shlib clean`` finds them by it).
LABEL = "shlib.managed"
DEFAULT_SOCKET = "unix:///var/run/docker.sock"
SCHEMES = ("unix", "tcp", "ssh")
ENGINE_FORMS = ("unix:///path/to/docker.sock, tcp://HOST:PORT (TLS from DOCKER_TLS_VERIFY/DOCKER_CERT_PATH), "
                "ssh://[USER@]HOST[:PORT], or the name of a docker context (docker context ls)")
CONTEXT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
#: Podman's quirk on this host kind: without explicit limits crun/runc fail with
#: "setrlimit RLIMIT_NOFILE/RLIMIT_NPROC: Operation not permitted".
PODMAN_ULIMITS = {"nofile": 1024, "nproc": 1024}


@dataclass(frozen=True)
class EngineTarget:
    """Where an engine is and how to reach it: ``label`` is what the results record."""

    label: str
    base_url: str
    tls: Any = False
    source: str = "default"  # default (DOCKER_HOST or the local socket) | url | context

    @property
    def scheme(self) -> str:
        return urlsplit(self.base_url).scheme

    def client(self, pool_size: int = 10, timeout_s: float = 120.0) -> docker.DockerClient:
        """A client of this engine (not yet pinged)."""
        client = docker.DockerClient(base_url=self.base_url, tls=self.tls, timeout=int(timeout_s),
                                     max_pool_size=max(10, pool_size), use_ssh_client=self.scheme == "ssh")
        client.shlib_target = self  # type: ignore[attr-defined]
        return client

    def api_client(self, timeout_s: float) -> docker.APIClient:
        """A low-level client of this engine with its own HTTP timeout (smoke tests)."""
        return docker.APIClient(base_url=self.base_url, tls=self.tls, timeout=max(1, int(timeout_s)),
                                use_ssh_client=self.scheme == "ssh")


def _bad(engine: str, why: str) -> EngineUnavailable:
    return EngineUnavailable(f"--engine {redact(engine)!r}: {why}. Allowed: {ENGINE_FORMS}")


def redact(url: str) -> str:
    """``url`` without user, password, query or fragment: safe to record and to print."""
    if "://" not in url:
        return url
    parts = urlsplit(url)
    try:
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        host, port = parts.netloc.rsplit("@", 1)[-1], None
        return f"{parts.scheme}://{host}{parts.path}"
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}{f':{port}' if port else ''}{parts.path}"


def check_url(url: str, name: str = "--engine") -> None:
    """Refuse a malformed engine URL (scheme, host, port, socket path) with the rule broken."""
    parts = urlsplit(url)
    if parts.scheme not in SCHEMES:
        raise _bad(url, f"scheme {parts.scheme + '://'!r} is not one of {', '.join(s + '://' for s in SCHEMES)}")
    if parts.scheme == "unix":
        if parts.netloc or not parts.path.startswith("/"):
            raise _bad(url, "a unix socket needs an absolute path: unix:///var/run/docker.sock (three slashes)")
        return
    try:
        port = parts.port
    except ValueError:
        raise _bad(url, "the port is not a whole number from 1 to 65535") from None
    if not parts.hostname:
        raise _bad(url, f"a {parts.scheme}:// engine needs a host name")
    if port is not None and not 1 <= port <= 65535:
        raise _bad(url, "the port is not a whole number from 1 to 65535")
    if parts.scheme == "tcp" and port is None:
        raise _bad(url, "a tcp:// engine needs a port (2376 with TLS, 2375 without)")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise _bad(url, f"a {parts.scheme}:// engine takes no path, query or fragment")


def resolve_engine(engine: str | None = None, environ: dict[str, str] | None = None) -> EngineTarget:
    """The engine named by ``engine`` (URL or context), else DOCKER_HOST, else the local socket; checked."""
    env = dict(os.environ if environ is None else environ)
    if engine is None or engine == "":
        host = env.get("DOCKER_HOST") or DEFAULT_SOCKET
        if "://" in host:
            check_url(host)
        params = docker.utils.kwargs_from_env(environment={**env, "DOCKER_HOST": host})
        return EngineTarget(DEFAULT_ENGINE_LABEL, host, params.get("tls", False) if host.startswith("tcp") else False)
    if "://" in engine:
        check_url(engine)
        tls: Any = False
        if engine.startswith("tcp://"):
            tls = docker.utils.kwargs_from_env(environment={**env, "DOCKER_HOST": engine}).get("tls", False)
        return EngineTarget(redact(engine), engine, tls, "url")
    if engine == DEFAULT_ENGINE_LABEL:
        return resolve_engine(None, env)
    if not CONTEXT_RE.match(engine):
        raise _bad(engine, "not a URL (no scheme://) and not a valid context name")
    from docker.context import ContextAPI

    try:
        context = ContextAPI.get_context(engine)
    except docker.errors.DockerException as exc:
        raise _bad(engine, f"the docker contexts cannot be read ({exc})") from None
    if context is None:
        known = sorted(c.Name for c in ContextAPI.contexts())
        raise _bad(engine, f"no docker context of that name (known: {', '.join(known) or 'none'})")
    host = context.Host or DEFAULT_SOCKET
    # the docker CLI stores unix:// and tcp://; docker-py's own create_context stores its parsed forms
    for parsed, plain in (("http+unix://", "unix://"), ("https://", "tcp://"), ("http://", "tcp://")):
        if host.startswith(parsed):
            host = plain + host[len(parsed):]
    check_url(host)
    tls = context.TLSConfig if host.startswith("tcp://") and context.TLSConfig is not None else False
    return EngineTarget(engine, host, tls, "context")


def connect(pool_size: int = 10, timeout_s: float = 120.0, engine: str | EngineTarget | None = None
            ) -> docker.DockerClient:
    """Connect to ``engine`` (see ``resolve_engine``; default: DOCKER_HOST or the local socket) and ping it.

    ``pool_size`` bounds the HTTP connections kept open: size it to the concurrency.
    """
    target = engine if isinstance(engine, EngineTarget) else resolve_engine(engine)
    try:
        client = target.client(pool_size, timeout_s)
        client.ping()
    except (docker.errors.DockerException, requests.exceptions.RequestException, OSError) as exc:
        if target.source == "default":
            raise EngineUnavailable(
                f"cannot reach the Docker engine at {redact(target.base_url)} ({exc}). Start it with "
                "'sudo scripts/setup-host.sh' (installs and starts dockerd), or point DOCKER_HOST at a running "
                "engine.") from exc
        raise EngineUnavailable(f"--engine {target.label!r}: cannot reach the engine at {redact(target.base_url)} "
                                f"({exc}). Is it running and reachable from here? Allowed: {ENGINE_FORMS}") from exc
    return client


def target_of(client: docker.DockerClient) -> EngineTarget:
    """The engine a client was made for (``connect``); a client made elsewhere counts as the default engine."""
    target = getattr(client, "shlib_target", None)
    return target if isinstance(target, EngineTarget) else resolve_engine(None)


def engine_kind(version: dict[str, Any]) -> str:
    """docker | podman, from the engine's version answer (Podman names itself in its components)."""
    names = [str(c.get("Name", "")) for c in version.get("Components", [])]
    platform = str((version.get("Platform") or {}).get("Name", ""))
    return "podman" if any("podman" in n.lower() for n in [*names, platform]) else "docker"


def is_local(target: EngineTarget, engine_name: str | None, hostname: str | None = None) -> bool:
    """Whether the engine runs on the machine shlib runs on.

    It does when it reports this machine's host name and is reached without leaving it: a unix
    socket present here, or tcp:// / ssh:// to a loopback address. A remote engine on a host of the
    same name is not mistaken for this one, nor this one reached through a public address for a
    remote one (that errs towards "remote": native and bind mounts are refused, nothing is wrong).
    """
    hostname = hostname or socket.gethostname()
    if not engine_name or engine_name.split(".")[0] != hostname.split(".")[0]:
        return False
    parts = urlsplit(target.base_url)
    if parts.scheme == "unix":
        return os.path.exists(parts.path)
    host = parts.hostname or ""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def engine_facts(client: docker.DockerClient, label: str | None = None) -> dict[str, Any]:
    """The engine's identity (label, kind, id, name, version, local) and the settings worth recording."""
    info = client.info()
    version = client.version()
    target = target_of(client)
    components = {c.get("Name"): c.get("Version") for c in version.get("Components", [])}
    kind = engine_kind(version)
    return {
        "label": label or target.label,
        "kind": kind,
        "id": engine_id(kind, info, target),
        "name": info.get("Name"),
        "version": version.get("Version"),
        "url": redact(target.base_url),
        "local": is_local(target, info.get("Name")),
        "docker_version": version.get("Version"),
        "api_version": version.get("ApiVersion"),
        "containerd_version": components.get("containerd"),
        "runc_version": components.get("runc"),
        "storage_driver": info.get("Driver"),
        "cgroup_version": info.get("CgroupVersion"),
        "cgroup_driver": info.get("CgroupDriver"),
        "default_runtime": info.get("DefaultRuntime"),
        "kernel": info.get("KernelVersion"),
        "operating_system": info.get("OperatingSystem"),
        "ncpu": info.get("NCPU"),
        "mem_total_bytes": info.get("MemTotal"),
        "registered_runtimes": sorted(info.get("Runtimes", {})),
    }


def engine_id(kind: str, info: dict[str, Any], target: EngineTarget) -> str | None:
    """The engine's ID: Docker's own; for Podman (4.3 answers a new random ID at every /info) its host and socket."""
    if kind == "podman":
        return f"podman@{info.get('Name')}:{redact(target.base_url)}"
    return info.get("ID")


def container_quirks(kind: str) -> dict[str, Any]:
    """Extra ``containers.create`` arguments an engine kind needs (Podman: explicit nofile/nproc limits)."""
    if kind != "podman":
        return {}
    return {"ulimits": [docker.types.Ulimit(name=n, soft=v, hard=v) for n, v in PODMAN_ULIMITS.items()]}


def client_kind(client: docker.DockerClient) -> str:
    """docker | podman for a connected client (asked once, remembered on the client).

    A client not made by ``connect`` is taken for Docker, as before engines could be named.
    """
    kind = getattr(client, "shlib_kind", None)
    if kind is None and not isinstance(getattr(client, "shlib_target", None), EngineTarget):
        return "docker"
    if kind is None:
        kind = engine_kind(client.version())
        client.shlib_kind = kind  # type: ignore[attr-defined]
    return str(kind)


def client_is_local(client: docker.DockerClient) -> bool:
    """Whether a connected client's engine runs on this machine (asked once, remembered on the client).

    A client not made by ``connect`` (no target recorded) is taken for the local engine, as before
    engines could be named.
    """
    local = getattr(client, "shlib_local", None)
    if local is None and not isinstance(getattr(client, "shlib_target", None), EngineTarget):
        return True
    if local is None:
        local = is_local(target_of(client), client.info().get("Name"))
        client.shlib_local = local  # type: ignore[attr-defined]
    return bool(local)


def podman_runtime_sockets(target: EngineTarget) -> dict[str, str]:
    """{runtime: URL} of the Podman services beside ``target``'s socket, one per runtime (``SOCKET.d/NAME.sock``).

    Podman's API (4.3, compat and libpod alike) cannot choose the OCI runtime per container: a
    service runs every container under its own ``--runtime``. scripts/setup-podman.sh therefore
    starts one service per runtime, all on the same storage (images, volumes), and this finds them;
    only for a socket on this machine.
    """
    parts = urlsplit(target.base_url)
    if parts.scheme != "unix":
        return {}
    folder = parts.path + ".d"
    try:
        names = sorted(os.listdir(folder))
    except OSError:
        return {}
    return {n[: -len(".sock")]: f"unix://{folder}/{n}" for n in names if n.endswith(".sock")}


def client_for_runtime(client: docker.DockerClient, runtime: str | None) -> docker.DockerClient:
    """The client whose engine runs containers under ``runtime``: ``client`` itself for Docker (it takes the
    runtime per container) and for Podman's default runtime; for Podman's others, that runtime's service."""
    if runtime is None or client_kind(client) != "podman":
        return client
    default = getattr(client, "shlib_default_runtime", None)
    if default is None:
        default = client.info().get("DefaultRuntime")
        client.shlib_default_runtime = default  # type: ignore[attr-defined]
    if runtime == default:
        return client
    cache: dict[str, docker.DockerClient] = client.__dict__.setdefault("shlib_runtime_clients", {})
    if runtime not in cache:
        target = target_of(client)
        url = podman_runtime_sockets(target).get(runtime)
        if url is None:
            from shlib.errors import RuntimeUnavailable

            raise RuntimeUnavailable(
                f"runtime {runtime}: Podman's API cannot choose the runtime per container, and no Podman service "
                f"runs with it beside {redact(target.base_url)} (scripts/setup-podman.sh starts one per runtime, "
                f"at {urlsplit(target.base_url).path}.d/{runtime}.sock)")
        pool = client.api.adapters.get("http+docker://", None)
        size = getattr(pool, "max_pool_size", 10) if pool is not None else 10
        runtime_client = EngineTarget(target.label, url, target.tls, target.source).client(
            pool_size=int(size or 10), timeout_s=float(client.api.timeout))
        runtime_client.shlib_kind = "podman"  # type: ignore[attr-defined]
        cache[runtime] = runtime_client
    return cache[runtime]


def oci_runtime(client: docker.DockerClient, container_id: str) -> str | None:
    """The OCI runtime a Podman container ran under (its compat inspect says only 'oci'), from the libpod API."""
    try:
        answer = client.api._result(client.api._get(client.api._url("/libpod/containers/{0}/json", container_id)),
                                    json=True)
    except (docker.errors.APIError, requests.exceptions.RequestException):
        return None
    return answer.get("OCIRuntime")
