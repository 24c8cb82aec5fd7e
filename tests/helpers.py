"""Helpers shared by the tests (importable: pytest puts tests/ on sys.path)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

PAPER_LODASH = "lodash@4.17.20"


def no_engine(reason: str) -> None:
    """Skip with the reason, or fail under CI=true (CI starts the engine, so it must be there)."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"CI=true but the Docker engine is unusable: {reason}")
    pytest.skip(f"no Docker engine here: {reason}")


def shlib_containers(client, label: str = "shlib.managed") -> list:
    return client.containers.list(all=True, filters={"label": label})


def assert_run_left_nothing(client, run_dir) -> None:
    """No container of the run in ``run_dir`` survives it."""
    run_id = json.loads((Path(run_dir) / "metadata.json").read_text())["run_id"]
    left = [c.name for c in shlib_containers(client, f"shlib.run_id={run_id}")]
    assert not left, f"run {run_id} left containers behind: {left}"
