"""The Python shared library: ``pip install --target`` once per requirements and interpreter.

The cache directory is keyed by the requirements and the interpreter (implementation, version,
bytecode tag, machine): a library is never shared by two interpreters whose wheels or .pyc differ.
Wheels only (``--only-binary=:all:``): nothing is built and no package code runs on the host at
install. Dependencies are part of the library; the manifest pins every distribution pip resolved.
The .pyc files are compiled by the probe's own interpreter (``compileall``, pip's default
timestamp-checked .pyc) because the library is mounted read-only and the probe writes no bytecode:
a .pyc missing or stale would be compiled in memory at every trial, and the probe counts them.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path
from typing import Any

from packaging.markers import default_environment
from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name

from shlib.collect.library import Library, tree_digest
from shlib.collect.pyimage import PythonInterpreter, find_interpreter
from shlib.errors import LibraryError
from shlib.paths import cache_dir
from shlib.spec.modules import ModuleRef, parse_ref

#: How a library is laid out and compiled; a change makes every cached library be installed anew.
LIBRARY_FORMAT = 2


def interpreter_key(interp: PythonInterpreter) -> str:
    """What a Python library depends on besides its requirements: wheel tags and bytecode."""
    return f"{interp.implementation}-{interp.version}-{interp.cache_tag}-{platform.machine()}"


def _pip_target_args(interp: PythonInterpreter) -> list[str]:
    """pip's options for installing for ``interp`` when it is not the interpreter pip runs in."""
    ours = (sys.implementation.name, f"{sys.version_info[0]}.{sys.version_info[1]}")
    if (interp.implementation, interp.major_minor) == ours:
        return []
    if interp.implementation != "cpython":
        raise LibraryError(f"installing wheels for {interp.implementation} {interp.version} from "
                           f"{sys.implementation.name} is not supported; run shlib under that interpreter")
    nodot = interp.major_minor.replace(".", "")
    return ["--python-version", interp.major_minor, "--implementation", "cp", "--abi", f"cp{nodot}"]


def _marker_env(interp: PythonInterpreter) -> dict[str, str]:
    env = default_environment()
    env.update({"python_version": interp.major_minor, "python_full_version": interp.version,
                "implementation_name": interp.implementation, "extra": ""})
    return env


def _top_level(dist: metadata.Distribution) -> list[str]:
    """The importable top-level names a distribution installs (top_level.txt, else from its RECORD)."""
    text = dist.read_text("top_level.txt")
    if text:
        names = [n.strip() for n in text.split() if n.strip()]
    else:
        names = []
        for f in dist.files or []:
            parts = f.parts
            if not parts or parts[0].endswith((".dist-info", ".data", ".libs")) or parts[0] in ("..", "__pycache__"):
                continue
            if len(parts) > 1 and parts[1] == "__init__.py":
                names.append(parts[0])
            elif len(parts) == 1 and parts[0].endswith(".py"):
                names.append(parts[0][:-3])
            elif len(parts) == 1 and parts[0].endswith(".so"):
                names.append(parts[0].split(".", 1)[0])
    return sorted(set(n for n in names if n and "/" not in n))


def import_name(dist: metadata.Distribution, name: str) -> str:
    """The module ``import`` of the distribution ``name`` means: its top-level package of that name,
    else the one whose name the distribution's name contains (pyyaml -> yaml), else the first public one."""
    tops = _top_level(dist)
    wanted = name.replace("-", "_").lower()
    for top in tops:
        if top.lower() == wanted:
            return top
    public = [t for t in tops if not t.startswith("_")]
    for top in sorted(public, key=len, reverse=True):
        if top.lower() in wanted:
            return top
    if public or tops:
        return (public or tops)[0]
    raise LibraryError(f"distribution {name!r} installs no importable module")


def _dist_files(site: Path, dist: metadata.Distribution) -> list[Path]:
    """Files of a distribution in the library (its RECORD) with the .pyc compiled for them."""
    out: list[Path] = []
    for f in dist.files or []:
        full = (site / f).resolve()
        if not str(full).startswith(str(site.resolve())) or not full.is_file():
            continue
        out.append(full)
        if full.suffix == ".py":
            out += sorted(full.parent.glob(f"__pycache__/{full.stem}.*.pyc"))
    return out


