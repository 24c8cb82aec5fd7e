"""Module specs: which npm packages a spec may name, and the named module sets."""

from __future__ import annotations

import re

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
