"""The atlas's pages: the index of every feature, one page per live feature, the feature map.

Layout of a site: ``index.html`` and ``assets/`` at the top, and per dictionary a folder
``<name>/`` with ``f<i>.html`` per live feature and ``map.html``. Every page is plain HTML
with the shared stylesheet and script; nothing needs a server.
"""

from __future__ import annotations

import html
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from core.atlas.svg import histogram_svg, map_svg
from core.report.static import fmt, page, shaded_tokens, table


def concept_of(row: dict[str, Any]) -> str:
    """The best concept, or blank when it scored nothing (dead features get an arbitrary one)."""
    f1 = row.get("f1_valid")
    return str(row.get("best_concept") or "") if f1 is not None and f1 == f1 and f1 > 0 else ""


def index_page(rows: Sequence[dict[str, Any]], dictionaries: Sequence[str], *, title: str, subtitle: str) -> str:
    cols = ["dictionary", "feature", "density", "max act.", "best concept", "F1 (test)", "explanation",
            "expl. score", "cluster"]
    cells, sort = [], []
    for r in rows:
        name = f"f{r['feature']}"
        link = f"<a href='{r['page']}'>{name}</a>" if r.get("page") else f"{name} <span class=muted>dead</span>"
        cells.append([html.escape(r["dictionary"]), link, fmt(r["density"]), fmt(r["max_activation"]),
                      html.escape(r["concept"]), fmt(r["f1_test"]), html.escape(r["explanation"]),
                      fmt(r["explanation_score"]), html.escape(str(r["cluster"]))])
        sort.append([r["dictionary"], r["feature"], r["density"], r["max_activation"], r["concept"],
                     _num(r["f1_test"]), r["explanation"], _num(r["explanation_score"]), r["cluster"]])
    maps = " · ".join(f"<a href='{html.escape(d)}/map.html'>{html.escape(d)} map</a>" for d in dictionaries)
    body = (f"<h1>{html.escape(title)}</h1><p class=muted>{html.escape(subtitle)}</p><p>{maps}</p>"
            + table(cols, cells, table_id="features", text_columns=(0, 1, 4, 6, 8), search=True, sort_values=sort,
                    caption="Click a header to sort; type to filter. Density: fraction of the scored tokens "
                            "where the feature is non-zero. F1: InterPLM's, selected on validation, on test."))
    return page(title, body)


def _num(v: Any) -> float | str:
    try:
        x = float(v)
    except (TypeError, ValueError):
        return ""
    return x if x == x else ""


def example_html(ex: dict[str, Any], text_of: Callable, meta: Callable[[int], str], vmax: float,
                 window: int) -> str:
    vals = ex["value"]
    peak = int(np.argmax(vals))
    a, z = max(0, peak - window), min(len(vals), peak + window + 1)
    tokens = text_of(ex["sample"], ex["position"][a:z], ex["token"][a:z])
    where = int(ex["position"][peak]) + 1
    lead = "… " if a > 0 else ""
    tail = " …" if z < len(vals) else ""
    return (f"<div class=seq><b>{html.escape(ex['kind'])} · {html.escape(meta(ex['sample']))} · max "
            f"{float(vals[peak]):.3g} at {where}</b> {lead}{shaded_tokens(tokens, vals[a:z], vmax)}{tail}</div>")


def feature_page(dictionary: str, f: int, row: dict[str, Any], *, examples: Sequence[dict[str, Any]],
                 text_of: Callable, meta: Callable[[int], str], hist: np.ndarray, assoc: pd.DataFrame,
                 sample_assoc: pd.DataFrame, neighbours: Sequence[tuple[int, float, str, bool]],
                 cluster_size: int, prev_next: tuple[str | None, str | None], window: int) -> str:
    vmax = float(row.get("max_activation") or 0) or max((float(np.max(e["value"])) for e in examples), default=1.0)
    prev, nxt = prev_next
    nav = " · ".join(x for x in ["<a href='../index.html'>index</a>", f"<a href='map.html#f{f}'>on the map</a>",
                                 f"<a href='{prev}'>previous</a>" if prev else "",
                                 f"<a href='{nxt}'>next</a>" if nxt else ""] if x)
    facts = [("density", fmt(row.get("density"))), ("max activation", fmt(vmax)),
             ("best concept", html.escape(concept_of(row)) or "<span class=muted>none scored</span>"),
             ("F1 valid / test", f"{fmt(row.get('f1_valid'))} / {fmt(row.get('f1_test'))}"),
             ("threshold", fmt(row.get("best_threshold"))),
             ("explanation", html.escape(str(row.get("explanation") or "")) or "<span class=muted>none</span>"),
             ("explanation score", fmt(row.get("explanation_score"))),
             ("cluster", f"{html.escape(str(row.get('leiden', '')))} ({cluster_size} features)")]
    parts = [f"<p>{nav}</p><h1>{html.escape(dictionary)} · f{f}</h1>",
             table(["property", "value"], [[k, v] for k, v in facts], table_id="facts", text_columns=(0, 1)),
             "<h2>Activation histogram</h2>", histogram_svg(hist, vmax)]
    parts += ["<h2>Concept associations</h2>", _assoc_table(assoc)]
    if len(sample_assoc):
        parts += ["<h2>Sequence-level labels</h2>", _sample_table(sample_assoc)]
    tops = [e for e in examples if e["kind"] == "top"]
    qs = [e for e in examples if e["kind"] != "top"]
    parts += ["<h2>Top samples</h2>", "".join(example_html(e, text_of, meta, vmax, window) for e in tops)
              or "<p class=muted>none</p>"]
    if qs:
        parts += ["<h2>Samples across activation quantiles</h2>",
                  "".join(example_html(e, text_of, meta, vmax, window) for e in qs)]
    near = [[f"<a href='f{g}.html'>f{g}</a>" if live else f"f{g}", f"{c:.3f}", html.escape(label)]
            for g, c, label, live in neighbours]
    parts += ["<h2>Nearest features by decoder cosine</h2>",
              table(["feature", "cosine", "best concept"], near, table_id="near", text_columns=(0, 2))]
    return page(f"{dictionary} f{f}", "".join(parts), assets="../assets")


