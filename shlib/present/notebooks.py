"""The project's notebooks as files: where they are, which kernel runs them, executing and stripping them.

Notebooks are committed clean (no outputs, no execution counts, no run metadata) so that diffs show
narrative and code only; executed copies go to reports/. ``python -m shlib.present.notebooks check`` lists
committed notebooks that are not clean (tests/test_notebooks.py runs it), ``python -m shlib.present.notebooks
strip`` cleans them in place.

The notebooks name the Jupyter kernel ``shlib`` (``make kernel`` registers this environment under that
name, for JupyterLab). Batch runs must not depend on that registration: ``kernel_for_this_environment``
returns ``shlib`` only when it runs this interpreter, and otherwise a kernel that does.
"""

from __future__ import annotations

import importlib.util
import os
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import nbformat

from shlib.paths import repo_root

KERNEL_NAME = "shlib"
KERNEL_DISPLAY_NAME = "Python (shlib)"
#: Notebooks ``shlib report`` executes on a results directory, in order.
ANALYSIS_NOTEBOOKS = ("02-analysis", "03-concurrency", "04-gvisor-generations", "05-where-the-time-goes",
                      "06-across-engines")
#: Notebook metadata kept in committed notebooks; everything else (papermill, widgets) is run state.
KEEP_NOTEBOOK_METADATA = ("kernelspec", "language_info")
#: Cell metadata kept in committed notebooks (tags mark the parameters cell and the cells tests read).
KEEP_CELL_METADATA = ("tags",)


def notebooks_dir() -> Path:
    """The notebooks, shipped as package data ``shlib.notebooks`` (the checkout's notebooks/ when editable)."""
    spec = importlib.util.find_spec("shlib.notebooks")
    if spec is not None and spec.submodule_search_locations:
        return Path(next(iter(spec.submodule_search_locations)))
    return repo_root() / "notebooks"  # a checkout on sys.path that was never installed


def notebook_path(name: str) -> Path:
    """``notebooks/<name>.ipynb`` (name with or without the suffix)."""
    path = notebooks_dir() / (name if name.endswith(".ipynb") else f"{name}.ipynb")
    if not path.exists():
        known = ", ".join(p.stem for p in sorted(notebooks_dir().glob("*.ipynb")))
        raise FileNotFoundError(f"notebook {name!r} not found in {notebooks_dir()}; known: {known}")
    return path


def all_notebooks() -> list[Path]:
    return sorted(notebooks_dir().glob("*.ipynb"))


# ---------------------------------------------------------------------------------------------------
# Kernel


def _runs_this_python(argv: list[str]) -> bool:
    """Does a kernelspec's command start this interpreter? (jupyter_client maps a bare 'python' to it.)"""
    if not argv:
        return False
    major, minor = sys.version_info[:2]
    if argv[0] in ("python", f"python{major}", f"python{major}.{minor}"):
        return True
    # Compare without resolving symlinks: every venv's python links to the same system binary.
    return Path(os.path.abspath(argv[0])).parent == Path(os.path.abspath(sys.executable)).parent


def kernel_for_this_environment(register: bool = False) -> str:
    """A kernel name that runs this Python: ``shlib`` when registered for it, else the native ``python3``.

    With ``register=True`` and neither fitting, ``shlib`` is registered in this environment (sys.prefix),
    as ``make kernel`` does.
    """
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    manager = KernelSpecManager()
    for name in (KERNEL_NAME, "python3"):
        try:
            spec = manager.get_kernel_spec(name)
        except NoSuchKernel:
            continue
        if spec.language.lower() == "python" and _runs_this_python(list(spec.argv)):
            return name
    if register:
        register_kernel()
        return KERNEL_NAME
    raise RuntimeError(f"no Jupyter kernel runs {sys.executable}; register one with 'make kernel' "
                       f"({sys.executable} -m ipykernel install --sys-prefix --name {KERNEL_NAME})")


def register_kernel() -> Path:
    """Register this environment as the Jupyter kernel ``shlib`` (in sys.prefix, like ``make kernel``)."""
    from ipykernel.kernelspec import install

    return Path(install(kernel_name=KERNEL_NAME, display_name=KERNEL_DISPLAY_NAME, prefix=sys.prefix))


