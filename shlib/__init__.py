"""shlib: how fast do sandboxed container runtimes load a shared library volume?

The public API is imported lazily so that ``shlib.daemon_json`` (used by the host set-up
before any dependency is installed) and the CLI start quickly.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_API = {
    "connect": "shlib.engine",
    "EngineUnavailable": "shlib.errors",
    "ShlibError": "shlib.errors",
    "SpecError": "shlib.errors",
    "catalog": "shlib.runtimes",
    "host_facts": "shlib.host",
    "Spec": "shlib.config",
    "load_spec": "shlib.config",
    "preset": "shlib.config",
    "run_experiment": "shlib.runner",
    "load_results": "shlib.results",
    "analyze_run": "shlib.analyze",
    "build_report": "shlib.report",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'shlib' has no attribute {name!r}")