def _assoc_table(assoc: pd.DataFrame) -> str:
    if assoc.empty:
        return "<p class=muted>this feature is in no concept's top list of enrichment.tsv</p>"
    test = assoc[assoc["split"] == "test"]
    valid = assoc[assoc["split"] == "valid"].set_index("concept")["f1"]
    rows = [[html.escape(str(r.concept)), fmt(r.threshold), fmt(r.precision), fmt(r.recall), fmt(r.f1),
             fmt(valid.get(r.concept)), fmt(getattr(r, "auroc", None)), fmt(getattr(r, "q", None)), str(r.rank)]
            for r in test.sort_values("f1", ascending=False).itertuples()]
    return table(["concept", "threshold", "precision", "recall", "F1 (test)", "F1 (valid)", "AUROC", "q",
                  "rank"], rows, table_id="assoc",
                 caption="Rows of enrichment.tsv naming this feature (its rank among the concept's features "
                         "on validation); precision per token, recall per instance (InterPLM).")


def _sample_table(rows: pd.DataFrame) -> str:
    test = rows[rows["split"] == "test"] if "split" in rows.columns else rows
    cells = [[html.escape(f"{r.label}={r.value}"), fmt(getattr(r, "auroc", None)), fmt(getattr(r, "mi_bits", None)),
              str(getattr(r, "rank", ""))] for r in test.itertuples()]
    return table(["label", "AUROC", "MI (bits)", "rank"], cells, table_id="labels")


def map_page(dictionary: str, layout: pd.DataFrame, live: np.ndarray, labels: Sequence[str],
             f1: Sequence[float] = ()) -> str:
    """``layout``: umap1, umap2, leiden per feature (integer index); ``labels``/``f1``: each
    feature's best concept and test F1, summarised per cluster under the map."""
    ids = [f"f{i}" for i in layout.index]
    links = [f"f{i}.html" if live[i] else None for i in layout.index]
    clusters = layout["leiden"].astype(str).tolist()
    titles = [f"f{i} · cluster {c}" + (f" · {labels[i]}" if labels[i] else "") + ("" if live[i] else " · dead")
              for i, c in zip(layout.index, clusters, strict=True)]
    svg = map_svg(layout["umap1"].to_numpy(), layout["umap2"].to_numpy(), clusters, titles, links, ids)
    counts = pd.Series(clusters).value_counts()
    body = (f"<p><a href='../index.html'>index</a></p><h1>{html.escape(dictionary)}: decoder map</h1>"
            f"<p class=muted>UMAP of the decoder directions (cosine neighbours) with Leiden clusters, as the "
            f"enrichment stage computed them; {len(counts)} clusters. Each point links to its feature's page "
            f"(grey: dead features).</p>{svg}" + _cluster_table(clusters, labels, f1))
    return page(f"{dictionary} map", body, assets="../assets")


def _cluster_table(clusters: Sequence[str], labels: Sequence[str], f1: Sequence[float]) -> str:
    frame = pd.DataFrame({"cluster": clusters, "concept": labels,
                          "f1": list(f1) if len(f1) else [np.nan] * len(clusters)})
    rows = []
    for c, g in sorted(frame.groupby("cluster"), key=lambda kv: (len(kv[0]), kv[0])):
        good = g[(g["f1"] > 0.5) & (g["concept"] != "")]["concept"].value_counts().head(3)
        rows.append([html.escape(str(c)), str(len(g)), html.escape(", ".join(f"{k} ({v})" for k, v in good.items()))])
    return "<h2>Clusters</h2>" + table(["cluster", "features", "concepts of its features with test F1 > 0.5"], rows,
                                       table_id="clusters", text_columns=(0, 2))
