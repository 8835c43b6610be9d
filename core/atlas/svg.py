"""Inline SVG pictures for the atlas: a histogram per feature page and the feature map.

SVG, not PNG: a few hundred bytes per histogram instead of a rendered figure per feature
(thousands of pages), and on the map every point is a link to its feature's page.
"""

from __future__ import annotations

import html
from collections.abc import Sequence

import numpy as np

CLUSTER_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                   "#bcbd22", "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94",
                   "#f7b6d2", "#c7c7c7", "#dbdb8d", "#9edae5")


def histogram_svg(counts: np.ndarray, vmax: float, *, width: int = 420, height: int = 130) -> str:
    """Bars of token counts per activation bin (log height, so the rare strong tail shows)."""
    counts = np.asarray(counts, dtype=float)
    n = len(counts)
    top = np.log1p(counts.max()) if counts.max() > 0 else 1.0
    pad, inner = 28, height - 36
    bw = (width - pad - 6) / max(n, 1)
    bars = []
    for i, c in enumerate(counts):
        h = inner * np.log1p(c) / top
        lo, hi = vmax * i / n, vmax * (i + 1) / n
        bars.append(f"<rect x='{pad + i * bw:.1f}' y='{8 + inner - h:.1f}' width='{max(bw - 1, 1):.1f}' "
                    f"height='{h:.1f}' fill='#e67e22'><title>{lo:.3g}-{hi:.3g}: {int(c)} tokens</title></rect>")
    axis = (f"<line x1='{pad}' y1='{8 + inner}' x2='{width - 6}' y2='{8 + inner}' stroke='#555'/>"
            f"<text x='{pad}' y='{height - 12}' font-size='10'>0</text>"
            f"<text x='{width - 6}' y='{height - 12}' font-size='10' text-anchor='end'>{vmax:.3g}</text>"
            f"<text x='{width / 2}' y='{height - 1}' font-size='10' text-anchor='middle'>activation "
            f"(non-zero tokens; log count)</text>")
    return (f"<svg width='{width}' height='{height}' viewBox='0 0 {width} {height}' "
            f"xmlns='http://www.w3.org/2000/svg'>{''.join(bars)}{axis}</svg>")


def map_svg(x: np.ndarray, y: np.ndarray, clusters: Sequence[str], titles: Sequence[str],
            links: Sequence[str | None], ids: Sequence[str], *, size: int = 760) -> str:
    """The decoder map: one point per feature, coloured by cluster, linked to its page when it
    has one (``links[i]``), with ``id`` so ``map.html#f12`` rings feature 12."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    ok = np.isfinite(x) & np.isfinite(y)
    if not ok.any():
        return "<p class=muted>no map (the enrichment stage ran without the decoder UMAP)</p>"
    lo_x, hi_x, lo_y, hi_y = x[ok].min(), x[ok].max(), y[ok].min(), y[ok].max()
    sx = (size - 20) / max(hi_x - lo_x, 1e-9)
    sy = (size - 20) / max(hi_y - lo_y, 1e-9)
    names = sorted({c for c in clusters if c}, key=lambda c: (len(c), c))
    colour = {c: CLUSTER_COLOURS[i % len(CLUSTER_COLOURS)] for i, c in enumerate(names)}
    dots = []
    for i in np.flatnonzero(ok):
        cx, cy = 10 + (x[i] - lo_x) * sx, 10 + (hi_y - y[i]) * sy
        fill = colour.get(clusters[i], "#bbb") if links[i] else "#ddd"
        dot = (f"<circle id='{ids[i]}' cx='{cx:.1f}' cy='{cy:.1f}' r='{3.2 if links[i] else 2}' fill='{fill}'>"
               f"<title>{html.escape(titles[i])}</title></circle>")
        dots.append(f"<a href='{links[i]}'>{dot}</a>" if links[i] else dot)
    return (f"<svg width='{size}' height='{size}' viewBox='0 0 {size} {size}' "
            f"xmlns='http://www.w3.org/2000/svg' style='border:1px solid #ddd'>{''.join(dots)}</svg>")

