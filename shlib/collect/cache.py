"""Small JSON caches of facts that only change with a file or an engine object (key -> value).

Read tolerantly (a missing, unreadable or corrupt cache is empty: it is only a cache) and written
atomically (temp file + rename: a crash leaves the old cache or the new one). Keys name what the
value depends on (a binary's path, mtime and size; a volume's name and creation time), so a stale
entry is never read, only left behind.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from shlib.paths import cache_dir
from shlib.results.store import write_json

log = logging.getLogger(__name__)
_THREADS = threading.Lock()


def cache_file(name: str) -> Path:
    return cache_dir() / name


def read_cache(path: Path) -> dict[str, Any]:
    """The cached entries of ``path``; {} when it is missing, unreadable or not a JSON object."""
    try:
        known = json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.warning("ignoring the unreadable cache %s (%s); it is rewritten", path, exc)
        return {}
    if not isinstance(known, dict):
        log.warning("ignoring the cache %s (not a JSON object); it is rewritten", path)
        return {}
    return known


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """Hold the cache's lock (threads of this process, and other processes through a lock file)."""
    with _THREADS:
        try:
            fh = open(path.with_name(path.name + ".lock"), "a")  # noqa: SIM115 - closed below
        except OSError:
            yield  # no lock file possible: the rename still keeps the cache whole
            return
        try:
            fcntl.flock(fh, fcntl.LOCK_EX)
            yield
        finally:
            fh.close()


def add_to_cache(path: Path, key: str, value: Any) -> None:
    """Add one entry, atomically; entries another thread or process cached meanwhile are kept.

    Read, add and write happen under a lock, so writers side by side do not drop each other's entries.
    A cache that cannot be written only costs the work again next time.
    """
    try:
        with _locked(path):
            write_json(path, {**read_cache(path), key: value})
    except OSError as exc:
        log.warning("could not write the cache %s (%s)", path, exc)
