"""The shared library: packages installed once on the host, then shared with containers.

npm modules are installed here; Python packages by ``shlib.collect.pylibrary``, into the same
kind of ``Library`` that this module caches, hashes and puts into a volume, a bind mount or an image.

Three mount modes, an experimental factor because sandboxes treat mounts and the root
file system differently:
  volume  a named Docker volume (the 2020 study's setup), filled once; complete only when
          its marker file (written last) holds the tree hash, refilled otherwise
  bind    the host's staging directory bind-mounted
  image   baked into an image layer on top of the Node image
Always read-only inside the probe container, at ``/shlib/lib`` (holding node_modules/) for Node and
at ``/shlib/pylib`` (the packages themselves, first on sys.path) for Python.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import docker
import docker.errors

from shlib.collect.cache import add_to_cache, cache_file, read_cache
from shlib.collect.engine import LABEL
from shlib.collect.image import NodeImage, add_files
from shlib.collect.pyimage import PythonImage
from shlib.errors import LibraryError
from shlib.paths import cache_dir
from shlib.spec.modules import parse_module

MOUNT_POINT = "/shlib/lib"
#: Where each language's library is mounted in its probe container.
MOUNT_POINTS = {"node": MOUNT_POINT, "python": "/shlib/pylib"}
#: Written into a named volume as the last step of its fill; holds the tree hash. Its absence
#: means the fill did not finish (Docker volume labels are immutable, so a label cannot say so).
MARKER = ".shlib-complete"


@dataclass(frozen=True)
class Library:
    """Packages of one language installed in a host directory, with their manifest."""

    modules: tuple[str, ...]
    path: Path
    manifest: dict[str, Any]
    language: str = "node"

    @property
    def mount_point(self) -> str:
        return MOUNT_POINTS[self.language]

    @property
    def content(self) -> Path:
        """The directory that appears at the mount point (Node: package.json + node_modules/; Python: site/)."""
        return self.path if self.language == "node" else self.path / "site"

    def members(self) -> list[str]:
        """The entries of ``content`` that the volume and the image receive."""
        if self.language == "node":
            return ["package.json", "package-lock.json", "node_modules"]
        return sorted(os.listdir(self.content))

    @property
    def tree_hash(self) -> str:
        return str(self.manifest["tree_hash"])

    @property
    def volume_name(self) -> str:
        return f"shlib-lib-{self.tree_hash[:16]}"


def _spec_key(modules: list[str] | tuple[str, ...]) -> str:
    return hashlib.sha256("\n".join(sorted(modules)).encode()).hexdigest()[:16]


def tree_digest(root: Path) -> tuple[str, int, int]:
    """(sha256 over every relative path and file content, file count, bytes) of ``root``."""
    digest = hashlib.sha256()
    files = size = 0
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            full = Path(dirpath) / name
            rel = full.relative_to(root).as_posix()
            digest.update(rel.encode() + b"\0")
            if full.is_symlink():
                digest.update(b"link:" + os.readlink(full).encode())
            else:
                data = full.read_bytes()
                digest.update(hashlib.sha256(data).digest())
                files += 1
                size += len(data)
    return digest.hexdigest(), files, size


def _closure(lock: dict[str, Any], name: str) -> list[str]:
    """Lockfile keys (node_modules/...) of ``name`` and everything it depends on."""
    packages = lock.get("packages", {})
    seen: list[str] = []

    def resolve(dep: str, parent: str) -> str | None:
        base = parent
        while True:
            key = f"{base}/node_modules/{dep}" if base else f"node_modules/{dep}"
            if key in packages:
                return key
            if not base:
                return None
            base = base.rsplit("/node_modules/", 1)[0] if "/node_modules/" in base else ""

    todo = [resolve(name, "")]
    while todo:
        key = todo.pop()
        if key is None or key in seen:
            continue
        seen.append(key)
        for dep in {**packages[key].get("dependencies", {}), **packages[key].get("optionalDependencies", {})}:
            todo.append(resolve(dep, key))
    return seen


def _dir_size(path: Path) -> tuple[int, int]:
    files = size = 0
    for dirpath, dirnames, filenames in os.walk(path):
        if Path(dirpath) != path and Path(dirpath).name == "node_modules":
            dirnames.clear()  # nested packages are counted as their own closure members
            continue
        for name in filenames:
            full = Path(dirpath) / name
            if not full.is_symlink():
                files += 1
                size += full.stat().st_size
    return files, size


def build_manifest(path: Path, modules: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Each module's resolved version, its dependency closure's file count and bytes, the tree hash."""
    lock = json.loads((path / "package-lock.json").read_text())
    tree_hash, files, size = tree_digest(path / "node_modules")
    entries = []
    for spec in modules:
        name, wanted = parse_module(spec)
        keys = _closure(lock, name)
        counted = [_dir_size(path / key) for key in keys]
        entries.append({
            "module": name,
            "requested": wanted or "latest",
            "version": lock["packages"].get(f"node_modules/{name}", {}).get("version"),
            "packages": len(keys),
            "files": sum(f for f, _ in counted),
            "bytes": sum(b for _, b in counted),
        })
    return {"modules": entries, "tree_hash": tree_hash, "files": files, "bytes": size,
            "npm_version": _npm_version()}


