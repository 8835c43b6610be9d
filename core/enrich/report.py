"""Report sections for an enrichment result, appended to a ``core.report.html.Report``.

Sections: what was scored and what was skipped (with reasons), feature density, best F1
per concept (dictionary features vs neurons), a concept x feature heatmap, the UMAP of
decoder directions, sample-level label tables, and one card per feature with its top
activating contexts (tokens shaded by activation) and the concepts it is enriched for.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from core.enrich.engine import EnrichmentResult  # noqa: E402
from core.report.html import Report  # noqa: E402

TokenText = Callable[[int, np.ndarray, np.ndarray], list[str]]


def token_text_from_table(table: pd.DataFrame) -> TokenText:
    """A ``token_text`` function from a table with columns sample, position, text."""
    lookup = {(int(s), int(p)): str(t) for s, p, t in table[["sample", "position", "text"]].itertuples(index=False)}

    def fn(sample: int, positions: np.ndarray, tokens: np.ndarray) -> list[str]:
        return [lookup.get((int(sample), int(p)), f"<{int(t)}>") for p, t in zip(positions, tokens, strict=True)]

    return fn


def _default_text(sample: int, positions: np.ndarray, tokens: np.ndarray) -> list[str]:
    return [f"[{int(t)}]" for t in tokens]


def add_enrichment_sections(report: Report, result: EnrichmentResult, *,
                            token_text: TokenText | pd.DataFrame | None = None,
                            layout: pd.DataFrame | None = None, window: int = 24,
                            max_heatmap_concepts: int = 40, card_basis: str | None = None) -> None:
    """Append every enrichment section to ``report`` (figures are embedded and saved as PNG)."""
    if isinstance(token_text, pd.DataFrame):
        token_text = token_text_from_table(token_text)
    token_text = token_text or _default_text
    _overview(report, result)
    _density(report, result)
    _best_f1(report, result)
    _heatmap(report, result, max_heatmap_concepts)
    if layout is not None and layout["umap1"].notna().any():
        _umap(report, result, layout, card_basis or next(iter(result.bases)))
    if result.sample_table is not None and len(result.sample_table):
        report.heading("Sample-level labels")
        report.text("Per label value and basis, the (feature, pooling) pairs ranked by AUROC on the "
                    "validation samples (pooling: max or mean over the sample's tokens; neurons enter as +x and "
                    "-x), with their AUROC on the test samples; `*_probe` rows are a logistic-regression probe "
                    "on the mean-pooled model dimensions fitted on the training samples (a ceiling).")
        st = result.sample_table
        report.table(st[st["rank"] <= 3].round(4), max_rows=120)
    _cards(report, result, token_text, window, card_basis)


def _overview(report: Report, result: EnrichmentResult) -> None:
    s = result.summary
    report.heading("Overview")
    norm = next((s[n].get("normalise") for n in result.bases if isinstance(s.get(n), dict)), None) or {}
    how = (f"each feature divided by its maximum over the {norm.get('split')} split" if norm.get("by") ==
           "reference max" else "each feature divided by its maximum within each sample")
    report.text(f"{s['n_concepts_scored']} of {s['n_concepts']} concepts scored over thresholds "
                f"{s['thresholds']} ({how}, strict >), selected on the "
                f"{s['splits']['select']} split, reported on the {s['splits']['report']} split. "
                f"Minimum support: {s['min_positives']} positive tokens (token concepts) or instances "
                f"(instance concepts) in each split.")
    rows = []
    for name, b in result.bases.items():
        d = s.get(name, {})
        rows.append({"basis": name, "features": b.n_features,
                     "mean best F1 (test)": d.get("mean_best_f1_test"),
                     "concepts with F1 > 0.5": d.get("n_concepts_f1_gt_0.5"),
                     "markers / spans": f"{d.get('n_markers')} / {d.get('n_spans')}"})
    report.table(rows)
    if len(result.skipped):
        report.text(f"{len(result.skipped)} concepts skipped:", muted=True)
        report.table(result.skipped, max_rows=50)


def _density(report: Report, result: EnrichmentResult) -> None:
    fig, ax = plt.subplots(figsize=(6, 3.2))
    for name, b in result.bases.items():
        n_tok = sum(c.n_tokens for c in b.counts.values())
        dens = sum(c.fired[0] for c in b.counts.values()) / max(n_tok, 1)
        dead = int((dens == 0).sum())
        ax.hist(np.log10(dens[dens > 0]), bins=50, alpha=0.6, label=f"{name} ({dead} never fire)")
    ax.set_xlabel("log10 firing frequency (fraction of tokens)")
    ax.set_ylabel("features")
    ax.legend(fontsize=8)
    report.figure(fig, "feature_density", "Feature density on the evaluated tokens.")


def _best_f1(report: Report, result: EnrichmentResult) -> None:
    best = result.best
    if best.empty:
        report.text("No concept had enough support to score.", muted=True)
        return
    wide = best.pivot(index="concept", columns="basis", values="f1_test")
    fig, ax = plt.subplots(figsize=(5, 4.2))
    if {"sae", "neuron"} <= set(wide.columns):
        ax.scatter(wide["neuron"], wide["sae"], s=14, alpha=0.7)
        ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--")
        ax.set_xlabel("neuron: test F1 of the selected neuron")
        ax.set_ylabel("SAE: test F1 of the selected feature")
        ax.set_xlim(-0.02, 1.02)
        better = int((wide["sae"] > wide["neuron"]).sum())
        ax.set_title(f"{better} of {len(wide)} concepts better served by the SAE", fontsize=9)
    else:
        order = wide.max(axis=1).sort_values(ascending=False).index
        for name in wide.columns:
            ax.bar(np.arange(len(order)), wide.loc[order, name].to_numpy(), label=name, alpha=0.7)
        ax.set_xlabel("concept (sorted by best test F1)")
        ax.set_ylabel("test F1 of the validation-selected feature")
        ax.legend()
    ax.set_ylim(-0.02, 1.02)
    report.figure(fig, "best_f1_per_concept", "Best F1 per concept: dictionary features vs neurons "
                  "(each point a concept; feature and threshold chosen on the validation split).")
    show = best.copy()
    show["threshold"] = show["threshold"].astype(float)
    report.table(show.sort_values(["concept", "basis"]), max_rows=400)


def _heatmap(report: Report, result: EnrichmentResult, max_concepts: int) -> None:
    from core.enrich import stats

    name = next(iter(result.bases))
    b = result.bases[name]
    sel = result.best[result.best.basis == name].sort_values("f1_test", ascending=False).head(max_concepts)
    if sel.empty:
        return
    concepts = result.concepts.names
    c_idx = [concepts.index(c) for c in sel["concept"]]
    feats = list(dict.fromkeys(int(f) for f in sel["feature"]))
    test = list(b.f1)[-1]
    grid = stats.gather(b.f1[test], b.pair_t)[np.ix_(c_idx, feats)]
    fig, ax = plt.subplots(figsize=(max(4, 0.28 * len(feats) + 2), max(3, 0.25 * len(c_idx) + 1.5)))
    im = ax.imshow(grid, aspect="auto", cmap="viridis", vmin=0, vmax=1)
    ax.set_yticks(range(len(c_idx)), sel["concept"].tolist(), fontsize=7)
    ax.set_xticks(range(len(feats)), [b.feature_names[f] for f in feats], rotation=90, fontsize=7)
    fig.colorbar(im, ax=ax, label="test F1")
    report.figure(fig, "concept_feature_heatmap",
                  f"Concept x feature test F1 ({name}): each concept's selected feature and the others'.")


def _umap(report: Report, result: EnrichmentResult, layout: pd.DataFrame, basis: str) -> None:
    fig, ax = plt.subplots(figsize=(6, 5))
    lay = layout.dropna(subset=["umap1"])
    codes = pd.Categorical(lay["leiden"]).codes
    ax.scatter(lay["umap1"], lay["umap2"], c=codes, cmap="tab20", s=4, alpha=0.7)
    sel = result.best[result.best.basis == basis]
    for r in sel[sel.f1_test > 0.5].itertuples():
        if r.feature in lay.index:
            ax.annotate(r.concept, (lay.loc[r.feature, "umap1"], lay.loc[r.feature, "umap2"]), fontsize=7)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(f"decoder directions ({lay['leiden'].nunique()} Leiden clusters)")
    report.figure(fig, "decoder_umap", "UMAP of decoder directions; labels mark features with test F1 > 0.5.")


def _cards(report: Report, result: EnrichmentResult, token_text: TokenText, window: int,
           basis: str | None) -> None:
    basis = basis or next(iter(result.bases))
    b = result.bases[basis]
    if not b.contexts:
        return
    report.heading(f"Feature cards ({basis})")
    report.text("Each card: the concepts the feature scores best on (threshold chosen per pair on the "
                "validation split, scores on the test split; AUROC and q where the pair is in the table), "
                "then the samples where it fires most, residues/tokens shaded by activation.", muted=True)
    for f, contexts in b.contexts.items():
        report.raw(f"<div class='card'><h3>{b.feature_names[f]}</h3>")
        rows = _card_concepts(result, basis, f)
        if len(rows):
            report.table(rows, caption="enriched concepts (test split)")
        for ctx in contexts:
            _context(report, ctx, token_text, window)
        report.raw("</div>")


def _card_concepts(result: EnrichmentResult, basis: str, f: int, n: int = 5) -> pd.DataFrame:
    from core.enrich import stats

    b = result.bases[basis]
    valid, test = list(b.f1)[0], list(b.f1)[-1]
    scored = ~result.concepts.concepts["name"].isin(result.skipped["concept"]).to_numpy()
    t_idx = b.pair_t[:, f]
    f1v = np.where(scored, stats.gather(b.f1[valid], b.pair_t)[:, f], -1)
    order = [c for c in np.argsort(-f1v, kind="stable")[:n] if f1v[c] > 0]
    rows = pd.DataFrame({
        "concept": [result.concepts.names[c] for c in order],
        "threshold": [result.thresholds[t_idx[c]] for c in order],
        "precision": [float(b.precision[test][t_idx[c], c, f]) for c in order],
        "recall": [float(b.recall[test][t_idx[c], c, f]) for c in order],
        "f1": [float(b.f1[test][t_idx[c], c, f]) for c in order],
        "f1_valid": [float(f1v[c]) for c in order],
    })
    tab = result.table
    if len(rows) and len(tab):
        extra = tab[(tab.basis == basis) & (tab.split == test) & (tab.feature == f)][["concept", "auroc", "q"]]
        rows = rows.merge(extra, on="concept", how="left")
    return rows


def _context(report: Report, ctx: dict[str, Any], token_text: TokenText, window: int) -> None:
    order = np.argsort(ctx["position"])
    pos, tok, val = ctx["position"][order], ctx["token"][order], ctx["value"][order]
    if not len(val):
        return
    peak = int(np.argmax(val))
    a, z = max(0, peak - window), min(len(val), peak + window + 1)
    text = token_text(int(ctx["sample"]), pos[a:z], tok[a:z])
    report.highlighted_tokens(text, [float(v) for v in val[a:z]],
                              label=f"sample {ctx['sample']} @ {int(pos[peak])} (max {val[peak]:.3g})",
                              vmax=float(val[peak]) if val[peak] > 0 else None)
