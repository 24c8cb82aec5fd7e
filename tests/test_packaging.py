"""An installed shlib (a wheel, not the checkout) has everything it reads: presets, the probe, the reference
claims and the notebooks, so that `shlib analyze` and `shlib report` work outside the checkout."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DATASET = ROOT / "data" / "runs" / "quick"


def test_every_subpackage_is_in_the_package_list():
    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "shlib").rglob("__init__.py")}
    assert listed == found | {"shlib.notebooks"}


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """shlib built as a wheel from this checkout and installed (no dependencies) into a folder of its own."""
    where = tmp_path_factory.mktemp("installed")
    source = where / "source"  # a copy: building in place would leave build/ and *.egg-info in the checkout
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "shlib", "notebooks"):
        copy = shutil.copytree if (ROOT / name).is_dir() else shutil.copy2
        copy(ROOT / name, source / name, **({"ignore": shutil.ignore_patterns("__pycache__")}
                                            if (ROOT / name).is_dir() else {}))
    wheels = where / "wheels"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", str(source), "-w", str(wheels)],
                   check=True, capture_output=True, timeout=600)
    target = where / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
                    *map(str, wheels.glob("shlib-*.whl"))], check=True, capture_output=True, timeout=600)
    return target


def run_installed(target: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(target)}
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


def test_the_wheel_reads_its_own_data_not_the_checkout(installed, tmp_path):
    code = ("import json, shlib; from shlib.present.notebooks import all_notebooks; "
            "from shlib.analysis.replication import reference_path; from shlib.spec.spec import preset_names; "
            "print(json.dumps([shlib.__file__, [str(p) for p in all_notebooks()], str(reference_path()), "
            "preset_names()]))")
    done = run_installed(installed, tmp_path, "-c", code)
    assert done.returncode == 0, done.stderr
    module, notebooks, reference, presets = json.loads(done.stdout)
    assert Path(module).is_relative_to(installed) and Path(reference).is_relative_to(installed)
    shipped = sorted(p.name for p in (ROOT / "notebooks").glob("*.ipynb"))
    assert sorted(Path(n).name for n in notebooks) == shipped and len(shipped) >= 5
    assert all(Path(n).is_relative_to(installed) for n in notebooks)
    assert {"quick", "paper", "smoke"} <= set(presets)


@pytest.mark.slow
def test_the_wheel_analyses_and_reports_a_copy_of_the_quick_run(installed, tmp_path):
    run = shutil.copytree(DATASET, tmp_path / "quick")
    analysed = run_installed(installed, tmp_path, "-m", "shlib.cli", "analyze", str(run))
    assert analysed.returncode == 0, analysed.stderr
    assert (run / "analysis" / "replication.csv").exists() and "runtimes" in analysed.stdout
    reported = run_installed(installed, tmp_path, "-m", "shlib.cli", "report", str(run), "--out", str(tmp_path / "r"))
    assert reported.returncode == 0, reported.stderr
    manifest = json.loads((tmp_path / "r" / "report.json").read_text())
    assert [n["status"] for n in manifest["notebooks"]] == ["ok"] * len(manifest["notebooks"])
    assert (tmp_path / "r" / "index.html").exists()
