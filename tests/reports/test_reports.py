"""The HTML report: figures are inline PNGs drawn by Agg, without pyplot, and closed after use."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from mlsteps.reports.html import Report
from tests.steps.report_fixtures import assert_figures, external_references

DRAW_WITHOUT_PYPLOT = textwrap.dedent(
    """
    import sys
    from matplotlib.figure import Figure
    from mlsteps.reports.html import Report

    figure = Figure(figsize=(4, 3))
    axes = figure.subplots()
    axes.plot([0, 1, 2], [2, 0, 1])
    axes.set_title("a line")
    report = Report("r", "ok", True)
    report.add_figure("Line", figure)
    assert "matplotlib.pyplot" not in sys.modules, "pyplot was imported"
    assert figure.axes == [], "the figure was not released"
    print(report.render())
    """
)


def test_a_figure_is_drawn_by_agg_without_pyplot_or_a_display() -> None:
    hidden = ("MPLBACKEND", "DISPLAY", "WAYLAND_DISPLAY")  # nothing to pick a GUI backend from
    env = {key: value for key, value in os.environ.items() if key not in hidden}

    process = subprocess.run(
        [sys.executable, "-c", DRAW_WITHOUT_PYPLOT], capture_output=True, text=True, timeout=120, env=env
    )

    assert process.returncode == 0, process.stderr
    assert_figures(process.stdout, ["Line"])
    assert external_references(process.stdout) == []


def test_a_pyplot_figure_is_closed_after_it_is_added() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots()
    axes.bar(["a", "b"], [3, 1])
    axes.set_title("bars")
    report = Report("r", "ok", True)

    report.add_figure("Bars & <more>", figure)

    assert not plt.fignum_exists(figure.number)
    html = report.render()
    assert '<h2>Bars &amp; &lt;more&gt;</h2><img alt="Bars &amp; &lt;more&gt;" src="data:image/png' in html
    assert_figures(html, ["Bars &amp; &lt;more&gt;"])
