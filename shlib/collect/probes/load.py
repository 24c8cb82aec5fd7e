# shlib probe: time the first import of Python packages in a fresh interpreter.
#
#   python3 -I -S -B load.py '{"lib": "/shlib/pylib", "modules": ["numpy"], "barrier": true, "hold": false}'
#
# Run isolated (-I: no PYTHON* variables, no user site, no script directory on sys.path), without the
# site module (-S: no site-packages of the image or host) and without writing bytecode (-B: the library
# is read-only, and native trials must not write into it either). `lib` is put first on sys.path by
# the probe itself. Same protocol as load.js: print "ready", wait for "go <epoch ms>" on stdin, import
# each module (timed with perf_counter_ns around importlib.import_module), print one JSON line, and
# with `hold` wait for one more stdin line (or EOF) before exiting 0. A module that fails to import is
# reported with its error; the others are still imported.
import importlib
import json
import os
import sys
import time

_PROBE_T0 = time.perf_counter()
_CLK_TCK = os.sysconf("SC_CLK_TCK")


def _process_age_ms():
    """ms since this process was created: now (CLOCK_BOOTTIME) minus /proc/self/stat's start time.

    Creation, not exec: a container runtime that forks its init and then execs Python (runc) is
    counted in, which Node's performance.now() origin is not.

    The start time is counted in whole clock ticks (1/CLK_TCK s, 10 ms on Linux), truncated: the middle
    of its tick is taken, so the age is known to +-half a tick (5 ms). None when the kernel's (or the
    sandbox's) clocks make no sense of it.
    """
    try:
        with open("/proc/self/stat", "rb") as fh:
            stat = fh.read()
        start_ticks = int(stat[stat.rindex(b")") + 2:].split()[19])
        age_ms = (time.clock_gettime(time.CLOCK_BOOTTIME) - (start_ticks + 0.5) / _CLK_TCK) * 1e3
    except (OSError, ValueError, IndexError, AttributeError):
        return None
    return age_ms if 0 <= age_ms < 600_000 else None


_AGE_MS = _process_age_ms()
#: The process's start on the wall clock, and the interpreter's start-up before this probe ran (ms).
_START_WALL_MS = None if _AGE_MS is None else time.time() * 1e3 - _AGE_MS
_BOOT_MS = None if _AGE_MS is None else _AGE_MS - (time.perf_counter() - _PROBE_T0) * 1e3


def _rss_bytes():
    try:
        with open("/proc/self/statm") as fh:
            return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _wall_ms():
    return time.time() * 1e3


def _wait_for_go():
    """Print ready, block until 'go <epoch ms>', then sleep until that wall-clock time; returns when go came."""
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    line = sys.stdin.buffer.readline().decode(errors="replace").split()
    received = _wall_ms()
    try:
        wait_ms = float(line[1]) - _wall_ms() if len(line) > 1 else 0.0
    except ValueError:
        wait_ms = 0.0
    if wait_ms > 0:
        time.sleep(wait_ms / 1e3)
    return received


def _stale_pyc(modules, lib, inside=True):
    """Modules loaded from the library (``inside``; else from elsewhere: the standard library) whose .pyc was
    absent or did not match its source, so that the import compiled them in memory."""
    from importlib.util import cache_from_source

    stale = 0
    for module in modules:
        source = getattr(module, "__file__", None) or ""
        if source.startswith(lib) != inside or not source.endswith(".py"):
            continue
        try:
            with open(cache_from_source(source), "rb") as fh:
                header = fh.read(16)
            st = os.stat(source)
            flags = int.from_bytes(header[4:8], "little")
            if flags == 0 and (int.from_bytes(header[8:12], "little") != int(st.st_mtime) & 0xFFFFFFFF
                               or int.from_bytes(header[12:16], "little") != st.st_size & 0xFFFFFFFF):
                stale += 1
        except OSError:
            stale += 1
    return stale


def _version(name):
    try:
        from importlib import metadata

        return metadata.version(name)
    except Exception:
        return None


def main():
    cfg = json.loads(sys.argv[1])
    lib = cfg["lib"].rstrip("/")
    sys.path.insert(0, lib)
    ready_wall_ms = _wall_ms()
    go_recv_wall_ms = _wait_for_go() if cfg.get("barrier") else None
    go_wall_ms = _wall_ms()
    cpu0 = time.process_time_ns()
    results = []
    loaded = []
    for name in cfg["modules"]:
        before = set(sys.modules)
        error = None
        t0 = time.perf_counter_ns()
        try:
            importlib.import_module(name)
        except BaseException as exc:  # noqa: BLE001 - a module's SystemExit is its failure, not the probe's
            if isinstance(exc, KeyboardInterrupt):
                raise
            error = f"{type(exc).__name__}: {exc}"
        t1 = time.perf_counter_ns()
        added = [sys.modules[m] for m in set(sys.modules) - before if sys.modules.get(m) is not None]
        loaded += added
        results.append({"module": name, "ok": error is None, "error": None if error is None else error[:2000],
                        "load_ms": (t1 - t0) / 1e6, "files": len(added),
                        "extension_modules": sum(1 for m in added
                                                 if (getattr(m, "__file__", None) or "").endswith(".so"))})
    proc_cpu_ms = (time.process_time_ns() - cpu0) / 1e6
    loaded_wall_ms = _wall_ms()
    rss = _rss_bytes()
    for res in results:
        res["version"] = _version(res["module"])
    out = {
        "probe": "load", "language": "python", "python": "{}.{}.{}".format(*sys.version_info[:3]),
        "implementation": sys.implementation.name, "cache_tag": sys.implementation.cache_tag,
        "boot_ms": _BOOT_MS, "boot_ms_resolution": 1e3 / _CLK_TCK,
        "process_start_wall_ms": _START_WALL_MS,
        "ready_wall_ms": ready_wall_ms,
        "go_recv_wall_ms": go_recv_wall_ms, "go_wall_ms": go_wall_ms, "loaded_wall_ms": loaded_wall_ms,
        "proc_cpu_ms": proc_cpu_ms, "rss_bytes": rss,
        "bytecode": {"dont_write_bytecode": sys.dont_write_bytecode, "pyc_stale_or_missing": _stale_pyc(loaded, lib),
                     "stdlib_pyc_stale_or_missing": _stale_pyc(loaded, lib, inside=False),
                     "isolated": bool(sys.flags.isolated), "no_site": bool(sys.flags.no_site)},
        "results": results,
    }
    sys.stdout.write(json.dumps(out) + "\n")
    sys.stdout.flush()
    if cfg.get("hold"):
        sys.stdin.buffer.readline()
    sys.stdout.flush()
    os._exit(0)  # no interpreter teardown of what the modules loaded (atexit handlers, threads)


if __name__ == "__main__":
    main()
