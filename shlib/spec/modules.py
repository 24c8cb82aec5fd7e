"""Module specs: which npm and Python packages a spec may name, and the named module sets.

A module spec names its ecosystem: ``npm:lodash@4.17.20`` or ``py:numpy==2.1.3``; a bare spec
(``lodash@4.17.20``) is npm, as before Python was supported.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass

from packaging.requirements import InvalidRequirement, Requirement
from packaging.utils import canonicalize_name
from packaging.version import InvalidVersion, Version

#: npm package name (optionally scoped) with an optional exact version, tag or simple range.
#: npm's rules for new packages: lowercase, URL-safe, no leading . or _, none of ~'!()*.
_NAME = r"(?:@[a-z0-9][a-z0-9._-]*/)?[a-z0-9][a-z0-9._-]*"
_VERSION = r"[\^~]?[0-9A-Za-z][0-9A-Za-z.+-]*"
MODULE_RE = re.compile(rf"^(?P<name>{_NAME})(?:@(?P<version>{_VERSION}))?$")
MAX_MODULE_SPEC = 214
#: Names npm refuses (blacklist) and Node's core modules: require('events') loads Node's own
#: module, never the library's package of that name, so measuring one would measure nothing.
RESERVED_NAMES = frozenset({"node_modules", "favicon.ico"})
CORE_MODULES = frozenset({
    "assert", "async_hooks", "buffer", "child_process", "cluster", "console", "constants", "crypto", "dgram",
    "diagnostics_channel", "dns", "domain", "events", "fs", "http", "http2", "https", "inspector", "module", "net",
    "os", "path", "perf_hooks", "process", "punycode", "querystring", "readline", "repl", "stream",
    "string_decoder", "sys", "timers", "tls", "trace_events", "tty", "url", "util", "v8", "vm", "wasi",
    "worker_threads", "zlib",
})

#: Module sets. "paper": the 2020 study's modules at versions of that time (Oct 2020).
MODULE_SETS: dict[str, list[str]] = {
    "paper": ["lodash@4.17.20", "express@4.17.1", "react@16.14.0"],
    # From one file to thousands, a few KB to several MB (the cost model fits across them): a tiny
    # single file (ms), one huge file (typescript), many small files (@babel/core, rxjs, aws-sdk v2),
    # lodash beside its ES-module twin lodash-es (the same code as 1 file vs ~640), and the paper's three.
    "spectrum": ["ms@2.1.3", "typescript@5.6.3", "@babel/core@7.26.0", "rxjs@7.8.1", "aws-sdk@2.1692.0",
                 "lodash@4.17.20", "lodash-es@4.17.20", "express@4.17.1", "react@16.14.0"],
    "serverless": ["aws-sdk@2.1692.0", "axios@1.7.9", "moment@2.30.1", "uuid@11.0.3", "jsonwebtoken@9.0.2",
                   "lodash@4.17.21", "express@4.21.2"],
    # SOCK (Oakes et al., ATC'18): popular Python packages of serverless functions, pinned to releases of
    # late 2024 that ship manylinux wheels for CPython 3.11 (Debian 12's python3) and 3.13.
    "sock": ["py:requests==2.32.3", "py:flask==3.1.0", "py:numpy==2.1.3", "py:pandas==2.2.3",
             "py:boto3==1.35.76", "py:pyyaml==6.0.2", "py:jinja2==3.1.4", "py:sqlalchemy==2.0.36",
             "py:django==5.1.4", "py:scipy==1.14.1"],
}

def parse_module(spec: str) -> tuple[str, str | None]:
    """Split ``name@version`` after checking it is a valid npm package spec."""
    if not isinstance(spec, str) or not spec:
        raise ValueError("a module must be a non-empty npm package spec such as 'lodash' or 'lodash@4.17.21'")
    if len(spec) > MAX_MODULE_SPEC:
        raise ValueError(f"module spec is {len(spec)} characters; npm allows at most {MAX_MODULE_SPEC}")
    match = MODULE_RE.fullmatch(spec)
    if not match or ".." in spec:
        raise ValueError(
            f"{spec!r} is not a valid npm package spec: use a lowercase name of letters, digits and - . _ "
            "(not starting with . or _, no '..'; optionally @scope/name), optionally followed by @version "
            "(e.g. 'lodash@4.17.21')"
        )
    name = match.group("name")
    if name in RESERVED_NAMES:
        raise ValueError(f"{spec!r}: npm does not allow the package name {name!r}")
    if name in CORE_MODULES:
        raise ValueError(f"{spec!r}: {name!r} is a Node.js core module name; require({name!r}) loads Node's own "
                         "module, not a package from the library, so there is nothing to measure")
    return name, match.group("version")


#: Languages (ecosystems) a module spec may name, by prefix.
LANGUAGES = {"npm": "node", "py": "python"}
MAX_PY_SPEC = 200
#: A Python requirement shlib accepts: a PEP 508 name and optionally one exact ``==`` pin (PEP 440 version).
PY_RE = re.compile(r"^(?P<name>[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?)(?:==(?P<version>[0-9][0-9A-Za-z.]*))?$")
_PY_ALLOWED = ("a package name of letters, digits and - . _ (starting and ending with a letter or digit), "
               "optionally pinned exactly with ==VERSION (e.g. 'py:numpy==2.1.3')")


@dataclass(frozen=True)
class ModuleRef:
    """One module of a spec: its language, its name as results record it, the version asked for."""

    language: str  # node | python
    name: str  # npm package name; Python: the canonical distribution name (PEP 503)
    version: str | None  # npm version/range/tag; Python: the exact == pin (None: resolved and recorded)

    @property
    def requirement(self) -> str:
        """What the package installer is given: ``lodash@4.17.20`` or ``numpy==2.1.3``."""
        if self.version is None:
            return self.name
        return f"{self.name}{'@' if self.language == 'node' else '=='}{self.version}"


def _why_not_python(text: str) -> str:
    """What makes ``text`` (after ``py:``) unacceptable, named by kind."""
    stripped = text.strip()
    if stripped.startswith("-e") or stripped.startswith(("git+", "hg+", "svn+", "bzr+")) or "git+" in text:
        return "editable and VCS requirements (-e, git+...) are not allowed"
    if stripped.startswith("-"):
        return "pip options (--index-url, -r, ...) are not allowed: shlib chooses how pip runs"
    if "://" in text or re.search(r"\s@\s|@", text):
        return "URLs and direct references (name @ url) are not allowed"
    if ";" in text:
        return "environment markers and anything after ';' are not allowed"
    if "/" in text or "\\" in text or stripped.startswith(".") or ".." in text or stripped.startswith("~"):
        return "paths are not allowed"
    if "[" in text or "]" in text:
        return "extras ([...]) are not supported: name the extra's packages themselves"
    if re.fullmatch(r"[A-Za-z0-9._-]+==[0-9][0-9A-Za-z.]*\+[0-9A-Za-z.]+", text):
        return "local versions (+...) are not on package indexes; pin a released version"
    if re.fullmatch(r"[A-Za-z0-9._-]+\s*(~=|>=|<=|!=|===|>|<)\s*[0-9A-Za-z.*+!]+", text):
        return "only an exact pin (==VERSION) or no version is allowed, no ranges"
    if re.search(r"[\s$`|&<>(){}*?!#'\"^,]", text):
        return "shell metacharacters and whitespace are not allowed"
    return "it is not a package name with an optional exact pin"


def parse_python(text: str) -> ModuleRef:
    """Check a Python requirement strictly: a name, optionally ``==`` an exact version, nothing else."""
    if not isinstance(text, str) or not text:
        raise ValueError(f"a Python module must be {_PY_ALLOWED}")
    if len(text) > MAX_PY_SPEC:
        raise ValueError(f"Python module spec is {len(text)} characters; at most {MAX_PY_SPEC} are allowed")
    match = PY_RE.fullmatch(text)
    if match is None or ".." in text:
        raise ValueError(f"'py:{text}' is refused: {_why_not_python(text)}; use {_PY_ALLOWED}")
    try:
        requirement = Requirement(text)
        version = Version(match.group("version")) if match.group("version") else None
    except (InvalidRequirement, InvalidVersion) as exc:
        raise ValueError(f"'py:{text}' is not a valid requirement ({exc}); use {_PY_ALLOWED}") from None
    name = canonicalize_name(requirement.name)
    if name.replace("-", "_") in sys.stdlib_module_names:
        raise ValueError(f"'py:{text}': {name!r} is the name of a Python standard library module; importing it "
                         "measures the interpreter's own module, not a package from the library")
    return ModuleRef("python", name, str(version) if version is not None else None)


def parse_ref(spec: str) -> ModuleRef:
    """A module spec with its language: ``py:NAME[==VERSION]``, ``npm:NAME[@VERSION]`` or a bare npm spec."""
    if not isinstance(spec, str) or not spec:
        raise ValueError("a module must be a non-empty spec such as 'lodash@4.17.21', 'npm:lodash' or "
                         "'py:numpy==2.1.3'")
    prefix, sep, rest = spec.partition(":")
    if sep and prefix in LANGUAGES:
        if LANGUAGES[prefix] == "python":
            return parse_python(rest)
        name, version = parse_module(rest)
        return ModuleRef("node", name, version)
    if sep and re.fullmatch(r"[A-Za-z0-9+.-]{1,20}", prefix) and not rest.startswith("//"):
        raise ValueError(f"{spec!r}: unknown ecosystem {prefix!r}; module specs start with 'py:' (Python), "
                         "'npm:' (npm) or name an npm package bare")
    if "==" in spec and not sep:
        raise ValueError(f"{spec!r} looks like a Python requirement: write it 'py:{spec}' (a bare spec is npm)")
    name, version = parse_module(spec)
    return ModuleRef("node", name, version)
