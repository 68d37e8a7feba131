"""Self-contained HTML reports (inline CSS and images), readable alone in a browser or the lake."""

from __future__ import annotations

import base64
import datetime as dt
import html
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure

    from mlsteps.platform.lake import Lake

_STYLE = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;
color:#1f2933}
h1{font-size:1.6rem} h2{font-size:1.2rem;margin-top:2rem;border-bottom:1px solid #d9e2ec}
table{border-collapse:collapse;margin:.5rem 0}
td,th{border:1px solid #d9e2ec;padding:.3rem .6rem;text-align:left}
th{background:#f0f4f8} .ok{color:#0b7a3e;font-weight:600} .bad{color:#b42318;font-weight:600}
.meta{color:#52606d;font-size:.9rem} img{max-width:100%}
"""


@dataclass
class Report:
    """An HTML report built section by section."""

    title: str
    verdict: str
    passed: bool
    meta: dict[str, Any] = field(default_factory=dict)
    sections: list[str] = field(default_factory=list)

    def add_table(self, heading: str, rows: Sequence[dict[str, Any]], note: str = "") -> None:
        """Add a table; the first row's keys are the columns."""
        if not rows:
            self.sections.append(f"<h2>{html.escape(heading)}</h2><p>None.</p>")
            return
        columns = list(rows[0])
        head = "".join(f"<th>{html.escape(str(c))}</th>" for c in columns)
        body = "".join(
            "<tr>" + "".join(f"<td>{html.escape(_format(row.get(c)))}</td>" for c in columns) + "</tr>"
            for row in rows
        )
        paragraph = f"<p>{html.escape(note)}</p>" if note else ""
        self.sections.append(
            f"<h2>{html.escape(heading)}</h2>{paragraph}<table><tr>{head}</tr>{body}</table>"
        )

    def add_figure(self, heading: str, figure: Figure) -> None:
        """Add a matplotlib figure as an inline PNG drawn by Agg (no display needed), then close it."""
        encoded = base64.b64encode(render_png(figure)).decode()
        alt = html.escape(heading)
        self.sections.append(f'<h2>{alt}</h2><img alt="{alt}" src="data:image/png;base64,{encoded}">')

    def add_html(self, heading: str, fragment: str) -> None:
        """Add a trusted HTML fragment produced by a library (e.g. an Evidently report)."""
        self.sections.append(f"<h2>{html.escape(heading)}</h2>{fragment}")

    def render(self) -> str:
        css_class = "ok" if self.passed else "bad"
        meta = "".join(f"<li>{html.escape(k)}: {html.escape(_format(v))}</li>" for k, v in self.meta.items())
        generated = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
        title = html.escape(self.title)
        return (
            f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{title}</title>"
            f"<style>{_STYLE}</style></head><body><h1>{title}</h1>"
            f"<p class='{css_class}'>{html.escape(self.verdict)}</p><ul class='meta'>{meta}"
            f"<li>generated: {generated}</li></ul>{''.join(self.sections)}</body></html>"
        )


def render_png(figure: Figure) -> bytes:
    """The figure as PNG bytes, drawn by the Agg canvas; the figure is closed afterwards.

    Figures built as ``matplotlib.figure.Figure`` never touch pyplot, so no GUI backend is chosen
    and nothing stays registered; a figure that pyplot made is closed through pyplot.
    """
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg

    managed = figure.canvas.manager is not None
    canvas = figure.canvas if managed else FigureCanvasAgg(figure)
    buffer = io.BytesIO()
    canvas.print_figure(buffer, format="png", dpi=90, bbox_inches="tight")
    if managed:
        import matplotlib.pyplot as plt

        plt.close(figure)
    else:
        figure.clear()
    return buffer.getvalue()


def save_report(lake: Lake, prefix: str, report: Report, document: dict[str, Any]) -> dict[str, str]:
    """Write ``report.html`` and ``report.json`` under a lake prefix; return their URIs.

    ``report.json`` is written last: steps read it as the report (``decide-retrain`` its verdict), so
    a writer killed between the two never leaves a document without its page.
    """
    lake.write_bytes(f"{prefix}/report.html", report.render().encode())
    lake.write_json(f"{prefix}/report.json", document)
    return {
        "report_html": lake.url(f"{prefix}/report.html"),
        "report_json": lake.url(f"{prefix}/report.json"),
    }


def _format(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, Iterable) and not isinstance(value, str):
        return ", ".join(_format(v) for v in value)
    return "" if value is None else str(value)
