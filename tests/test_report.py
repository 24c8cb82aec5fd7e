"""build_report: the analysis notebooks run on the committed dataset, as HTML, figures and an index."""

from __future__ import annotations

import json
import re
from pathlib import Path

import nbformat
import pytest
from click.testing import CliRunner

from shlib.paths import repo_root
from shlib.present import notebooks
from shlib.present.params import ParameterError
from shlib.present.report import MANIFEST, ReportError, build_report

DATASET = repo_root() / "data" / "runs" / "quick"
RESAMPLES = 200
FIGURES = {
    "02-analysis": {"load_times", "ratios", "distributions", "languages"},
    "03-concurrency": {"scaling"},
    "04-gvisor-generations": {"gvisor_vs_baseline", "gvisor_contrasts"},
    "06-across-engines": {"across_engines"},
}


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    assert (DATASET / "metadata.json").exists(), f"the committed dataset {DATASET} is missing"
    out = tmp_path_factory.mktemp("reports") / "quick"
    with pytest.MonkeyPatch.context() as mp:  # a cache of its own: the report starts with no analysis cached
        mp.setenv("SHLIB_CACHE", str(tmp_path_factory.mktemp("cache")))
        return build_report(DATASET, out, n_resamples=RESAMPLES)


def run_id() -> str:
    return json.loads((DATASET / "metadata.json").read_text())["run_id"]


def test_report_holds_executed_notebooks_html_and_figures(report):
    for name, figures in FIGURES.items():
        html = (report / f"{name}.html").read_text()
        assert html.startswith("<!DOCTYPE html>") and "data:image/png;base64," in html
        assert "Traceback" not in html
        assert {p.stem for p in (report / "figures" / name).glob("*.png")} == figures
        assert {p.stem for p in (report / "figures" / name).glob("*.svg")} == figures
        assert all(p.stat().st_size > 5000 for p in (report / "figures" / name).glob("*.png"))


def test_executed_notebooks_record_their_parameters(report):
    for name in notebooks.ANALYSIS_NOTEBOOKS:
        nb = nbformat.read(str(report / f"{name}.ipynb"), as_version=4)
        recorded = nb.metadata["papermill"]["parameters"]
        assert recorded["run_dir"] == str(DATASET)
        assert recorded["baseline"] == "runc" and recorded["n_resamples"] == RESAMPLES
        assert Path(recorded["figures_dir"]) == (report / "figures" / name).resolve()
        ratio_cell = next(c for c in nb.cells if "ratio-table" in c.metadata.get("tags", []))
        html = ratio_cell.outputs[0]["data"]["text/html"]
        assert html.split("<tbody>", 1)[1].count("<tr") > 0, f"{name}: empty ratio table"


def test_index_links_every_notebook_and_figure_and_reads_the_result(report):
    index = (report / "index.html").read_text()
    assert run_id() in index
    hrefs = set(re.findall(r'href="([^"]+)"', index))
    for name, figures in FIGURES.items():
        assert f"{name}.html" in hrefs and f"{name}.ipynb" in hrefs
        assert {f"figures/{name}/{f}.svg" for f in figures} <= hrefs
    for target in hrefs:
        assert (report / target).exists(), f"index.html links to a missing file: {target}"
    assert "Reading of this run" in index and "slower than runc" in index


def test_manifest_records_provenance(report):
    manifest = json.loads((report / MANIFEST).read_text())
    assert manifest["run_id"] == run_id() and manifest["run_dir"] == str(DATASET)
    assert [e["notebook"] for e in manifest["notebooks"]] == list(notebooks.ANALYSIS_NOTEBOOKS)
    assert all(e["status"] == "ok" for e in manifest["notebooks"])
    assert manifest["kernel"] in (notebooks.KERNEL_NAME, "python3")
    assert "papermill" in {v["package"] for v in manifest["versions"]}


def test_one_analysis_serves_every_notebook(report):
    """The report computes the analysis once; the notebooks read it and none computes it again (which would
    rewrite the cache entry)."""
    analysis = json.loads((report / MANIFEST).read_text())["analysis"]
    cached = Path(analysis["cache"])
    assert [p.name for p in cached.parent.iterdir()] == [cached.name]
    assert cached.stat().st_mtime_ns == analysis["written_ns"]
    for name in FIGURES:  # and each notebook says which analysis it showed
        assert analysis["key"] in (report / f"{name}.html").read_text(), name


def test_default_directory_is_reports_run_id_and_a_rebuild_replaces_it(tmp_path, monkeypatch):
    monkeypatch.setenv("SHLIB_REPORTS", str(tmp_path / "reports"))
    first = build_report(DATASET, names=("03-concurrency",), n_resamples=RESAMPLES)
    assert first == tmp_path / "reports" / run_id()
    (first / "figures" / "03-concurrency" / "stale.png").write_bytes(b"old")
    again = build_report(DATASET, names=("03-concurrency",), n_resamples=RESAMPLES)
    assert again == first and not (first / "figures" / "03-concurrency" / "stale.png").exists()
    assert (first / "03-concurrency.html").exists() and (first / "index.html").exists()


def test_bad_parameters_fail_before_any_notebook_runs(tmp_path):
    with pytest.raises(ParameterError, match=r"run_dir: results directory .*missing does not exist"):
        build_report(tmp_path / "missing", tmp_path / "out")
    with pytest.raises(ParameterError, match=r"baseline: runtime 'kata' is not in the results; choose one of: "
                                             r".*\brunc\b"):
        build_report(DATASET, tmp_path / "out", baseline="kata")
    assert not (tmp_path / "out").exists()


def test_refuses_a_directory_that_holds_something_else(tmp_path):
    (tmp_path / "thesis.tex").write_text("precious")
    with pytest.raises(ReportError, match="not empty and holds no shlib report"):
        build_report(DATASET, tmp_path, names=())
    assert (tmp_path / "thesis.tex").read_text() == "precious"


def test_cli_report_names_the_bad_parameter(tmp_path):
    from shlib.cli import cli

    done = CliRunner().invoke(cli, ["report", str(tmp_path / "nowhere")])
    assert done.exit_code == 2
    assert "run_dir: results directory" in done.output and "does not exist" in done.output
