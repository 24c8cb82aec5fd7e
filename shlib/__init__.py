"""shlib: how fast do sandboxed container runtimes load a shared library volume?

The public API is imported lazily so that ``shlib.collect.daemon_json`` (used by the host set-up
before any dependency is installed) and the CLI start quickly.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_API = {
    "connect": "shlib.collect.engine",
    "EngineUnavailable": "shlib.errors",
    "ShlibError": "shlib.errors",
    "SpecError": "shlib.errors",
    "catalog": "shlib.collect.runtimes",
    "host_facts": "shlib.collect.host",
    "Spec": "shlib.spec.spec",
    "load_spec": "shlib.spec.spec",
    "preset": "shlib.spec.spec",
    "run_experiment": "shlib.collect.runner",
    "run_campaign": "shlib.collect.campaign",
    "resolve_engine": "shlib.collect.engine",
    "load_results": "shlib.results.store",
    "analyze_frame": "shlib.analysis.analyze",
    "analyze_runs": "shlib.analysis.analyze",
    "analyze_run": "shlib.present.export",
    "build_report": "shlib.present.report",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(importlib.import_module(_API[name]), name)
    raise AttributeError(f"module 'shlib' has no attribute {name!r}")