def _npm_version() -> str | None:
    npm = shutil.which("npm")
    return subprocess.run([npm, "--version"], capture_output=True, text=True).stdout.strip() if npm else None


def install_library(modules: list[str] | tuple[str, ...], root: Path | None = None,
                    local: dict[str, Path] | None = None) -> Library:
    """Install ``modules`` with npm into a staging directory (once; reused when complete).

    ``local`` adds packages from local directories ({name: dir}, packed and installed as
    copies): a function's own code, or test modules that throw or hang on load.
    Install scripts are not run (``--ignore-scripts``): package code never runs on the host.
    """
    npm = shutil.which("npm")
    if npm is None:
        raise LibraryError("npm is not on PATH; install Node.js and npm on the host")
    for spec in modules:
        parse_module(spec)
    local = dict(local or {})
    key = [*modules, *(f"{n}={tree_digest(Path(d))[0]}" for n, d in sorted(local.items()))]
    path = (root or cache_dir() / "libs") / _spec_key(key)
    manifest_path = path / "shlib-manifest.json"
    if manifest_path.exists():
        return Library(tuple(modules), path, json.loads(manifest_path.read_text()))
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    (path / "package.json").write_text(json.dumps({"name": "shlib-library", "private": True}) + "\n")
    tarballs = []
    for name, src in sorted(local.items()):
        packed = subprocess.run([npm, "pack", "--pack-destination", str(path), str(src)], capture_output=True,
                                text=True)
        if packed.returncode != 0:
            raise LibraryError(f"npm pack {src} (local module {name!r}) failed: {packed.stderr.strip()[-800:]}")
        tarballs.append(str(path / packed.stdout.strip().splitlines()[-1]))
    cmd = [npm, "install", "--prefix", str(path), "--no-audit", "--no-fund", "--ignore-scripts",
           "--save-exact", "--loglevel=error", *modules, *tarballs]
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        shutil.rmtree(path, ignore_errors=True)
        raise LibraryError(f"npm install {' '.join(modules)} failed: {done.stderr.strip()[-1500:]}")
    manifest = build_manifest(path, [*modules, *sorted(local)])
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    return Library(tuple(modules), path, manifest)


