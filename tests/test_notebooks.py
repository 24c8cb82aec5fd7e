"""The notebooks: committed clean, parameters documented, run by papermill, and they show what they promise.

Analysis notebooks run on the committed dataset data/runs/quick (and on a simulated run that lacks
concurrency levels and gVisor); 00-environment and 01-collect run against the real Docker engine
(skipped without one, failed under CI=true). Each run's outputs are read back through the cells'
tags (``ratio-table``, ``headline``, ...), so a notebook that runs but shows nothing fails.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nbformat
import pytest
from papermill.exceptions import PapermillExecutionError

from shlib.paths import repo_root
from shlib.present import notebooks
from shlib.results.store import load_results

DATASET = repo_root() / "data" / "runs" / "quick"
EXPECTED = ["00-environment", "01-collect", "02-analysis", "03-concurrency", "04-gvisor-generations",
            "05-where-the-time-goes", "06-across-engines"]
ANALYSIS = list(notebooks.ANALYSIS_NOTEBOOKS)
RESAMPLES = 200
#: A subset of the dataset's runtimes that still holds two gVisor builds and two platforms of one build.
SUBSET = ["runc", "native", "runsc-20221219-ptrace", "runsc-20240729-ptrace", "runsc-20240729-systrap"]
PAPERMILL = str(Path(sys.executable).with_name("papermill"))


# ---------------------------------------------------------------------------------------------------
# Helpers


def dataset() -> Path:
    assert (DATASET / "metadata.json").exists(), (
        f"the committed dataset {DATASET} is missing: the analysis notebooks' default run_dir is gone")
    return DATASET


def cells_tagged(nb, tag: str) -> list:
    return [c for c in nb.cells if tag in c.get("metadata", {}).get("tags", [])]


def output_of(nb, tag: str, mime: str) -> str:
    """The ``mime`` output of the one cell tagged ``tag`` (fails when absent)."""
    cells = cells_tagged(nb, tag)
    assert len(cells) == 1, f"expected one cell tagged {tag!r}, found {len(cells)}"
    for out in cells[0].get("outputs", []):
        if mime in out.get("data", {}):
            return str(out["data"][mime])
    shown = [list(o.get("data", {})) for o in cells[0].outputs]
    raise AssertionError(f"cell {tag!r} shows no {mime}; outputs: {shown}")


def table_rows(html: str) -> int:
    """Data rows of a pandas HTML table."""
    body = html.split("<tbody>", 1)[1] if "<tbody>" in html else ""
    return body.count("<tr")


def check_cell_index(nb_path: Path) -> int:
    """Index, in the executed notebook, of the check cell: the first after the parameters (and papermill's)."""
    nb = nbformat.read(str(nb_path), as_version=4)
    tags = [c.get("metadata", {}).get("tags", []) for c in nb.cells]
    tags = [t for t in tags if "papermill-error-cell-tag" not in t]  # error banners papermill adds after the run
    injected = next(i for i, t in enumerate(tags) if "injected-parameters" in t)
    assert "check-parameters" in tags[injected + 1]
    return injected + 1


def execute(name: str, out: Path, **parameters):
    kernel = notebooks.kernel_for_this_environment()
    return notebooks.execute(name, out, parameters, kernel_name=kernel, timeout_s=600)


def code_cells(path: Path) -> list[str]:
    nb = nbformat.read(str(path), as_version=4)
    return [c.source for c in nb.cells if c.cell_type == "code"]


def parse_cell(source: str) -> ast.Module:
    """A code cell as Python (IPython magics such as %matplotlib dropped)."""
    return ast.parse("\n".join(line for line in source.splitlines() if not line.lstrip().startswith("%")))


# ---------------------------------------------------------------------------------------------------
# Committed form


def test_the_notebooks_exist():
    assert [p.stem for p in notebooks.all_notebooks()] == EXPECTED


@pytest.mark.parametrize("name", EXPECTED)
def test_committed_notebook_is_clean(name):
    left = notebooks.problems(notebooks.notebook_path(name))
    assert not left, (f"notebooks/{name}.ipynb is not clean: {'; '.join(left)}. "
                      "Run: .venv/bin/python -m shlib.present.notebooks strip")


def test_strip_cleans_an_executed_notebook(tmp_path):
    executed = tmp_path / "nb.ipynb"
    nb = nbformat.read(str(notebooks.notebook_path("02-analysis")), as_version=4)
    nb.metadata["papermill"] = {"parameters": {"run_dir": "x"}}
    nb.metadata["kernelspec"]["name"] = "python3"
    code = next(c for c in nb.cells if c.cell_type == "code")
    code.execution_count = 3
    code.outputs = [nbformat.v4.new_output("stream", text="hello")]
    code.metadata["papermill"] = {"duration": 1.0}
    nbformat.write(nb, str(executed))
    assert notebooks.problems(executed)
    assert notebooks.strip(executed) is True
    assert notebooks.problems(executed) == []
    assert notebooks.strip(executed) is False
    assert notebooks.main(["check", str(executed)]) == 0


@pytest.mark.parametrize("name", EXPECTED)
def test_notebook_holds_calls_not_logic(name):
    """One parameters cell, each default annotated and explained; no function or class definitions."""
    path = notebooks.notebook_path(name)
    nb = nbformat.read(str(path), as_version=4)
    tagged = cells_tagged(nb, "parameters")
    assert len(tagged) == 1
    for line in tagged[0].source.splitlines():
        if line.strip():
            assert re.match(r"^\w+: \w+ = .+  # \S", line), f"parameter line not 'name: type = value  # help': {line}"
    for source in code_cells(path):
        for node in ast.walk(parse_cell(source)):
            assert not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef | ast.Lambda), (
                f"{name}: a notebook holds calls, not definitions; move this into shlib:\n{source}")
    index = nb.cells.index(tagged[0])
    following = nb.cells[index + 1]
    assert "check-parameters" in following.metadata.get("tags", []) and "params." in following.source, (
        f"{name}: the cell right after the parameters must check them with shlib.present.params "
        "(tag: check-parameters)")


