"""Helpers for report tests: the inline figures of a saved report.html, and its external references."""

from __future__ import annotations

import base64
import re
import struct

FIGURE = re.compile(r'<img alt="([^"]*)" src="data:image/png;base64,([A-Za-z0-9+/=]+)">')
EXTERNAL = re.compile(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", re.IGNORECASE)
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
#: A rendered figure with axes, labels and data is tens of kilobytes; a blank canvas is about one.
MIN_FIGURE_BYTES = 5_000


def figures(html: str) -> dict[str, bytes]:
    """Each inline figure's decoded PNG by its heading (the ``alt`` text)."""
    found: dict[str, bytes] = {}
    for heading, encoded in FIGURE.findall(html):
        assert heading not in found, f"two figures are headed {heading!r}"
        found[heading] = base64.b64decode(encoded, validate=True)
    return found


def png_size(png: bytes) -> tuple[int, int]:
    """Width and height in pixels from the PNG header."""
    assert png.startswith(PNG_SIGNATURE), "not a PNG"
    width, height = struct.unpack(">II", png[16:24])
    return width, height


def assert_figures(html: str, headings: list[str]) -> dict[str, bytes]:
    """Every heading has an inline PNG figure of non-trivial size; returns all figures."""
    found = figures(html)
    for heading in headings:
        assert heading in found, f"no figure headed {heading!r}; figures: {sorted(found)}"
        png = found[heading]
        assert png.startswith(PNG_SIGNATURE)
        assert len(png) > MIN_FIGURE_BYTES, f"figure {heading!r} is only {len(png)} bytes"
        width, height = png_size(png)
        assert width > 200, f"figure {heading!r} is {width} px wide"
        assert height > 150, f"figure {heading!r} is {height} px high"
    return found


def external_references(html: str) -> list[str]:
    """``src``/``href`` attributes that point at another host (the report would not be self-contained)."""
    return [match.group(0) for match in EXTERNAL.finditer(html)]
