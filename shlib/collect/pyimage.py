"""The Python interpreter the Python probe runs with, and its image, built offline like the Node image.

Source ``host``: Debian's ``/usr/bin/python3`` when it is installed (a distribution build whose
standard library sits at the usual /usr/lib/python3.X), else the ``python3`` on PATH resolved to
its real binary (a pyenv shim is a shell script: the interpreter itself names its executable).
The image holds that binary at the same path, its standard library (without site-packages, tests
and GUI modules), the shared libraries ``ldd`` lists for the binary, for every extension module of
the standard library and of the shared library mounted beside it, a non-root user and the probe.
Source ``debian:<suite>`` (``shlib.collect.debpython``): Debian's python3 of that suite unpacked
from its packages; that root is the image's root. Native trials run the same interpreter on the host.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import docker
import docker.errors

from shlib.collect.debpython import SUITES, debian_root, launcher, root_digest
from shlib.collect.engine import LABEL
from shlib.collect.image import PROBE_USER, _add_dir, _add_file, _find, linked_libraries
from shlib.errors import ImageError

REPOSITORY = "shlib/python"
PY_PROBE_PATH = "/opt/shlib/load.py"
PY_MOUNT_POINT = "/shlib/pylib"
#: Interpreter flags of every Python trial: isolated, no site module, no bytecode written (see load.py).
PY_FLAGS = ("-I", "-S", "-B")
DEBIAN_PYTHON = Path("/usr/bin/python3")
#: Parts of the standard library no probe imports (and the host's installed packages, which -S hides).
_SKIP_DIRS = frozenset({"site-packages", "dist-packages", "test", "tests", "idlelib", "tkinter", "turtledemo",
                        "ensurepip", "lib2to3", "__phello__"})

_FACTS = r"""
import json, sys, sysconfig
print(json.dumps({
    "executable": sys.executable, "version": "%d.%d.%d" % sys.version_info[:3],
    "version_info": list(sys.version_info[:2]), "implementation": sys.implementation.name,
    "cache_tag": sys.implementation.cache_tag, "prefix": sys.prefix, "base_prefix": sys.base_prefix,
    "stdlib": sysconfig.get_paths()["stdlib"], "platstdlib": sysconfig.get_paths()["platstdlib"],
    "path": [p for p in sys.path if p], "soabi": sysconfig.get_config_var("SOABI"),
}))
"""


@dataclass(frozen=True)
class PythonInterpreter:
    """A Python interpreter on the host: where its binary and standard library are."""

    source: str
    executable: str  # the interpreter's path on the host
    version: str
    implementation: str
    cache_tag: str
    stdlib: str
    path: tuple[str, ...]  # sys.path under -I -S: the standard library's directories
    facts: dict[str, Any]
    #: What runs ``executable`` on the host (a Debian root's own loader; empty for the host's interpreter).
    launcher: tuple[str, ...] = ()
    #: The unpacked Debian root that is the image's root file system (None: built from the host's files).
    root: str | None = None

    @property
    def argv(self) -> list[str]:
        """The command line that starts this interpreter on the host."""
        return [*self.launcher, self.executable]

    @property
    def image_executable(self) -> str:
        """The interpreter's path inside its image."""
        return "/" + str(Path(self.executable).relative_to(self.root)) if self.root else self.executable

    @property
    def major_minor(self) -> str:
        return ".".join(self.version.split(".")[:2])


@dataclass(frozen=True)
class PythonImage:
    """A Python probe image ready to run: its tag, id and interpreter."""

    tag: str
    image_id: str
    python_version: str
    executable: str
    source: str

    def as_dict(self) -> dict[str, Any]:
        return {"tag": self.tag, "image_id": self.image_id, "python_version": self.python_version,
                "executable": self.executable, "source": f"python:{self.source}", "language": "python"}


def py_probe_source() -> bytes:
    """The Python probe shipped with shlib."""
    return resources.files("shlib.collect.probes").joinpath("load.py").read_bytes()


