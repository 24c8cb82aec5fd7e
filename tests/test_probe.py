"""The probe, run by the host's node: one JSON line, per-module errors, the barrier."""

from __future__ import annotations

import json
import shutil
import subprocess
from importlib import resources
from pathlib import Path

import pytest

NODE = shutil.which("node")
pytestmark = pytest.mark.skipif(NODE is None, reason="no node on this host")
PROBE = str(resources.files("shlib.collect.probes").joinpath("load.js"))


def _package(root: Path, name: str, files: dict[str, str], **fields: str) -> None:
    pkg = root / "node_modules" / name
    pkg.mkdir(parents=True)
    (pkg / "package.json").write_text(json.dumps({"name": name, "version": "1.0.0", **fields}))
    for rel, text in files.items():
        (pkg / rel).write_text(text)


@pytest.fixture
def lib(tmp_path: Path) -> Path:
    _package(tmp_path, "fine", {"index.js": "module.exports = require('./dep');", "dep.js": "module.exports = 1;"})
    _package(tmp_path, "throws", {"index.js": "throw new Error('boom on load');"})
    _package(tmp_path, "esm-only", {"index.mjs": "export default 42;"}, type="module",
             exports='{"import": "./index.mjs"}')
    pkg = tmp_path / "node_modules" / "esm-only" / "package.json"
    pkg.write_text(json.dumps({"name": "esm-only", "version": "2.0.0", "type": "module",
                               "exports": {".": {"import": "./index.mjs"}}}))
    return tmp_path


def _probe(lib: Path, modules: list[str], stdin: str | None = None, barrier: bool = False) -> dict:
    arg = json.dumps({"lib": str(lib), "modules": modules, "barrier": barrier})
    out = subprocess.run([NODE, PROBE, arg], input=stdin, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    lines = [line for line in out.stdout.splitlines() if line.strip()]
    assert len(lines) == (2 if barrier else 1), lines  # "ready" only with the barrier
    return json.loads(lines[-1])


def test_one_json_line_with_timings_and_files(lib):
    out = _probe(lib, ["fine"])
    (res,) = out["results"]
    assert res["ok"] and res["module"] == "fine" and res["version"] == "1.0.0"
    assert res["files"] == 2 and 0 < res["load_ms"] < 10_000
    assert out["node"].startswith("v") and out["boot_ms"] > 0 and out["rss_bytes"] > 1_000_000


def test_a_failing_module_does_not_stop_the_others(lib):
    out = _probe(lib, ["throws", "missing-module", "fine", "esm-only"])
    res = {r["module"]: r for r in out["results"]}
    assert not res["throws"]["ok"] and "boom on load" in res["throws"]["error"]
    assert not res["missing-module"]["ok"] and "MODULE_NOT_FOUND" in res["missing-module"]["error"]
    assert res["fine"]["ok"]
    assert res["esm-only"]["ok"] and res["esm-only"]["version"] == "2.0.0"


def test_barrier_waits_for_go_and_honours_the_start_time(lib):
    import time

    start_at = time.time() * 1000 + 400
    out = _probe(lib, ["fine"], stdin=f"go {start_at:.3f}\n", barrier=True)
    assert out["go_wall_ms"] >= start_at - 1  # waited for the shared start time
    assert out["go_wall_ms"] - start_at < 200