def build_py_manifest(site: Path, refs: list[ModuleRef], interp: PythonInterpreter,
                      local: dict[str, str]) -> dict[str, Any]:
    """Each module's resolved version, import name and dependency closure (distributions, files, bytes,
    extension modules); every distribution pip resolved; the tree hash."""
    dists = {canonicalize_name(d.metadata["Name"]): d for d in metadata.distributions(path=[str(site)])}
    env = _marker_env(interp)

    def closure(name: str) -> list[str]:
        seen: list[str] = []
        todo = [name]
        while todo:
            key = todo.pop()
            if key in seen or key not in dists:
                continue
            seen.append(key)
            for line in dists[key].requires or []:
                try:
                    req = Requirement(line)
                except InvalidRequirement:
                    continue
                if req.marker is None or req.marker.evaluate(env):
                    todo.append(canonicalize_name(req.name))
        return seen

    entries = []
    for ref in refs:
        if ref.name in local:
            files = [p for p in (site / local[ref.name]).rglob("*") if p.is_file()]
            entries.append({"module": ref.name, "import": local[ref.name], "requested": "local", "version": None,
                            "packages": 1, "files": len(files), "bytes": sum(p.stat().st_size for p in files),
                            "extension_modules": sum(p.name.endswith(".so") for p in files)})
            continue
        if ref.name not in dists:
            raise LibraryError(f"pip did not install {ref.requirement!r} into {site}")
        keys = closure(ref.name)
        files = [f for k in keys for f in _dist_files(site, dists[k])]
        entries.append({"module": ref.name, "import": import_name(dists[ref.name], ref.name),
                        "requested": ref.version or "latest", "version": dists[ref.name].version,
                        "packages": len(keys), "files": len(files), "bytes": sum(f.stat().st_size for f in files),
                        "extension_modules": sum(".so" in f.name for f in files)})
    tree_hash, n_files, size = tree_digest(site)
    every = [p for p in site.rglob("*") if p.is_file()]
    py = [p for p in every if p.suffix == ".py"]
    return {
        "language": "python", "modules": entries, "tree_hash": tree_hash, "files": n_files, "bytes": size,
        "packages": {k: d.version for k, d in sorted(dists.items())},
        "extension_modules": sum(".so" in p.name for p in every),
        "pyc_missing": sum(not any(p.parent.glob(f"__pycache__/{p.stem}.{interp.cache_tag}.pyc")) for p in py),
        "bytecode": f"timestamp .pyc compiled by the probe's interpreter ({interp.cache_tag})",
        "python": {"executable": interp.executable, "version": interp.version,
                   "implementation": interp.implementation, "cache_tag": interp.cache_tag},
        "pip_version": _pip_version(),
    }


def _pip_version() -> str | None:
    done = subprocess.run([sys.executable, "-m", "pip", "--version"], capture_output=True, text=True)
    return done.stdout.split()[1] if done.returncode == 0 and done.stdout else None


def install_python_library(modules: list[str] | tuple[str, ...], root: Path | None = None,
                           local: dict[str, Path] | None = None, source: str = "host") -> Library:
    """Install the ``py:`` modules with pip into a cached staging directory (reused when complete).

    ``local`` adds importable packages from local directories ({module name: package dir}, copied as
    they are, imported by the directory's name): a function's own code, or test packages that fail
    on import. Returns a python ``Library`` whose ``content`` (site/) is what the probe puts on sys.path.
    """
    refs = [parse_ref(m) for m in modules]
    wrong = [m for m, r in zip(modules, refs, strict=True) if r.language != "python"]
    if wrong:
        raise LibraryError(f"not Python modules: {', '.join(wrong)} (write them 'py:NAME==VERSION')")
    interp = find_interpreter(source)
    local = dict(local or {})
    local_names = {canonicalize_name(n): Path(d) for n, d in local.items()}
    key_parts = [f"format {LIBRARY_FORMAT}", interpreter_key(interp), *sorted(r.requirement for r in refs),
                 *(f"{n}={tree_digest(d)[0]}" for n, d in sorted(local_names.items()))]
    path = (root or cache_dir() / "pylibs") / hashlib.sha256("\n".join(key_parts).encode()).hexdigest()[:16]
    manifest_path = path / "shlib-manifest.json"
    names = tuple([*modules, *(f"py:{n}" for n in sorted(local_names))])
    if manifest_path.exists():
        return Library(names, path, json.loads(manifest_path.read_text()), language="python")
    if path.exists():
        shutil.rmtree(path)
    site = path / "site"
    site.mkdir(parents=True)
    try:
        if refs:
            cmd = [sys.executable, "-m", "pip", "install", "--target", str(site), "--only-binary=:all:",
                   "--no-compile", "--no-input", "--disable-pip-version-check", "--no-warn-script-location",
                   "--quiet", *_pip_target_args(interp), *(r.requirement for r in refs)]
            done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "PYTHONNOUSERSITE": "1"})
            if done.returncode != 0:
                raise LibraryError(f"pip install {' '.join(r.requirement for r in refs)} failed (wheels only, for "
                                   f"Python {interp.version}): {done.stderr.strip()[-1500:]}")
        imports = {}
        for name, src in sorted(local_names.items()):
            if not (src / "__init__.py").is_file():
                raise LibraryError(f"local Python package {src} has no __init__.py")
            shutil.copytree(src, site / src.name)
            imports[name] = src.name
        # In parallel (-j 0) compileall starts workers from sys.executable, which a Debian root's interpreter
        # cannot be without its loader: one process then.
        workers = "1" if interp.launcher else "0"
        subprocess.run([*interp.argv, "-I", "-S", "-m", "compileall", "-q", "-j", workers, str(site)],
                       capture_output=True, text=True)  # a file that does not compile is counted below
        shutil.rmtree(site / "bin", ignore_errors=True)  # console scripts: never run, not part of an import
        manifest = build_py_manifest(site, [*refs, *(parse_ref(f"py:{n}") for n in sorted(local_names))], interp,
                                     imports)
    except BaseException:
        shutil.rmtree(path, ignore_errors=True)
        raise
    manifest_path.write_text(json.dumps(manifest, indent=2) + "\n")
    return Library(names, path, manifest, language="python")
