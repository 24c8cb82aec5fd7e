"""Connection to the Docker engine."""

from __future__ import annotations

import os
from typing import Any

import docker
import docker.errors
import requests.exceptions

from shlib.errors import EngineUnavailable
from shlib.results.metadata import DEFAULT_ENGINE_LABEL

#: Every object shlib creates carries this label (``shlib clean`` finds them by it).
LABEL = "shlib.managed"


def connect(pool_size: int = 10, timeout_s: float = 120.0) -> docker.DockerClient:
    """Connect to the engine named by DOCKER_HOST (default: the local socket).

    ``pool_size`` bounds the HTTP connections kept open: size it to the concurrency.
    """
    host = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    try:
        client = docker.DockerClient(base_url=host, timeout=int(timeout_s), max_pool_size=max(10, pool_size))
        client.ping()
    except (docker.errors.DockerException, requests.exceptions.RequestException, OSError) as exc:
        raise EngineUnavailable(
            f"cannot reach the Docker engine at {host} ({exc}). Start it with "
            "'sudo scripts/setup-host.sh' (installs and starts dockerd), or point DOCKER_HOST at a running engine."
        ) from exc
    return client


def engine_kind(version: dict[str, Any]) -> str:
    """docker | podman, from the engine's version answer (Podman names itself in its components)."""
    names = [str(c.get("Name", "")) for c in version.get("Components", [])]
    platform = str((version.get("Platform") or {}).get("Name", ""))
    return "podman" if any("podman" in n.lower() for n in [*names, platform]) else "docker"


def engine_facts(client: docker.DockerClient, label: str = DEFAULT_ENGINE_LABEL) -> dict[str, Any]:
    """The engine's identity (label, kind, id, name, version) and the settings worth recording with every run."""
    info = client.info()
    version = client.version()
    components = {c.get("Name"): c.get("Version") for c in version.get("Components", [])}
    return {
        "label": label,
        "kind": engine_kind(version),
        "id": info.get("ID"),
        "name": info.get("Name"),
        "version": version.get("Version"),
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