# ---------------------------------------------------------------------------------------------------
# Execution


def execute(notebook: str | Path, output: str | Path, parameters: Mapping[str, Any] | None = None,
            kernel_name: str | None = None, timeout_s: float | None = 1800, log_output: bool = False) -> Any:
    """Run a notebook with papermill (parameters recorded in the output's metadata); return the executed notebook.

    ``notebook`` is a path or a name in notebooks/. Raises papermill's PapermillExecutionError when a
    cell fails; the output notebook is written either way.
    """
    import papermill as pm

    source = Path(notebook) if Path(notebook).suffix == ".ipynb" and Path(notebook).exists() \
        else notebook_path(str(notebook))
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    return pm.execute_notebook(
        str(source), str(output), parameters=dict(parameters or {}),
        kernel_name=kernel_name or kernel_for_this_environment(register=True),
        progress_bar=False, log_output=log_output, execution_timeout=timeout_s, report_mode=False,
    )


def parameters_of(notebook: str | Path) -> dict[str, dict[str, Any]]:
    """The parameters a notebook declares (papermill's inspection): name -> type, default, help."""
    import papermill as pm

    path = Path(notebook) if Path(notebook).exists() else notebook_path(str(notebook))
    return {name: dict(p) for name, p in pm.inspect_notebook(str(path)).items()}


# ---------------------------------------------------------------------------------------------------
# Clean notebooks


def problems(path: str | Path) -> list[str]:
    """Why a notebook is not clean: outputs, execution counts, run metadata, or not one parameters cell."""
    nb = nbformat.read(str(path), as_version=4)
    found = []
    for i, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and cell.get("outputs"):
            found.append(f"cell {i} has outputs")
        if cell.cell_type == "code" and cell.get("execution_count") is not None:
            found.append(f"cell {i} has an execution count")
        extra = set(cell.get("metadata", {})) - set(KEEP_CELL_METADATA)
        if extra:
            found.append(f"cell {i} has metadata {sorted(extra)}")
    extra = set(nb.metadata) - set(KEEP_NOTEBOOK_METADATA)
    if extra:
        found.append(f"notebook metadata has {sorted(extra)}")
    kernel = nb.metadata.get("kernelspec", {}).get("name")
    if kernel != KERNEL_NAME:
        found.append(f"kernelspec is {kernel!r}, not {KERNEL_NAME!r}")
    tagged = [i for i, c in enumerate(nb.cells) if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(tagged) != 1:
        found.append(f"{len(tagged)} cells are tagged 'parameters' (exactly one is needed)")
    return found


def strip(path: str | Path) -> bool:
    """Clean a notebook in place (outputs, execution counts, run metadata); True when it changed."""
    path = Path(path)
    before = path.read_text()
    nb = nbformat.read(str(path), as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
        cell.metadata = {k: v for k, v in cell.get("metadata", {}).items() if k in KEEP_CELL_METADATA}
    nb.metadata = {k: v for k, v in nb.metadata.items() if k in KEEP_NOTEBOOK_METADATA}
    nb.metadata["kernelspec"] = {"name": KERNEL_NAME, "display_name": KERNEL_DISPLAY_NAME, "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    after = nbformat.writes(nb) + "\n"
    if after != before:
        path.write_text(after)
    return after != before


def main(argv: Iterable[str] | None = None) -> int:
    """``python -m shlib.present.notebooks (check|strip) [NOTEBOOK ...]``; default: every notebook in notebooks/."""
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in ("check", "strip"):
        print("usage: python -m shlib.present.notebooks (check|strip) [NOTEBOOK ...]", file=sys.stderr)
        return 2
    paths = [Path(p) for p in args[1:]] or all_notebooks()
    status = 0
    for path in paths:
        if args[0] == "strip":
            if strip(path):
                print(f"stripped {path}")
            left = problems(path)
        else:
            left = problems(path)
        if left:
            status = 1
            print(f"{path}: " + "; ".join(left), file=sys.stderr)
    return status


if __name__ == "__main__":
    sys.exit(main())
