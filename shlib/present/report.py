"""A report a researcher can read: the analysis notebooks executed on one run, as notebooks and HTML.

    reports/<run_id>/
      index.html                      the run, the reading of its result, a link and the figures of each notebook
      02-analysis.ipynb  .html        executed by papermill (parameters recorded in the notebook's metadata)
      03-concurrency.ipynb  .html
      04-gvisor-generations.ipynb  .html
      06-across-engines.ipynb  .html  (engine x runtime; "one engine only" on a single run)
      figures/<notebook>/*.png|svg    every figure, as files
      report.json                     provenance: run, parameters, kernel, versions, status of each notebook,
                                      the analysis (computed once, read by every notebook from shlib's cache)

Parameters are checked (``shlib.present.params``) before any kernel starts, so a bad run directory or
baseline fails at once; a notebook that fails while running still leaves its executed copy and HTML
(the failing cell shows the error) and ``build_report`` then raises ``ReportError`` naming it.
"""

from __future__ import annotations

import datetime as dt
import html
import json
import os
import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import nbformat

from shlib import __version__
from shlib.analysis.defaults import DEFAULT_BASELINE, DEFAULT_RESAMPLES, DEFAULT_SEED
from shlib.errors import ShlibError
from shlib.paths import reports_dir
from shlib.present import notebooks, params, tables
from shlib.present.analysis_cache import analysis_of, cache_path
from shlib.results.store import write_json

#: Marks a directory written by build_report (it may then be rewritten).
MANIFEST = "report.json"


class ReportError(ShlibError):
    """A report cannot be built (its directory is taken, or a notebook failed): the message says which and where."""


def build_report(run_dir: str | os.PathLike[str], out_dir: str | os.PathLike[str] | None = None,
                 baseline: str = DEFAULT_BASELINE, *, runtimes: Sequence[str] = (), seed: int = DEFAULT_SEED,
                 n_resamples: int = DEFAULT_RESAMPLES, names: Sequence[str] = notebooks.ANALYSIS_NOTEBOOKS,
                 kernel_name: str | None = None, timeout_s: float = 1800) -> Path:
    """Execute the analysis notebooks on RUN_DIR into out_dir (default reports/<run_id>), export HTML; return it.

    The notebooks name the kernel ``shlib``; when that is not registered for this Python, the
    interpreter's own kernel runs them (``shlib.present.notebooks.kernel_for_this_environment``).
    """
    inputs = params.analysis_inputs(run_dir, baseline=baseline, runtimes=list(runtimes), seed=seed,
                                    n_resamples=n_resamples)
    report_dir = Path(out_dir) if out_dir is not None else reports_dir() / inputs.run_id
    _claim(report_dir)
    kernel = kernel_name or notebooks.kernel_for_this_environment(register=True)
    started = time.monotonic()
    analysis_of(inputs)  # once: every notebook reads it from the cache (analysis_cache)
    cached = cache_path(inputs)
    analysis = {"key": cached.stem, "cache": str(cached), "written_ns": cached.stat().st_mtime_ns,
                "seconds": round(time.monotonic() - started, 1)}
    entries = []
    for name in names:
        entries.append(_run_one(name, report_dir, inputs, baseline, list(runtimes), kernel, timeout_s))
    manifest = {
        "shlib_version": __version__, "built_at": dt.datetime.now(dt.UTC).isoformat(),
        "run_dir": str(inputs.run_dir), "run_id": inputs.run_id, "run_status": inputs.metadata.status,
        "baseline_asked": baseline, "baseline": inputs.baseline, "kernel": kernel, "analysis": analysis,
        "notebooks": entries, "versions": tables.versions().to_dict("records"),
    }
    write_json(report_dir / MANIFEST, manifest)
    (report_dir / "index.html").write_text(render_index(manifest, inputs.metadata, report_dir))
    failed = [e for e in entries if e["status"] != "ok"]
    if failed:
        where = "; ".join(f"{e['notebook']}: {e['error']} (see {report_dir / e['html']})" for e in failed)
        raise ReportError(f"{len(failed)} of {len(entries)} notebooks failed: {where}")
    return report_dir


def _claim(report_dir: Path) -> None:
    """Make report_dir ours: new, empty, or an earlier report (whose files are replaced)."""
    if report_dir.exists() and not report_dir.is_dir():
        raise ReportError(f"report directory {report_dir} exists and is not a directory")
    if report_dir.is_dir() and any(report_dir.iterdir()):
        manifest = report_dir / MANIFEST
        if not manifest.exists():
            raise ReportError(f"{report_dir} is not empty and holds no shlib report; choose another --out")
        old = json.loads(manifest.read_text())
        for entry in old.get("notebooks", []):
            for name in filter(None, (entry.get("ipynb"), entry.get("html"))):
                (report_dir / name).unlink(missing_ok=True)
        shutil.rmtree(report_dir / "figures", ignore_errors=True)
        (report_dir / "index.html").unlink(missing_ok=True)
    report_dir.mkdir(parents=True, exist_ok=True)


