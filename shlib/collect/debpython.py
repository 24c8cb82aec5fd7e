"""Python interpreters from Debian's packages, so that the interpreter version is a factor.

``debian:trixie`` (CPython 3.13) and ``debian:bookworm`` (3.11): the interpreter's packages and the
libraries they depend on (their own libc among them) are fetched with ``apt-get download`` through a
private apt configuration (its own sources list, lists and caches under shlib's cache; the system's
apt sources are never touched, as scripts/setup-host.sh does for the newer gVisor) and unpacked
with ``dpkg -x`` into a small root. That root is the image's root file system as it is; on the host
(native trials, bytecode compilation) the interpreter runs through the root's own dynamic loader
(``ld.so --library-path``), since a newer suite's binary needs a newer libc than the host's.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
from pathlib import Path

from shlib.errors import ImageError
from shlib.paths import cache_dir

#: Debian suite -> the CPython version its python3 is.
SUITES = {"bookworm": "3.11", "trixie": "3.13"}
#: What the interpreter needs: its packages, their library dependencies (from ``apt-cache depends``,
#: without debconf and tzdata), and libstdc++/libgcc_s, which the extension modules of common wheels link.
_PACKAGES = ("python{v}-minimal", "libpython{v}-minimal", "libpython{v}-stdlib", "libc6", "gcc-{gcc}-base",
             "libgcc-s1", "libstdc++6", "zlib1g", "libexpat1", "libffi8", "libbz2-1.0", "liblzma5", "libzstd1",
             "libsqlite3-0", "libncursesw6", "libtinfo6", "libreadline8{t64}", "readline-common", "libuuid1",
             "libdb5.3{t64}", "libssl3{t64}", "media-types", "netbase")
_GCC = {"bookworm": "12", "trixie": "14"}
_T64 = {"bookworm": "", "trixie": "t64"}
LOADER = "usr/lib64/ld-linux-x86-64.so.2"
#: How a root is made; a change makes every cached root be made anew (2: the standard library compiled).
ROOT_FORMAT = 3
LIBDIRS = ("usr/lib/x86_64-linux-gnu", "lib/x86_64-linux-gnu")


def packages(suite: str) -> list[str]:
    v = SUITES[suite]
    return [p.format(v=v, gcc=_GCC[suite], t64=_T64[suite]) for p in _PACKAGES]


def _mirror() -> str:
    """The Debian mirror the system's apt sources name (the same one the host's packages come from)."""
    text = ""
    for path in [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]:
        try:
            text += path.read_text() + "\n"
        except OSError:
            continue
    for match in re.finditer(r"^(?:URIs:|deb)\s+(?:\[[^\]]*\]\s+)?(\S+)", text, re.M):
        if re.search(r"/debian/?$", match.group(1)):
            return match.group(1)
    raise ImageError("python source debian:*: no Debian mirror in the system's apt sources; use python source 'host'")


def _apt(state: Path, suite: str) -> list[str]:
    """apt options of a private configuration for ``suite`` (nothing of the system's apt state is used)."""
    return ["-o", f"Dir::Etc::SourceList={state / 'sources.list'}", "-o", "Dir::Etc::SourceParts=/dev/null",
            "-o", f"Dir::State::Lists={state / 'lists'}", "-o", f"Dir::Cache::Archives={state / 'archives'}",
            "-o", f"Dir::Cache::pkgcache={state / 'pkgcache.bin'}",
            "-o", f"Dir::Cache::srcpkgcache={state / 'srcpkgcache.bin'}", "-o", "APT::Sandbox::User=root"]


def _run(cmd: list[str], what: str, cwd: Path | None = None) -> str:
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=cwd)
    if done.returncode != 0:
        raise ImageError(f"{what} failed: {done.stderr.strip()[-800:]}")
    return done.stdout


