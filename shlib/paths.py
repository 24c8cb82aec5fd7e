"""Where shlib keeps what it downloads and builds (one place, overridable)."""

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
    """The project checkout (holds data/, notebooks/); meaningful for an editable install."""
    return Path(__file__).resolve().parent.parent
