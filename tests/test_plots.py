"""shlib.present.plots: figures render headless, carry units, keep one colour per runtime, and save as images."""

from __future__ import annotations

import matplotlib.image as mpimg
import numpy as np
import pytest
from matplotlib.figure import Figure

from shlib.analysis.ratios import ratios_against
from shlib.analysis.replication import replication
from shlib.analysis.summaries import summarize
from shlib.present import plots
from shlib.simulate import Scenario, simulate_results


@pytest.fixture(scope="module")
def tables():
    frame = simulate_results(Scenario(speeds={"runc": 1.0, "runsc-a": 3.0, "runsc-b": 2.0, "kata": 1.4},
                                      concurrency=(1, 2), trials_per_group=20), seed=1)
    ratio_table = ratios_against(frame, ["runc", "kata"], n_resamples=300)
    return {"frame": frame, "summary": summarize(frame), "ratios": ratio_table,
            "replication": replication(ratio_table)}


def test_runtime_colours_are_fixed_and_distinct():
    some = plots.runtime_colors(["runc", "runsc-x"])
    more = plots.runtime_colors(["native", "runc", "crun", "runsc-x", "runsc-y", "kata"])
    assert some["runc"] == more["runc"] and some["runsc-x"] == more["runsc-x"]
    assert len(set(more.values())) == len(more)
    assert more["kata"] == plots.runtime_colors(["io.containerd.kata.v2"])["io.containerd.kata.v2"]
    many = plots.runtime_colors([f"runsc-{i}" for i in range(9)])
    assert len(set(many.values())) == 9


def _png_is_a_real_image(path) -> None:
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    pixels = mpimg.imread(path)
    assert pixels.shape[0] > 100 and pixels.shape[1] > 100
    assert np.ptp(pixels[..., :3]) > 0.5  # not a blank canvas


@pytest.mark.parametrize("name", ["load_times", "ratios", "scaling", "distributions"])
def test_each_figure_renders_with_units_and_saves(tables, tmp_path, name):
    fig = {
        "load_times": lambda: plots.plot_load_times(tables["summary"]),
        "ratios": lambda: plots.plot_ratios(tables["ratios"], replication=tables["replication"]),
        "scaling": lambda: plots.plot_scaling(tables["summary"], tables["ratios"]),
        "distributions": lambda: plots.plot_distributions(tables["frame"]),
    }[name]()
    assert isinstance(fig, Figure)
    labels = [ax.get_xlabel() + ax.get_ylabel() for ax in fig.axes if ax.get_visible()]
    assert labels and all("(ms" in text or "(x" in text or "fraction" in text for text in labels)
    paths = plots.save_figure(fig, tmp_path / name)
    assert [p.suffix for p in paths] == [".png", ".svg"]
    _png_is_a_real_image(paths[0])
    assert "<svg" in paths[1].read_text()[:2000]


def test_runtime_keeps_its_colour_across_figures(tables):
    colours = plots.runtime_colors(tables["frame"]["runtime"].astype(str).unique())
    fig = plots.plot_distributions(tables["frame"], colors=colours)
    legend_colours = {h.get_label(): h.get_color() for h in fig.legends[0].legend_handles}
    assert legend_colours["runsc-a"] == colours["runsc-a"] and legend_colours["runc"] == colours["runc"]


def test_forest_marks_the_reference_claims(tables):
    fig = plots.plot_ratios(tables["ratios"], replication=tables["replication"])
    texts = [t.get_text() for ax in fig.axes for t in ax.texts]
    assert any("16x" in t for t in texts) and any("5.7x" in t for t in texts)


def test_empty_inputs_give_a_figure_that_says_so(tables, tmp_path):
    empty = tables["ratios"].iloc[0:0]
    fig = plots.plot_ratios(empty)
    assert "no ratios" in fig.axes[0].texts[0].get_text()
    dead = tables["frame"].assign(status="error")
    assert "no ok trials" in plots.plot_distributions(dead).axes[0].texts[0].get_text()
    paths = plots.save_figure(fig, tmp_path / "empty.png")
    assert paths[0].name == "empty.png" and paths[0].stat().st_size > 0
