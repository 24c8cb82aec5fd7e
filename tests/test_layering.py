"""The house: each step of the data's journey is a subpackage, and imports point one way only.

    spec -> collect -> results <- analysis <- present <- cli

collect/ never imports analysis/ or present/; analysis/ imports only results/ (and errors);
results/ imports nothing of shlib but errors. Every import is checked, function-level ones too.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "shlib"
#: What each layer may import besides itself (top-level modules named by their own name).
ALLOWED = {
    "spec": {"errors", "paths"},
    "results": {"errors"},
    "collect": {"spec", "results", "errors", "paths"},
    "analysis": {"results", "errors"},
    "present": {"analysis", "results", "spec", "collect", "errors", "paths"},
    "simulate": {"spec", "results", "errors"},
}


def layer_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "shlib" and len(parts) > 1 else None


def shlib_imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every shlib import in a file, at any depth."""
    found = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] if node.module != "shlib" else [f"shlib.{a.name}" for a in node.names]
            found += [(node.lineno, n) for n in names if n.startswith("shlib.")]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names if a.name.startswith("shlib.")]
    return found


def violations(root: Path = PACKAGE, allowed: dict[str, set[str]] = ALLOWED) -> list[str]:
    bad = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        layer = rel.parts[0].removesuffix(".py")
        if layer not in allowed:
            continue
        for line, module in shlib_imports(path):
            target = layer_of(module)
            if target not in (layer, "__version__", None) and target not in allowed[layer]:
                bad.append(f"shlib/{rel}:{line} ({layer}) imports {module}")
    return bad


def test_every_import_points_down_the_journey():
    assert violations() == []


def test_the_check_catches_an_arrow_the_wrong_way(tmp_path):
    (tmp_path / "collect").mkdir()
    (tmp_path / "collect" / "runner.py").write_text("def f():\n    from shlib.analysis.ratios import ratios\n")
    (tmp_path / "analysis").mkdir()
    (tmp_path / "analysis" / "ratios.py").write_text("from shlib.collect import engine\n")
    found = violations(tmp_path)
    assert found == ["shlib/analysis/ratios.py:1 (analysis) imports shlib.collect",
                     "shlib/collect/runner.py:2 (collect) imports shlib.analysis.ratios"]


@pytest.mark.parametrize("package, forbidden", [
    ("shlib.analysis.analyze", ("docker", "shlib.collect", "shlib.present")),
    # the collection path reaches its first container without the heavy analysis stack (start-up goal)
    ("shlib.collect.runner", ("shlib.analysis", "shlib.present", "scipy", "pandas", "pyarrow", "numpy")),
])
def test_importing_a_layer_loads_nothing_it_must_not(package, forbidden):
    code = (f"import sys, {package}; "
            f"print(sorted({{m for m in sys.modules for f in {forbidden!r} if m == f or m.startswith(f + '.')}}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip()
    assert out == "[]", out