def _run_one(name: str, report_dir: Path, inputs: params.AnalysisInputs, baseline: str, runtimes: list[str],
             kernel: str, timeout_s: float) -> dict[str, Any]:
    from papermill.exceptions import PapermillExecutionError

    figures = report_dir / "figures" / name
    parameters = {"run_dir": str(inputs.run_dir), "baseline": baseline, "runtimes": runtimes, "seed": inputs.seed,
                  "n_resamples": inputs.n_resamples, "figures_dir": str(figures.resolve())}
    output = report_dir / f"{name}.ipynb"
    started = time.monotonic()
    status, error = "ok", ""
    try:
        notebooks.execute(name, output, parameters, kernel_name=kernel, timeout_s=timeout_s)
    except PapermillExecutionError as exc:
        status, error = "failed", f"{exc.ename}: {exc.evalue}"
    html_path = output.with_suffix(".html")
    if output.exists():
        export_html(output, html_path)
    return {"notebook": name, "status": status, "error": error, "ipynb": output.name,
            "html": html_path.name if html_path.exists() else "", "parameters": parameters,
            "seconds": round(time.monotonic() - started, 1),
            "figures": sorted(str(p.relative_to(report_dir)) for p in figures.glob("*") if p.is_file())}


def export_html(notebook: Path, html_path: Path) -> Path:
    """An executed notebook as one self-contained HTML page (figures embedded, no prompts)."""
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(template_name="lab")
    exporter.exclude_input_prompt = True
    exporter.exclude_output_prompt = True
    body, _ = exporter.from_notebook_node(nbformat.read(str(notebook), as_version=4))
    html_path.write_text(body)
    return html_path


def tagged_markdown(notebook: Path, tag: str) -> str:
    """The Markdown a notebook's cell tagged ``tag`` displayed ('' when none)."""
    if not notebook.exists():
        return ""
    nb = nbformat.read(str(notebook), as_version=4)
    for cell in nb.cells:
        if tag in cell.get("metadata", {}).get("tags", []):
            for out in cell.get("outputs", []):
                if "text/markdown" in out.get("data", {}):
                    return str(out["data"]["text/markdown"])
    return ""


def render_index(manifest: dict[str, Any], metadata: dict[str, Any], report_dir: Path) -> str:
    """index.html: the run's provenance, the reading from 02-analysis, and per notebook its links, status, figures."""
    from nbconvert.filters.markdown import markdown2html

    esc = html.escape
    parts = [f"<h1>shlib report: run {esc(manifest['run_id'])}</h1>",
             f"<p>Results directory <code>{esc(manifest['run_dir'])}</code>; baseline <code>{esc(manifest['baseline'])}"
             f"</code>; built {esc(manifest['built_at'])} with shlib {esc(manifest['shlib_version'])}, kernel "
             f"<code>{esc(manifest['kernel'])}</code>.</p>"]
    reading = tagged_markdown(report_dir / "02-analysis.ipynb", "headline")
    if reading:
        parts.append(markdown2html(reading))
    parts.append("<h2>Notebooks</h2>")
    for entry in manifest["notebooks"]:
        state = "ok" if entry["status"] == "ok" else f"FAILED: {esc(entry['error'])}"
        links = " | ".join(f'<a href="{esc(entry[k])}">{label}</a>' for k, label in (("html", "HTML"),
                                                                                     ("ipynb", "notebook"))
                           if entry.get(k))
        parts.append(f"<h3>{esc(entry['notebook'])}</h3><p>{links} &mdash; {state}, {entry['seconds']} s</p>")
        rows = "".join(f"<tr><td><code>{esc(k)}</code></td><td><code>{esc(json.dumps(v))}</code></td></tr>"
                       for k, v in entry["parameters"].items())
        parts.append(f"<details><summary>parameters</summary><table>{rows}</table></details>")
        for fig in entry["figures"]:
            if fig.endswith(".png"):
                svg = fig[:-4] + ".svg"
                target = svg if svg in entry["figures"] else fig
                parts.append(f'<figure><a href="{esc(target)}"><img src="{esc(fig)}" style="max-width:100%"></a>'
                             f"<figcaption>{esc(fig)}</figcaption></figure>")
    parts.append("<h2>The run</h2>")
    parts.append(tables.run_facts(metadata).to_html(index=False, border=0))
    style = ("body{font-family:system-ui,sans-serif;max-width:70rem;margin:2rem auto;padding:0 1rem;line-height:1.4}"
             "table{border-collapse:collapse}td,th{padding:.2rem .6rem;border-bottom:1px solid #ddd;text-align:left}"
             "figure{margin:1rem 0}figcaption{color:#555;font-size:.9em}")
    return (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>shlib report {esc(manifest['run_id'])}"
            f"</title><style>{style}</style></head><body>{''.join(parts)}</body></html>\n")
