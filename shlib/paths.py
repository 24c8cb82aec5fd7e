"""Where shlib keeps what it downloads, builds and writes (one place, each overridable)."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """Downloads and npm installs: $SHLIB_CACHE, else $XDG_CACHE_HOME/shlib, else ~/.cache/shlib."""
    base = os.environ.get("SHLIB_CACHE") or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "shlib"
    path = Path(base)
    path.mkdir(parents=True, exist_ok=True)
    return path


def repo_root() -> Path:
    """The project checkout holding this package (data/, notebooks/); meaningful for an editable install."""
    return Path(__file__).resolve().parent.parent


def project_dir() -> Path:
    """Where runs/ and reports/ go: the checkout when shlib runs from one, else the working directory.

    A notebook runs with its own folder as working directory in JupyterLab; results must still land in
    the project's runs/, not in notebooks/runs/.
    """
    root = repo_root()
    if (root / "pyproject.toml").is_file() and (root / "shlib" / "__init__.py").is_file():
        return root
    return Path.cwd()


def runs_dir() -> Path:
    """Default parent of results directories: $SHLIB_RUNS, else <project>/runs."""
    return Path(os.environ.get("SHLIB_RUNS") or project_dir() / "runs")


def reports_dir() -> Path:
    """Default parent of reports: $SHLIB_REPORTS, else <project>/reports."""
    return Path(os.environ.get("SHLIB_REPORTS") or project_dir() / "reports")
