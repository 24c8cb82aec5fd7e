"""Register container runtimes in Docker's daemon.json without clobbering a user's entries.

Standard library only: the host setup script runs it before shlib's dependencies exist.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

#: runsc needs its own network off here: with the default sandbox network it refuses to
#: start ("cannot run with network enabled in root network namespace"); probes need none.
RUNSC_BASE_ARGS = ["--network=none"]


def runsc_build(binary: str) -> str:
    """Return the build date of a runsc binary (``20221219``) from ``runsc --version``."""
    out = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30).stdout
    match = re.search(r"(\d{8})", out)
    if not match:
        raise ValueError(f"cannot read a build date from '{binary} --version': {out!r}")
    return match.group(1)


def runsc_platforms(binary: str) -> list[str]:
    """Platforms worth comparing that this runsc build offers (systrap from mid-2023 on)."""
    platforms = ["ptrace"]
    if int(runsc_build(binary)) >= 20230601:
        platforms.insert(0, "systrap")
    if os.path.exists("/dev/kvm"):
        platforms.append("kvm")
    return platforms


#: gVisor's per-mount dentry cache holds 1000 unreferenced dentries (``defaultMaxCachedDentries`` in
#: pkg/sentry/fsimpl/gofer); ``--dcache=N`` replaces the per-mount caches by one global cache of N
#: (default -1: per-mount). A tenth and ten times that default bracket it.
DCACHE_SMALL, DCACHE_LARGE = 100, 10000

#: The switches that change what open/stat/read cost on a bind mount, one variant each: name suffix,
#: flag, value. A variant is registered only where the build has the flag and the value is not its default.
SWITCH_VARIANTS = (
    ("nodirectfs", "directfs", "false"),
    ("exclusive", "file-access-mounts", "exclusive"),
    ("overlaynone", "overlay2", "none"),
    (f"dcache{DCACHE_SMALL}", "dcache", str(DCACHE_SMALL)),
    (f"dcache{DCACHE_LARGE}", "dcache", str(DCACHE_LARGE)),
)


def parse_runsc_flags(text: str) -> dict[str, str]:
    """Flag name -> default ('' when none is shown) from ``runsc flags`` output (Go's flag package format)."""
    flags: dict[str, str] = {}
    name = None
    for line in text.splitlines():
        head = re.match(r"^\s{2}-([\w.-]+)", line)
        if head and not line.startswith("    "):
            name = head.group(1)
            flags[name] = ""
            continue
        default = re.search(r"\(default (.*)\)\s*$", line)
        if name and default:
            flags[name] = default.group(1).strip('"')
    return flags


def runsc_flags(binary: str) -> dict[str, str]:
    """The flags of a runsc binary and their defaults (``runsc flags``)."""
    out = subprocess.run([binary, "flags"], capture_output=True, text=True, timeout=30)
    return parse_runsc_flags(out.stdout + out.stderr)


def switch_variants(flags: dict[str, str], default_platform: str) -> dict[str, list[str]]:
    """Name suffix -> runtime args of the switch variants this build supports (one switch from its default)."""
    variants = {}
    for suffix, flag, value in SWITCH_VARIANTS:
        if flag in flags and flags[flag] != value and not (flag == "overlay2" and flags[flag] in ("", "none")):
            variants[f"{default_platform}-{suffix}"] = [f"--platform={default_platform}", f"--{flag}={value}"]
    return variants


def runsc_entries(binary: str, file_access_variants: bool = False, switches: bool = False
                  ) -> dict[str, dict[str, Any]]:
    """daemon.json ``runtimes`` entries for one runsc build: one per platform.

    With ``file_access_variants`` the build's default platform also gets an ``-exclusive`` entry
    (``--file-access-mounts=exclusive``: caches a read-only library). With ``switches`` it gets one entry
    per gVisor switch that moves file-heavy start-up and that this build has (``SWITCH_VARIANTS``):
    ``runsc-20240729-systrap-nodirectfs``, ``-exclusive``, ``-overlaynone``, ``-dcache100``, ``-dcache10000``.
    """
    build = runsc_build(binary)
    entries: dict[str, dict[str, Any]] = {}
    platforms = runsc_platforms(binary)
    for platform in platforms:
        entries[f"runsc-{build}-{platform}"] = {
            "path": binary,
            "runtimeArgs": [*RUNSC_BASE_ARGS, f"--platform={platform}"],
        }
    if file_access_variants:
        entries[f"runsc-{build}-{platforms[0]}-exclusive"] = {
            "path": binary,
            "runtimeArgs": [*RUNSC_BASE_ARGS, f"--platform={platforms[0]}", "--file-access-mounts=exclusive"],
        }
    if switches:
        for suffix, args in switch_variants(runsc_flags(binary), platforms[0]).items():
            entries[f"runsc-{build}-{suffix}"] = {"path": binary, "runtimeArgs": [*RUNSC_BASE_ARGS, *args]}
    return entries


def merge_runtimes(config: dict[str, Any], wanted: dict[str, dict[str, Any]]) -> tuple[dict[str, Any], list[str]]:
    """Add ``wanted`` runtimes to a daemon.json document.

    A user's entry of the same name with a different definition is kept, never
    overwritten. Returns the new document and the names added.
    """
    merged = json.loads(json.dumps(config))
    runtimes = merged.setdefault("runtimes", {})
    added = [name for name in wanted if name not in runtimes]
    for name in added:
        runtimes[name] = wanted[name]
    return merged, added


def conflicts(config: dict[str, Any], wanted: dict[str, dict[str, Any]]) -> list[str]:
    """Names present in ``config`` with a definition other than shlib's."""
    have = config.get("runtimes", {})
    return [name for name, spec in wanted.items() if name in have and have[name] != spec]


def update_file(path: Path, wanted: dict[str, dict[str, Any]]) -> list[str]:
    """Merge ``wanted`` into the daemon.json at ``path`` (backed up first). Returns names added."""
    config: dict[str, Any] = {}
    if path.exists():
        text = path.read_text()
        config = json.loads(text) if text.strip() else {}
    merged, added = merge_runtimes(config, wanted)
    if added:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            shutil.copy2(path, path.with_name(path.name + ".shlib-backup"))
        tmp = path.with_name(path.name + ".shlib-tmp")
        tmp.write_text(json.dumps(merged, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, path)
    return added


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--daemon-json", type=Path, default=Path("/etc/docker/daemon.json"))
    parser.add_argument("--system-runsc", action="append", default=[], help="runsc binary to register")
    parser.add_argument("--extra-runsc", action="append", default=[], help="runsc binary, with file-access variant")
    parser.add_argument("--crun", help="crun binary to register as 'crun'")
    parser.add_argument("--kata-config", type=Path,
                        help="Kata configuration.toml to derive one variant per shared_fs / virtio_fs_cache from")
    parser.add_argument("--kata-dir", type=Path, default=Path("/opt/shlib/kata"),
                        help="where the Kata variants' configuration files are written")
    parser.add_argument("--kata-major", type=int, default=3, help="Kata major version (1: kata-runtime --kata-config)")
    parser.add_argument("--switch-variants", action="store_true",
                        help="also register one variant per gVisor switch (directfs, file access, overlay2, dcache)")
    args = parser.parse_args(argv)
    wanted: dict[str, dict[str, Any]] = {}
    for binary in args.system_runsc:
        if os.path.exists(binary):
            wanted.update(runsc_entries(binary, switches=args.switch_variants))
    for binary in args.extra_runsc:
        wanted.update(runsc_entries(binary, file_access_variants=True, switches=args.switch_variants))
    if args.crun and os.path.exists(args.crun):
        wanted["crun"] = {"path": args.crun}
    if args.kata_config:
        from shlib.collect.kata import write_variant_configs

        wanted.update(write_variant_configs(args.kata_config, args.kata_dir, args.kata_major))
    try:
        existing = json.loads(args.daemon_json.read_text() or "{}") if args.daemon_json.exists() else {}
    except json.JSONDecodeError as exc:
        print(f"{args.daemon_json} is not valid JSON ({exc}); fix or move it, then run again", file=sys.stderr)
        return 2
    for name in conflicts(existing, wanted):
        print(f"keeping your own definition of runtime '{name}' in {args.daemon_json}", file=sys.stderr)
    added = update_file(args.daemon_json, wanted)
    names = ", ".join(sorted(wanted))
    print(f"daemon.json changed: added {', '.join(added)}" if added else f"daemon.json unchanged ({names} registered)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
