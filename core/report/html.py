"""A self-contained HTML report: one file, figures embedded, readable from disk with no server.

Stages and case studies append sections (headings, prose, tables, figures, highlighted
sequences) and write the page atomically; PNG copies of the figures are kept beside it so
a README can link them.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

from core.io import write_text

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;
     padding:0 1em;color:#222;line-height:1.45}
h1{border-bottom:2px solid #444}h2{margin-top:1.8em;border-bottom:1px solid #ccc}
table{border-collapse:collapse;font-size:0.9em;margin:0.6em 0}
th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}th{background:#f2f2f2}
td:first-child,th:first-child{text-align:left}
figure{margin:1em 0}figcaption{font-size:0.85em;color:#555}
.seq{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:0.85em;word-break:break-all;line-height:1.9}
.seq span{padding:1px 0}.card{border:1px solid #ddd;border-radius:6px;padding:0.6em 1em;margin:0.8em 0}
.muted{color:#666;font-size:0.9em}
"""


class Report:
    """Accumulates sections and writes ``report.html`` plus ``figures/*.png``."""

    def __init__(self, title: str, out_dir: str | Path) -> None:
        self.title = title
        self.out_dir = Path(out_dir)
        self.parts: list[str] = []
        self._n_fig = 0

    def heading(self, text: str, level: int = 2) -> None:
        self.parts.append(f"<h{level}>{html.escape(text)}</h{level}>")

    def text(self, text: str, *, muted: bool = False) -> None:
        cls = ' class="muted"' if muted else ""
        self.parts.append(f"<p{cls}>{html.escape(text)}</p>")

    def raw(self, fragment: str) -> None:
        """Append trusted HTML built by the caller (already escaped)."""
        self.parts.append(fragment)

    def table(self, rows: Any, *, caption: str | None = None, floatfmt: str = "{:.3g}",
              max_rows: int = 200) -> None:
        """A table from a pandas DataFrame or a list of dicts."""
        import pandas as pd

        df = rows if isinstance(rows, pd.DataFrame) else pd.DataFrame(list(rows))
        df = df.head(max_rows)

        def cell(v: Any) -> str:
            if isinstance(v, float):
                return html.escape(floatfmt.format(v))
            return html.escape(str(v))

        head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
        body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>"
                       for row in df.itertuples(index=False))
        cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
        self.parts.append(f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")

    def figure(self, fig: Any, name: str, caption: str = "") -> Path:
        """Embed a matplotlib figure and save it as ``figures/<name>.png``; returns the PNG path."""
        import matplotlib.pyplot as plt

        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
        plt.close(fig)
        data = buf.getvalue()
        png = self.out_dir / "figures" / f"{name}.png"
        png.parent.mkdir(parents=True, exist_ok=True)
        png.write_bytes(data)
        b64 = base64.b64encode(data).decode()
        cap = f"<figcaption>{html.escape(caption)}</figcaption>" if caption else ""
        self.parts.append(f'<figure><img alt="{html.escape(name)}" style="max-width:100%" '
                          f'src="data:image/png;base64,{b64}">{cap}</figure>')
        return png

    def highlighted_tokens(self, tokens: list[str], values: list[float], *, label: str = "",
                           vmax: float | None = None) -> None:
        """Tokens or residues shaded by activation (white to orange), with the value on hover."""
        top = vmax if vmax else max([v for v in values if v == v] + [1e-9])
        spans = []
        for tok, v in zip(tokens, values, strict=False):
            a = 0.0 if top <= 0 else max(0.0, min(1.0, float(v) / top))
            spans.append(f'<span title="{float(v):.3f}" style="background:rgba(255,140,0,{a:.2f})">'
                         f"{html.escape(tok)}</span>")
        lab = f"<b>{html.escape(label)}</b> " if label else ""
        self.parts.append(f'<div class="seq">{lab}{"".join(spans)}</div>')

    def write(self, name: str = "report.html") -> Path:
        page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(self.title)}</title>"
                f"<style>{_CSS}</style></head><body><h1>{html.escape(self.title)}</h1>"
                + "\n".join(self.parts) + "</body></html>")
        path = self.out_dir / name
        write_text(path, page)
        return path
