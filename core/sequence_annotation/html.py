"""HTML pages of an annotated sequence: feature tracks above the residues, a region bar below.

Each track is one feature, its cells shaded by activation on the feature's run-wide scale;
hovering a track shows its label (dictionary, feature, best concept and F1, explanation),
and the status line under the tracks names the residue (with its region numbering when an
annotator gave one) and the activation under the pointer. Pages share ``assets/`` with the
index, which lists every page with a search box.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from typing import Any

import numpy as np

from core.report.static import fmt, level, page, table

PALETTE = ("#c7d7ea", "#e4572e", "#9fbbd9", "#f3a712", "#76a0c8", "#a8201a", "#4d7fb0", "#8cb369",
           "#bc4b51", "#5b8e7d", "#f4a259", "#6d597a")


def track_label(t: dict[str, Any]) -> str:
    parts = [f"{t['dictionary']} f{t['feature']}"]
    if t.get("best_concept"):
        f1 = f" (F1 {t['f1_test']:.2f})" if t.get("f1_test") is not None else ""
        parts.append(f"{t['best_concept']}{f1}")
    if t.get("explanation"):
        parts.append(str(t["explanation"]))
    return " · ".join(parts)


def colour_map(labels: Sequence[str], given: dict[str, str] | None) -> dict[str, str]:
    out = dict(given or {})
    for name in labels:
        if name not in out:
            out[name] = PALETTE[len(out) % len(PALETTE)]
    return out


def sequence_page(sample_id: str, sequence: Sequence[str], tracks: Sequence[dict[str, Any]],
                  regions: dict[str, np.ndarray], *, region_name: str = "region",
                  colours: dict[str, str] | None = None, token_column: str = "token",
                  subtitle: str = "") -> str:
    """One sequence's page. ``tracks``: the ranked features (``values`` per position, ``scale``);
    ``regions``: per-position columns from the region annotator (``region`` colours the bar)."""
    n = len(sequence)
    rows = []
    for t in tracks:
        vals = t["values"][:n]
        cells = "".join(f"<i class=s{level(float(v), t['scale'])}></i>" for v in vals)
        data = ",".join(f"{v:.3g}" if v else "" for v in vals)
        label = track_label(t)
        title = (f"{label} · peak {t['max_activation']:.3g} at {t['peak_position']}"
                 + (f" · spans {t['spans']}" if t.get("spans") else "") + (f" · {t['regions']}" if t.get("regions") else ""))
        short = f"{t['dictionary']} f{t['feature']}" + (f" · {t['best_concept']}" if t.get("best_concept") else "")
        rows.append(f"<div class=trow title='{html.escape(title, quote=True)}' data-label='{html.escape(short)}' "
                    f"data-v='{data}'><span class=lab>{html.escape(short)}</span><span class=cells>{cells}</span></div>")
    extra = [k for k in regions if k != "region"]
    res = []
    for p, tok in enumerate(sequence):
        info = [f"{token_column} {tok}{p + 1}"] + [f"{k} {regions[k][p]}" for k in extra if regions[k][p] is not None]
        if "region" in regions and regions["region"][p] is not None:
            info.append(str(regions["region"][p]))
        res.append(f"<i title='{html.escape(' · '.join(info))}'>{html.escape(str(tok))}</i>")
    rows.append(f"<div class='trow sq'><span class=lab>{html.escape(token_column)}</span>"
                f"<span class=cells>{''.join(res)}</span></div>")
    legend = ""
    if "region" in regions:
        names = list(dict.fromkeys(r for r in regions["region"] if r is not None))
        cmap = colour_map(names, colours)
        bar = "".join(f"<i style='background:{cmap[r]}' title='{html.escape(str(r))}'></i>" if r is not None
                      else "<i></i>" for r in regions["region"][:n])
        rows.append(f"<div class=trow><span class=lab>{html.escape(region_name)}</span>"
                    f"<span class=cells>{bar}</span></div>")
        legend = "<p class=legend>" + "".join(f"<span style='background:{cmap[r]}'>{html.escape(r)}</span>"
                                              for r in names) + "</p>"
    body = (f"<p><a href='index.html'>all sequences</a></p><h1>{html.escape(sample_id)}</h1>"
            f"<p class=muted>{html.escape(subtitle)}</p>"
            f"<div class=tracks>{''.join(rows)}</div><div id=status>hover a track</div>{legend}"
            + _feature_table(tracks))
    return page(sample_id, body)


def _feature_table(tracks: Sequence[dict[str, Any]]) -> str:
    cols = ["dictionary", "feature", "peak", "relative", "spans", "regions", "best concept", "F1 (test)",
            "explanation", "score"]
    rows = [[html.escape(t["dictionary"]), f"f{t['feature']}", fmt(t["max_activation"]),
             fmt(t.get("relative_activation")), html.escape(t.get("spans") or ""), html.escape(t.get("regions") or ""),
             html.escape(t.get("best_concept") or ""), fmt(t.get("f1_test")), html.escape(t.get("explanation") or ""),
             fmt(t.get("explanation_score"))] for t in tracks]
    return "<h2>Top features</h2>" + table(cols, rows, table_id="features", text_columns=(0, 4, 5, 6, 8))


def index_page(entries: Sequence[dict[str, Any]], *, title: str, subtitle: str) -> str:
    """All annotated sequences: id (linked when it has a page), length, its top features."""
    cols = ["sequence", "length", "top features"]
    rows, sort = [], []
    for e in entries:
        sid = html.escape(e["sequence_id"])
        link = f"<a href='{html.escape(e['page'])}'>{sid}</a>" if e.get("page") else sid
        rows.append([link, str(e["length"]), html.escape(e.get("top", ""))])
        sort.append([e["sequence_id"], e["length"], e.get("top", "")])
    body = (f"<h1>{html.escape(title)}</h1><p class=muted>{html.escape(subtitle)}</p>"
            + table(cols, rows, table_id="sequences", text_columns=(0, 2), search=True, sort_values=sort))
    return page(title, body)