@pytest.fixture(scope="module")
def help_texts() -> dict[str, str]:
    """``papermill --help-notebook`` of every notebook: papermill's own command, invoked in-process."""
    from click.testing import CliRunner
    from papermill.cli import papermill

    texts = {}
    for name in EXPECTED:
        done = CliRunner().invoke(papermill, ["--help-notebook", str(notebooks.notebook_path(name))])
        assert done.exit_code == 0, done.output
        texts[name] = " ".join(done.output.split())  # click wraps long help lines
    return texts


def test_papermill_command_shows_help(tmp_path):
    """The installed command itself (once: it takes seconds to start)."""
    done = subprocess.run([PAPERMILL, "--help-notebook", str(notebooks.notebook_path("02-analysis"))],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "Parameters inferred for notebook" in done.stdout and "run_dir: str" in done.stdout


@pytest.mark.parametrize("name", EXPECTED)
def test_help_notebook_explains_every_parameter(name, help_texts):
    path = notebooks.notebook_path(name)
    nb = nbformat.read(str(path), as_version=4)
    declared = [t.target.id for t in parse_cell(cells_tagged(nb, "parameters")[0].source).body
                if isinstance(t, ast.AnnAssign)]
    assert declared
    text = help_texts[name]
    inspected = notebooks.parameters_of(path)
    assert list(inspected) == declared
    for param in declared:
        help_text = inspected[param]["help"]
        assert len(help_text) > 15, f"{name}: parameter {param} has no real explanation"
        assert f"{param}: {inspected[param]['inferred_type_name']}" in text
        assert " ".join(help_text.split()) in text, f"{name}: --help-notebook does not explain {param}"


@pytest.mark.parametrize("name", ANALYSIS)
def test_analysis_notebook_defaults_are_the_packages_defaults(name):
    """papermill needs literals in the parameters cell: they must equal shlib.analysis.defaults (one source)."""
    from shlib.analysis import defaults

    inspected = notebooks.parameters_of(notebooks.notebook_path(name))
    assert ast.literal_eval(inspected["seed"]["default"]) == defaults.DEFAULT_SEED
    assert ast.literal_eval(inspected["n_resamples"]["default"]) == defaults.DEFAULT_RESAMPLES
    assert ast.literal_eval(inspected["baseline"]["default"]) == defaults.DEFAULT_BASELINE


def test_kernel_falls_back_to_this_interpreter(monkeypatch):
    """Without a 'shlib' kernelspec, the kernel chosen still runs this Python."""
    from jupyter_client import kernelspec

    real = kernelspec.KernelSpecManager

    class WithoutShlib(real):  # type: ignore[misc, valid-type]
        def get_kernel_spec(self, kernel_name):
            if kernel_name == notebooks.KERNEL_NAME:
                raise kernelspec.NoSuchKernel(kernel_name)
            return super().get_kernel_spec(kernel_name)

    monkeypatch.setattr(kernelspec, "KernelSpecManager", WithoutShlib)
    name = notebooks.kernel_for_this_environment()
    assert name != notebooks.KERNEL_NAME
    assert notebooks._runs_this_python(list(real().get_kernel_spec(name).argv))
    assert json.loads(notebooks.notebook_path("02-analysis").read_text())["metadata"]["kernelspec"]["name"] == "shlib"


# ---------------------------------------------------------------------------------------------------
# Analysis notebooks on the committed dataset


@pytest.fixture(scope="module")
def analysed(tmp_path_factory) -> dict[str, tuple[object, Path]]:
    """02, 03 and 04 executed on the committed dataset (in parallel: most of the time is kernel start-up)."""
    out = tmp_path_factory.mktemp("analysis")
    run_dir = str(dataset())

    def one(name: str):
        figures = out / "figures" / name
        execute(name, out / f"{name}.ipynb", run_dir=run_dir, runtimes=SUBSET, n_resamples=RESAMPLES,
                figures_dir=str(figures))
        return name, (nbformat.read(str(out / f"{name}.ipynb"), as_version=4), figures)

    with ThreadPoolExecutor(max_workers=len(ANALYSIS)) as pool:
        return dict(pool.map(one, ANALYSIS))


@pytest.mark.parametrize("name", ANALYSIS)
def test_analysis_notebook_shows_a_ratio_table_and_saves_figures(analysed, name):
    nb, figures = analysed[name]
    assert table_rows(output_of(nb, "ratio-table", "text/html")) > 0
    pngs = sorted(figures.glob("*.png"))
    assert pngs and all(p.stat().st_size > 5000 for p in pngs), f"no real figure in {figures}"
    assert sorted(p.stem for p in figures.glob("*.svg")) == [p.stem for p in pngs]
    recorded = nb.metadata["papermill"]["parameters"]
    assert recorded["run_dir"] == str(DATASET) and recorded["runtimes"] == SUBSET


def test_analysis_shows_the_reading_replication_and_figures(analysed):
    nb, figures = analysed["02-analysis"]
    reading = output_of(nb, "headline", "text/markdown")
    assert "computed from the data" in reading
    assert re.search(r"runsc-20221219-ptrace loads modules [\d.]+x \[[\d.]+, [\d.]+\]", reading), reading
    replication = output_of(nb, "replication-table", "text/html")
    assert "16x slower than Docker" in replication and table_rows(replication) >= 1
    assert {p.stem for p in figures.glob("*.png")} == {"load_times", "ratios", "distributions", "languages"}
    assert "image/png" in cells_tagged(nb, "figure-ratios")[0].outputs[0]["data"]
    languages = output_of(nb, "language-reading", "text/markdown")
    if set(load_results(DATASET)[0]["language"].astype(str)) == {"node"}:
        assert languages.startswith("**One language only** (node)"), languages
    else:
        assert "Sandbox penalty by language" in languages and "python" in languages, languages


def test_concurrency_notebook_compares_levels(analysed):
    nb, figures = analysed["03-concurrency"]
    assert output_of(nb, "factor-note", "text/markdown") == ""  # the dataset has concurrency 1 and 4
    table = output_of(nb, "ratio-table", "text/html")
    assert "c=1" in table and "c=4" in table
    assert "with 1 container(s) at once" in output_of(nb, "reading", "text/markdown")
    assert table_rows(output_of(nb, "skew-table", "text/html")) > 0
    assert (figures / "scaling.png").exists()


def test_gvisor_notebook_separates_build_and_platform(analysed):
    nb, _ = analysed["04-gvisor-generations"]
    variants = output_of(nb, "variants-table", "text/html")
    assert "20221219" in variants and "systrap" in variants
    contrasts = output_of(nb, "contrast-table", "text/html")
    assert "build" in contrasts and "platform" in contrasts
    assert "build 20221219 -> 20240729" in output_of(nb, "reading", "text/markdown")
    assert output_of(nb, "switch-table", "text/html")  # the switch section runs (empty without switch variants)
    assert "switch" in output_of(nb, "switch-reading", "text/markdown").lower()


def test_time_notebook_says_what_older_results_lack_and_shows_what_they_have(analysed):
    nb, figures = analysed["05-where-the-time-goes"]
    reading = output_of(nb, "timeline-reading", "text/markdown")
    assert "These results lack" in reading and "`create_ms`" in reading and "`cpu_ms`" in reading
    assert "boot_ms" in output_of(nb, "phase-table", "text/html")  # the quick dataset has boot and load
    assert "No CPU ratios" in output_of(nb, "cpu-reading", "text/markdown")
    assert "c=4" in output_of(nb, "ratio-table", "text/html")  # wall ratios by concurrency still shown
    assert "No cost model" in output_of(nb, "cost-reading", "text/markdown")
    assert {p.stem for p in figures.glob("*.png")} == {"phases", "cpu_vs_wall", "cost_model_lomo"}


@pytest.fixture(scope="module")
def sparse_run(tmp_path_factory) -> Path:
    """A simulated run with one concurrency level and no gVisor: notebooks must say so and complete."""
    from shlib.simulate import Scenario, simulate_results, write_results_dir

    frame = simulate_results(Scenario(speeds={"runc": 1.0, "native": 0.9}, concurrency=(1,), trials_per_group=8),
                             seed=3)
    return write_results_dir(frame, tmp_path_factory.mktemp("sparse") / "run", {"run_id": "sparse", "status":
                                                                                 "complete"})


def test_notebooks_say_what_the_data_lacks_and_complete(sparse_run, tmp_path):
    def one(name):
        execute(name, tmp_path / f"{name}.ipynb", run_dir=str(sparse_run), n_resamples=RESAMPLES)
        return nbformat.read(str(tmp_path / f"{name}.ipynb"), as_version=4)

    with ThreadPoolExecutor(max_workers=2) as pool:
        concurrency, gvisor = pool.map(one, ["03-concurrency", "04-gvisor-generations"])
    assert "1 level(s) of `concurrency` (1)" in output_of(concurrency, "factor-note", "text/markdown")
    assert "No gVisor runtime in this run" in output_of(gvisor, "reading", "text/markdown")
    assert "this run is simulated" in output_of(concurrency, "check-parameters", "text/markdown")
    assert output_of(gvisor, "contrast-table", "text/html")  # an empty table, shown


# ---------------------------------------------------------------------------------------------------
# Bad parameters stop the notebook at the check cell with a message naming the parameter


BAD = [
    ("02-analysis", {"run_dir": "/nonexistent/run"}, r"run_dir: results directory /nonexistent/run does not exist"),
    ("02-analysis", {"runtimes": ["runc", "kata-nope"]}, r"runtimes: unknown runtime\(s\) 'kata-nope'; the results "
                                                         r"hold: .*\bnative, runc\b"),
    ("03-concurrency", {"baseline": "io.containerd.kata.v2"}, r"baseline: runtime 'io.containerd.kata.v2' is not in "
                                                              r"the results; choose one of: .*\bnative, runc\b"),
    ("04-gvisor-generations", {"n_resamples": 5}, r"n_resamples: 5 is not allowed; give a whole number from 100"),
    ("01-collect", {"preset": "nope"},
     r"preset: 'nope' does not exist; choose one of: gvisor-settings, paper, python, quick, smoke"),
    ("01-collect", {"runtimes": ["nope"]}, r"runtimes: unknown runtime\(s\) 'nope'; known here: native"),
    ("00-environment", {"recheck": "yes"}, r"recheck: 'yes' is not allowed; give True or False"),
]


@pytest.fixture(scope="module")
def bad_runs(tmp_path_factory) -> dict[int, tuple[PapermillExecutionError | None, Path]]:
    out = tmp_path_factory.mktemp("bad")

    def one(i: int):
        name, parameters, _ = BAD[i]
        target = out / f"{i}-{name}.ipynb"
        if name in ANALYSIS:
            parameters = {"run_dir": str(dataset()), **parameters}
        try:
            execute(name, target, **parameters)
        except PapermillExecutionError as exc:
            return i, (exc, target)
        return i, (None, target)

    with ThreadPoolExecutor(max_workers=3) as pool:
        return dict(pool.map(one, range(len(BAD))))


@pytest.mark.parametrize("case", range(len(BAD)), ids=[f"{n}-{next(iter(p))}" for n, p, _ in BAD])
def test_bad_parameter_stops_at_the_check_cell(bad_runs, case):
    name, parameters, message = BAD[case]
    exc, executed = bad_runs[case]
    assert exc is not None, f"{name} ran to the end with bad parameters {parameters}"
    assert exc.ename == "ParameterError"
    assert re.search(message, str(exc)), str(exc)
    assert exc.cell_index == check_cell_index(executed), "the notebook did not stop at the check cell"


# ---------------------------------------------------------------------------------------------------
# Against the real engine


@pytest.mark.docker
def test_environment_notebook_describes_this_host(client, tmp_path):
    nb = execute("00-environment", tmp_path / "00.ipynb")
    catalog = output_of(nb, "runtime-catalog", "text/html")
    assert "runc" in catalog and "native" in catalog and table_rows(catalog) >= 3
    assert "The Docker engine is reachable" in output_of(nb, "capabilities", "text/markdown")
    assert "papermill" in output_of(nb, "versions-table", "text/html")
    assert "docker_version" in output_of(nb, "engine-table", "text/html")


@pytest.mark.docker
def test_collect_notebook_runs_a_tiny_experiment(client, tmp_path):

    out_dir = tmp_path / "run"
    nb = execute("01-collect", tmp_path / "01.ipynb", preset="smoke", runtimes=["native", "runc"],
                 modules=["lodash@4.17.20"], concurrency=[1], repetitions=2, out_dir=str(out_dir))
    frame, meta = load_results(out_dir)
    assert meta.status == "complete"
    assert sorted(frame["runtime"].astype(str).unique()) == ["native", "runc"]
    assert len(frame) == 4 and set(frame["status"].astype(str)) == {"ok"}
    assert table_rows(output_of(nb, "run-overview", "text/html")) == 2
    spec = output_of(nb, "spec-table", "text/html")
    assert "lodash@4.17.20" in spec and "native, runc" in spec
    run_cell = next(c for c in nb.cells if c.cell_type == "code" and "run_experiment(" in c.source)
    shown = json.dumps(run_cell.outputs)
    assert "batch" in shown, "no progress bar in the run cell's output"


# ---------------------------------------------------------------------------------------------------
# The checks behind the check cells (no kernel)


def test_default_run_dir_resolves_from_the_notebooks_folder(monkeypatch):
    """JupyterLab runs a notebook in notebooks/; papermill in the caller's folder: both find the dataset."""
    from shlib.present.params import DEFAULT_RUN_DIR, find_run_dir

    monkeypatch.chdir(notebooks.notebooks_dir())
    assert find_run_dir(DEFAULT_RUN_DIR) == dataset()
    monkeypatch.chdir(repo_root())
    assert find_run_dir(DEFAULT_RUN_DIR) == dataset()


def test_baseline_falls_back_like_analyze_and_runtimes_keep_it():
    from shlib.present.params import ParameterError, analysis_inputs, check_baseline

    assert check_baseline("runc", ["native", "runsc"])[0] == "native"
    with pytest.raises(ParameterError, match="choose one of: native, runsc"):
        check_baseline("kata", ["native", "runsc"])
    inputs = analysis_inputs(dataset(), baseline="runc", runtimes=["runsc-20221219-ptrace"])
    assert inputs.runtimes == ["runc", "runsc-20221219-ptrace"]
    assert set(inputs.frame["runtime"].astype(str)) == {"runc", "runsc-20221219-ptrace"}
    assert "the baseline runc was added to the runtimes analysed" in inputs.notes


def test_variants_are_described_from_names_when_metadata_lacks_them():
    from shlib.analysis.variants import gvisor_reference, runtime_variants

    variants = runtime_variants(None, ["runc", "runsc-20221219-ptrace", "runsc-20240729-systrap-exclusive"])
    row = variants.set_index("runtime").loc["runsc-20240729-systrap-exclusive"]
    assert (row["build"], row["platform"], row["file_access"]) == ("20240729", "systrap",
                                                                   "--file-access-mounts=exclusive")
    assert gvisor_reference(variants) == "runsc-20221219-ptrace"


def test_collect_spec_applies_overrides_and_names_bad_ones():
    from shlib.present.params import ParameterError, collect_spec

    spec = collect_spec(preset="smoke", runtimes=["native"], concurrency=[1, 3], repetitions=4)
    assert (spec.runtimes, spec.concurrency, spec.repetitions) == (["native"], [1, 3], 4)
    with pytest.raises(ParameterError, match=r"concurrency"):
        collect_spec(preset="smoke", runtimes=["native"], concurrency=[0])
    with pytest.raises(ParameterError, match=r"spec_file: /nope.yaml does not exist"):
        collect_spec(spec_file="/nope.yaml", runtimes=["native"])