def debian_root(suite: str) -> Path:
    """The unpacked root holding Debian ``suite``'s python3 (fetched and unpacked once)."""
    if suite not in SUITES:
        raise ImageError(f"python source 'debian:{suite}' is not known: use one of "
                         f"{', '.join('debian:' + s for s in SUITES)}")
    version = SUITES[suite]
    root = cache_dir() / f"python-debian-{suite}"
    marker = root / ".complete"
    if (root / f"usr/bin/python{version}").is_file() and marker.is_file() and \
            marker.read_text().startswith(f"format {ROOT_FORMAT}\n"):
        return root
    if shutil.which("apt-get") is None or shutil.which("dpkg") is None:
        raise ImageError("python source debian:*: needs apt-get and dpkg (a Debian/Ubuntu host); use 'host'")
    state = cache_dir() / f"apt-{suite}"
    for d in ("lists/partial", "archives/partial", "debs"):
        (state / d).mkdir(parents=True, exist_ok=True)
    (state / "sources.list").write_text(
        f"deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] {_mirror()} {suite} main\n")
    opts = _apt(state, suite)
    _run(["apt-get", *opts, "update", "-q"], f"apt-get update (Debian {suite}, private configuration)")
    debs = state / "debs"
    for old in debs.glob("*.deb"):
        old.unlink()
    _run(["apt-get", *opts, "download", *packages(suite)], f"apt-get download of Debian {suite}'s python{version}",
         cwd=debs)
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    for deb in sorted(debs.glob("*.deb")):
        _run(["dpkg", "-x", str(deb), str(root)], f"dpkg -x {deb.name}")
    merge_usr(root)
    if not (root / f"usr/bin/python{version}").is_file() or not (root / LOADER).exists():
        raise ImageError(f"Debian {suite}'s packages did not give usr/bin/python{version} and {LOADER} in {root}")
    # Debian compiles the standard library's .pyc when it installs the package (py3compile, postinst);
    # dpkg -x runs no maintainer script, and without them every import would compile in memory.
    python = root / f"usr/bin/python{version}"
    _run([*launcher(root), str(python), "-I", "-S", "-m", "compileall", "-q", "-j", "1", "-x",
          r"/(test|tests|idlelib|tkinter|turtledemo|lib2to3|site-packages|dist-packages)/",
          str(root / f"usr/lib/python{version}")], f"compiling Debian {suite}'s standard library")
    marker.write_text(f"format {ROOT_FORMAT}\n" + " ".join(sorted(p.name for p in debs.glob("*.deb"))) + "\n")
    return root


def merge_usr(root: Path) -> None:
    """Give an unpacked root the merged-/usr layout trixie's packages have: bookworm's ship /lib, /lib64
    and /bin as directories of their own (their maintainer scripts merge them at install, which dpkg -x
    does not run). Their files move under usr/, the top-level names become links, and absolute links
    (bookworm's /lib64/ld-linux-x86-64.so.2 -> /lib/...) are made relative, so that they name files of
    the root on the host as well as in a container."""
    for name in ("bin", "sbin", "lib", "lib64"):
        top, usr = root / name, root / "usr" / name
        if top.is_dir() and not top.is_symlink():
            shutil.copytree(top, usr, symlinks=True, dirs_exist_ok=True)
            shutil.rmtree(top)
        if not top.exists() and not top.is_symlink() and usr.is_dir():
            top.symlink_to(f"usr/{name}")
    for link in [p for p in root.rglob("*") if p.is_symlink()]:
        target = os.readlink(link)
        if target.startswith("/"):
            link.unlink()
            link.symlink_to(os.path.relpath(root / target.lstrip("/"), link.parent))


def root_digest(root: Path) -> str:
    """What identifies an unpacked root: its format and the packages it was made of."""
    return hashlib.sha256((root / ".complete").read_bytes()).hexdigest()[:8]


def launcher(root: Path) -> tuple[str, ...]:
    """The argv prefix that runs a binary of ``root`` on the host: the root's loader and libraries."""
    libs = ":".join(str(root / d) for d in LIBDIRS if (root / d).is_dir())
    return (str(root / LOADER), "--library-path", libs)
