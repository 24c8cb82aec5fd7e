"""The timeline's tables and readings keep languages (and any other factor) apart: Python's boot_ms
counts from process creation and Node's from its own start, so pooling them would mix two measures."""

from __future__ import annotations

import pandas as pd
import pytest

from shlib.analysis.analyze import analyze_frame
from shlib.analysis.timeline import load_share, phase_summary
from shlib.paths import repo_root
from shlib.present import timeline
from shlib.results.store import load_results

SPECTRUM = repo_root() / "data" / "runs" / "spectrum"


@pytest.fixture(scope="module")
def two_languages() -> tuple[pd.DataFrame, object]:
    """The committed spectrum run (3 modules) and a copy of it relabelled Python with boot_ms 5x larger."""
    df, meta = load_results(SPECTRUM)
    node = df[df["module"].isin(["lodash", "express", "react"])]
    python = node.assign(language="python", interpreter_version="3.11.2", boot_ms=node["boot_ms"] * 5,
                         trial_id="py-" + node["trial_id"].astype(str), batch_id=node["batch_id"] + 10_000)
    frame = pd.concat([node.astype({"language": str}), python], ignore_index=True)
    return frame, meta


def test_phases_and_load_share_are_per_language(two_languages):
    frame, _ = two_languages
    phases = phase_summary(frame, n_resamples=50)
    boot = phases[(phases["phase"] == "boot_ms") & (phases["runtime"] == "runc") & (phases["concurrency"] == 1)]
    by_language = boot.set_index("language")["median_ms"]
    assert set(by_language.index) == {"node", "python"}
    assert by_language["python"] == pytest.approx(5 * by_language["node"], rel=1e-9)
    share = load_share(frame, n_resamples=50)
    assert share.groupby(["runtime", "concurrency"]).size().eq(2).all()  # one row per language


def test_present_tables_and_readings_name_each_language(two_languages):
    frame, meta = two_languages
    result = analyze_frame(frame, metadata=meta, n_resamples=1000)
    table = timeline.phase_table(result.phases)
    assert "language" in table.index.names and table.index.is_unique
    reading = timeline.cpu_wall_reading(result.ratio_summary, result.cpu_ratio_summary, result.baseline)
    assert "language=node" in reading and "language=python" in reading
    assert "language" in timeline.cpu_wall_table(result.ratio_summary, result.cpu_ratio_summary,
                                                 result.baseline).index.names
    assert "language=python" in timeline.timeline_reading([], result.load_share)
    assert len(timeline.plot_phases(result.phases).axes[0].get_yticklabels()) == 2 * 4  # runtime x language