def library_tar(library: Library) -> bytes:
    """The library (Node: package.json, lock and node_modules/; Python: site/'s entries) as a tar, owned by
    root, world-readable."""
    buf = io.BytesIO()

    def owned_by_root(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        info.mode = (info.mode & 0o755) | 0o444 | (0o111 if info.isdir() else 0)
        return info

    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name in library.members():
            if (library.content / name).exists():
                tar.add(str(library.content / name), arcname=name, filter=owned_by_root)
    return buf.getvalue()


def _marker_tar(tree_hash: str) -> bytes:
    """The completeness marker (holding the tree hash) as a tar, owned by root, world-readable."""
    data = (tree_hash + "\n").encode()
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        info = tarfile.TarInfo(MARKER)
        info.size, info.mode = len(data), 0o444
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


def volume_marker(client: docker.DockerClient, name: str, image: NodeImage | PythonImage,
                  mount_point: str = MOUNT_POINT) -> str | None:
    """The tree hash in volume ``name``'s completeness marker, None when it has none.

    Read through the API (a helper container, created but never started, and ``get_archive``),
    so it works for a remote engine as well as a local one.
    """
    helper = client.containers.create(image.tag, ["true"], labels={LABEL: "true"}, network_mode="none",
                                      volumes={name: {"bind": mount_point, "mode": "ro"}})
    try:
        stream, _ = helper.get_archive(f"{mount_point}/{MARKER}")
        data = b"".join(stream)
    except docker.errors.NotFound:
        return None
    finally:
        helper.remove(force=True)
    try:
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            member = tar.next()
            extracted = tar.extractfile(member) if member is not None and member.isfile() else None
            return extracted.read().decode(errors="replace").strip() if extracted else None
    except tarfile.TarError:
        return None


def _fill_volume(client: docker.DockerClient, name: str, library: Library, image: NodeImage | PythonImage) -> None:
    """Copy the library into the volume, then, as the last step, the marker that says it is complete."""
    helper = client.containers.create(image.tag, ["true"], labels={LABEL: "true"}, network_mode="none",
                                      volumes={name: {"bind": library.mount_point, "mode": "rw"}})
    try:
        if not helper.put_archive(library.mount_point, library_tar(library)):
            raise LibraryError(f"could not copy the library into volume {name}")
        if not helper.put_archive(library.mount_point, _marker_tar(library.tree_hash)):
            raise LibraryError(f"could not write the completeness marker into volume {name}")
    finally:
        helper.remove(force=True)


def ensure_volume(client: docker.DockerClient, library: Library, image: NodeImage | PythonImage) -> str:
    """The named volume holding ``library``, complete: reused when its tree hash label matches and
    its marker says the fill finished, refilled when the marker is missing or wrong, else made now.

    A fill killed midway leaves the labelled volume without the marker (the marker is written
    last). It is refilled in place: the label pins the tree hash, so what a killed fill left is
    a part of the same files, which the copy overwrites; and a volume that others may be
    reading is never removed for it.
    """
    name = library.volume_name
    try:
        volume = client.volumes.get(name)
        if volume.attrs.get("Labels", {}).get("shlib.tree_hash") == library.tree_hash:
            # Each volume shlib creates carries a token of its own: once seen complete it is not checked
            # again at every run's start (a volume made anew under the same name has another token).
            token = volume.attrs.get("Labels", {}).get("shlib.volume_token")
            cache = cache_file("volumes-complete.json")
            if not token or read_cache(cache).get(f"{name}|{token}") != library.tree_hash:
                if volume_marker(client, name, image, library.mount_point) != library.tree_hash:
                    _fill_volume(client, name, library, image)
                if token:
                    add_to_cache(cache, f"{name}|{token}", library.tree_hash)
            return name
        volume.remove(force=True)
    except docker.errors.NotFound:
        pass
    client.volumes.create(name, labels={LABEL: "true", "shlib.tree_hash": library.tree_hash,
                                        "shlib.volume_token": uuid.uuid4().hex})
    try:
        _fill_volume(client, name, library, image)
    except BaseException:
        client.volumes.get(name).remove(force=True)
        raise
    return name


def ensure_library_image(client: docker.DockerClient, library: Library, image: NodeImage | PythonImage) -> str:
    """An image with ``library`` baked in at its mount point on top of ``image``; returns its tag."""
    tag = f"shlib/{library.language}-lib:{image.tag.split(':', 1)[1]}-{library.tree_hash[:12]}"
    try:
        client.images.get(tag)
    except docker.errors.ImageNotFound:
        add_files(client, image.tag, library_tar(library), tag, at=library.mount_point)
    return tag


def mount_kwargs(mode: str, library: Library, volume: str | None) -> dict[str, Any]:
    """Keyword arguments for ``containers.create`` that put the library at its mount point, read-only."""
    if mode == "volume":
        return {"volumes": {volume: {"bind": library.mount_point, "mode": "ro"}}}
    if mode == "bind":
        return {"volumes": {str(library.content): {"bind": library.mount_point, "mode": "ro"}}}
    if mode == "image":
        return {}
    raise LibraryError(f"mount mode {mode!r} is not one of volume, bind, image")
