"""Analysis reads results files only: importing it never pulls in the collection side."""

from __future__ import annotations

import subprocess
import sys


def test_analysis_does_not_import_collection_code():
    code = ("import sys, shlib.analyze, shlib.stats, shlib.plots, shlib.simulate, shlib.results; "
            "bad = sorted(m for m in sys.modules if m == 'docker' or m in "
            "('shlib.runner', 'shlib.containers', 'shlib.engine', 'shlib.image', 'shlib.volume')); print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]", out
