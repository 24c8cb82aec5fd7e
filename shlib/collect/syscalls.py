"""Each module's syscall profile: what loading it asks of the kernel, measured once on the host.

``strace -f -C`` (the ``-c`` summary plus the trace, for the bytes read) of the native probe
loading one module, minus the probe loading nothing (Node's own boot), gives the counts a sandbox
has to serve for that module: files opened, the stat family (Node's resolver probes many paths
that do not exist: those are the failed lookups), reads, mmaps, directory listings. A sandbox that
intercepts every call pays per call, so these are the natural regressors of the cost model
(``shlib.analysis.costmodel``).

Cached in the library's directory, keyed by the library's tree hash and the Node version (a
profile depends on both, and on nothing of the run).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path
from typing import Any

from shlib.collect.cache import add_to_cache, read_cache

#: The stat family: a path lookup (or an fd's stat) in whichever form this libc/kernel uses.
STAT_FAMILY = ("stat", "lstat", "newfstatat", "statx", "fstat", "stat64", "lstat64", "fstatat64")
#: Profile fields: syscall name(s) summed into each.
GROUPS: dict[str, tuple[str, ...]] = {
    "openat": ("openat", "open"),
    "stat": STAT_FAMILY,
    "read": ("read", "pread64"),
    "mmap": ("mmap",),
    "getdents64": ("getdents64", "getdents"),
}
#: Failed lookups: the errors of the calls that look a path up (open and the stat family).
LOOKUPS = (*GROUPS["openat"], *STAT_FAMILY)
CACHE_NAME = "shlib-syscalls.json"
_HEADER = re.compile(r"^% time\s+seconds\s")
#: A completed read in strace's trace (started, or resumed under -f), with the bytes it returned.
_READ = re.compile(r"(?:\b(?:p?read(?:64)?)\(|<\.\.\. p?read(?:64)? resumed>).*\)\s+=\s+(\d+)\s*$")


def parse_strace_summary(text: str) -> dict[str, dict[str, int]]:
    """``strace -c`` output as {syscall: {"calls": n, "errors": n}} (the total line left out).

    Columns are read by the positions of the header's right edges (strace right-aligns its numbers
    under them and leaves ``errors`` blank when there are none).
    """
    lines = text.splitlines()
    try:
        header_at = next(i for i, line in enumerate(lines) if _HEADER.match(line))
    except StopIteration:
        raise ValueError("not strace -c output: no header line ('% time  seconds ...')") from None
    header = lines[header_at]
    calls_end = header.index("calls") + len("calls")
    errors_end = header.index("errors") + len("errors") if "errors" in header else None
    name_at = header.index("syscall")
    out: dict[str, dict[str, int]] = {}
    for line in lines[header_at + 1:]:
        if not line.strip() or line.lstrip().startswith("-"):
            continue
        name = line[name_at:].strip()
        if not name or name == "total":
            continue
        calls = line[calls_end - 9:calls_end].strip()  # %9lu
        errors = line[errors_end - 9:errors_end].strip() if errors_end else ""
        if not calls.isdigit():
            raise ValueError(f"strace -c line without a call count: {line!r}")
        out[name] = {"calls": int(calls), "errors": int(errors) if errors.isdigit() else 0}
    return out


def read_bytes(text: str) -> int:
    """Bytes returned by the read calls of a strace trace (``-C``/default output, with or without -f)."""
    return sum(int(m.group(1)) for line in text.splitlines() if (m := _READ.search(line)))


def summarize(counts: dict[str, dict[str, int]]) -> dict[str, int]:
    """The profile's fields from parsed counts: each group's calls, and ``failed_lookups``."""
    profile = {field: sum(counts.get(n, {}).get("calls", 0) for n in names) for field, names in GROUPS.items()}
    profile["failed_lookups"] = sum(counts.get(n, {}).get("errors", 0) for n in LOOKUPS)
    profile["syscalls"] = sum(c["calls"] for c in counts.values())
    return profile


def net_profile(loaded: dict[str, int], empty: dict[str, int]) -> dict[str, int]:
    """What loading the module added to the probe's own boot (never below zero)."""
    return {k: max(0, loaded.get(k, 0) - empty.get(k, 0)) for k in loaded}


def _strace(strace: str, node: str, probe: Path, lib: Path, modules: list[str],
            timeout_s: float) -> tuple[dict[str, int], dict[str, Any]]:
    """strace the probe loading ``modules``; a probe still running after ``timeout_s`` is killed with its
    tracer (the whole process group: a killed strace alone would leave the traced node running)."""
    arg = json.dumps({"lib": str(lib), "modules": modules, "barrier": False, "hold": False})
    with tempfile.NamedTemporaryFile("r", suffix=".strace") as out:
        proc = subprocess.Popen([strace, "-f", "-C", "-o", out.name, node, str(probe), arg], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, start_new_session=True)
        try:
            stdout, stderr = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            raise RuntimeError(f"the probe loading {modules} did not finish within {timeout_s:g} s under strace") \
                from None
        if proc.returncode != 0:
            raise RuntimeError(f"strace of the probe ({modules}) exited {proc.returncode}: {stderr[-800:]}")
        text = Path(out.name).read_text(errors="replace")
        summary = {**summarize(parse_strace_summary(text)), "read_bytes": read_bytes(text)}
    payload = next((json.loads(x) for x in reversed(stdout.splitlines()) if x.startswith("{")), {})
    return summary, payload


def syscall_profiles(lib: Path, tree_hash: str, modules: list[str], node: str, probe: Path,
                     node_version: str | None, timeout_s: float = 60.0) -> dict[str, Any] | None:
    """{module: net profile} of each module, measured once and cached in ``lib``; None without strace.

    A profile holds openat, stat, read, mmap, getdents64, failed_lookups and syscalls (counts added by
    the load), read_bytes (what its reads returned), ``files_loaded`` (the probe's CommonJS count) and
    ``ok`` (the module loaded natively). A module whose load does not finish within ``timeout_s`` gets
    {"ok": false, "error": ...} (cached too: it would hang again) and the others are still measured.
    """
    strace = shutil.which("strace")
    if strace is None:
        return None
    cache_path = lib / CACHE_NAME
    key = f"{tree_hash}|{node_version}"
    cached = read_cache(cache_path).get(key, {})
    missing = [m for m in modules if m not in cached]
    if missing:
        empty, _ = _strace(strace, node, probe, lib, [], timeout_s)
        for module in missing:
            try:
                loaded, payload = _strace(strace, node, probe, lib, [module], timeout_s)
            except RuntimeError as exc:
                cached[module] = {"ok": False, "error": str(exc)[:500]}
                continue
            result = next(iter(payload.get("results", [])), {})
            cached[module] = {**net_profile(loaded, empty), "files_loaded": result.get("files"),
                              "ok": bool(result.get("ok"))}
        add_to_cache(cache_path, key, cached)
    return {"node_version": node_version, "tree_hash": tree_hash, "method": "strace -f -C, load minus empty probe",
            "modules": {m: cached[m] for m in modules}}