@functools.cache
def find_interpreter(source: str = "host") -> PythonInterpreter:
    """The interpreter of ``source`` (see the module's docstring), asked for its own facts."""
    launch: tuple[str, ...] = ()
    root: Path | None = None
    if source == "host":
        candidate = str(DEBIAN_PYTHON) if os.access(DEBIAN_PYTHON, os.X_OK) else shutil.which("python3")
        if candidate is None:
            raise ImageError("python source 'host' needs /usr/bin/python3 or python3 on PATH "
                             "(Debian/Ubuntu: apt-get install python3)")
    elif source.startswith("debian:"):
        suite = source.split(":", 1)[1]
        root = debian_root(suite)
        candidate = str(root / f"usr/bin/python{SUITES[suite]}")
        launch = launcher(root)
    else:
        raise ImageError(f"python source {source!r} is not known: use 'host', 'debian:bookworm' or 'debian:trixie'")
    done = subprocess.run([*launch, candidate, "-I", "-S", "-c", _FACTS], capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise ImageError(f"{candidate} could not report its facts: {done.stderr.strip()[-500:]}")
    facts = json.loads(done.stdout)
    executable = candidate if root is not None else os.path.realpath(facts["executable"])
    return PythonInterpreter(source=source, executable=executable, version=facts["version"],
                             implementation=facts["implementation"], cache_tag=facts["cache_tag"],
                             stdlib=facts["stdlib"], path=tuple(facts["path"]), facts=facts, launcher=launch,
                             root=str(root) if root is not None else None)


def _extension_modules(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.so*") if p.is_file() and not p.is_symlink())


def _system_libraries(objects: list[Path], inside: list[Path]) -> list[Path]:
    """Libraries (with the loader) that ``objects`` link and that are not under ``inside`` themselves."""
    found: dict[str, Path] = {}
    for obj in objects:
        try:
            libs = linked_libraries(obj)
        except subprocess.CalledProcessError:
            continue  # not a dynamic object (ldd says so): nothing to add
        for lib in libs:
            if not any(str(lib.resolve()).startswith(str(d.resolve()) + os.sep) for d in inside):
                found[str(lib)] = lib
    return [found[k] for k in sorted(found)]


def _skip(rel: Path) -> bool:
    return any(part in _SKIP_DIRS for part in rel.parts)


def rootfs_tar(interp: PythonInterpreter, extra_libs: list[Path]) -> bytes:
    """A minimal root: the interpreter at its own path, its standard library, the libraries, a user, the probe."""
    if interp.root is not None:
        return _debian_rootfs_tar(Path(interp.root))
    stdlib = Path(interp.stdlib)
    dirs = [Path(p) for p in interp.path if Path(p).is_dir()]
    objects = [Path(interp.executable)]
    for d in dirs:
        objects += [p for p in _extension_modules(d) if not _skip(p.relative_to(d))]
    libs = _system_libraries(objects, [stdlib, *dirs]) + list(extra_libs)
    buf = io.BytesIO()

    def world_readable(info: tarfile.TarInfo) -> tarfile.TarInfo | None:
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        return info

    with tarfile.open(fileobj=buf, mode="w") as tar:
        for d in ("/tmp", "/home/python", PY_MOUNT_POINT, "/opt/shlib", "/etc", "/usr/local/bin"):
            _add_dir(tar, d, 0o1777 if d == "/tmp" else 0o755)
        tar.add(interp.executable, arcname=interp.executable.lstrip("/"), filter=world_readable)
        seen: set[str] = set()
        for d in sorted(dirs, key=lambda x: len(str(x))):
            if any(str(d) == s or str(d).startswith(s + os.sep) for s in seen):
                continue
            seen.add(str(d))
            for dirpath, dirnames, filenames in os.walk(d):
                dirnames[:] = sorted(n for n in dirnames if n not in _SKIP_DIRS and not n.startswith("config-"))
                tar.add(dirpath, arcname=dirpath.lstrip("/"), recursive=False, filter=world_readable)
                for name in sorted(filenames):
                    full = os.path.join(dirpath, name)
                    tar.add(full, arcname=full.lstrip("/"), recursive=False, filter=world_readable)
        added: set[str] = set()
        for lib in libs:
            if str(lib) not in added:
                added.add(str(lib))
                tar.add(str(lib.resolve()), arcname=str(lib).lstrip("/"), filter=world_readable)
        _add_file(tar, "/etc/passwd",
                  b"root:x:0:0:root:/root:/sbin/nologin\npython:x:1000:1000:python:/home/python:/sbin/nologin\n")
        _add_file(tar, "/etc/group", b"root:x:0:\npython:x:1000:\n")
        _add_file(tar, PY_PROBE_PATH, py_probe_source())
    return buf.getvalue()


def _debian_rootfs_tar(root: Path) -> bytes:
    """A Debian root as unpacked (without docs and the standard library's tests), a user and the probe."""
    buf = io.BytesIO()
    skip = {"doc", "man", "info", "lintian", "locale", *_SKIP_DIRS}

    def owned_by_root(info: tarfile.TarInfo) -> tarfile.TarInfo:
        info.uid = info.gid = 0
        info.uname = info.gname = "root"
        return info

    with tarfile.open(fileobj=buf, mode="w") as tar:
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = sorted(n for n in dirnames if n not in skip and not n.startswith("config-"))
            rel = os.path.relpath(dirpath, root)
            if rel != ".":
                tar.add(dirpath, arcname=rel, recursive=False, filter=owned_by_root)
            for name in sorted(filenames):
                if rel == "." and name == ".complete":
                    continue
                full = os.path.join(dirpath, name)
                tar.add(full, arcname=os.path.normpath(os.path.join(rel, name)), recursive=False, filter=owned_by_root)
            # Symlinks to directories (lib -> usr/lib): os.walk lists them with the directories, never enters them.
            for name in [n for n in os.listdir(dirpath) if os.path.islink(os.path.join(dirpath, n))
                         and os.path.isdir(os.path.join(dirpath, n)) and n not in filenames]:
                full = os.path.join(dirpath, name)
                tar.add(full, arcname=os.path.normpath(os.path.join(rel, name)), recursive=False, filter=owned_by_root)
        for d in ("/tmp", "/home/python", PY_MOUNT_POINT, "/opt/shlib"):
            _add_dir(tar, d, 0o1777 if d == "/tmp" else 0o755)
        _add_file(tar, "/etc/passwd",
                  b"root:x:0:0:root:/root:/sbin/nologin\npython:x:1000:1000:python:/home/python:/sbin/nologin\n")
        _add_file(tar, "/etc/group", b"root:x:0:\npython:x:1000:\n")
        _add_file(tar, PY_PROBE_PATH, py_probe_source())
    return buf.getvalue()


def library_system_libraries(site: Path) -> list[Path]:
    """System libraries the extension modules of a Python library link (numpy's wheels: libgcc_s, ...)."""
    return _system_libraries(_extension_modules(site), [site]) if site.is_dir() else []


def ensure_python_image(client: docker.DockerClient, source: str = "host", site: Path | None = None) -> PythonImage:
    """The Python probe image for ``source``, built when missing; it also holds the system libraries
    the extension modules under ``site`` (the shared library) link, so that the library runs in it."""
    interp = find_interpreter(source)
    # A Debian root brings its own libstdc++/libgcc_s; the host's (older) ones must not replace them.
    extra = library_system_libraries(site) if site is not None and interp.root is None else []
    probe = hashlib.sha256(py_probe_source()).hexdigest()[:12]
    libs = hashlib.sha256("\n".join(str(p) for p in extra).encode()).hexdigest()[:8]
    made = f"-r{root_digest(Path(interp.root))}" if interp.root else ""
    tag = f"{REPOSITORY}:{interp.version}-{source.replace(':', '-')}{made}-p{probe}-l{libs}"
    image = _find(client, tag)
    if image is None:
        changes = [f"LABEL {LABEL}=true", f"LABEL shlib.python_version={interp.version}",
                   f"LABEL shlib.python_source={source}",
                   f"ENV PATH={Path(interp.image_executable).parent}:/usr/local/bin:/usr/bin:/bin", "WORKDIR /tmp"]
        repo, tag_name = tag.split(":")
        client.api.import_image_from_data(rootfs_tar(interp, extra), repository=repo, tag=tag_name, changes=changes)
        image = _find(client, tag)
        if image is None:
            raise ImageError(f"docker import did not produce {tag}")
    return PythonImage(tag=tag, image_id=image.id, python_version=interp.version,
                       executable=interp.image_executable, source=source)


def python_command(executable: str, probe: str, argument: str) -> list[str]:
    """The probe's command line: the interpreter, its isolation flags, the probe and its argument."""
    return [executable, *PY_FLAGS, probe, argument]


__all__ = ["PROBE_USER", "PY_MOUNT_POINT", "PY_PROBE_PATH", "PythonImage", "PythonInterpreter",
           "ensure_python_image", "find_interpreter", "python_command"]
