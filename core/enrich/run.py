"""``run_enrichment``: the engine plus its files (tables, AnnData, report) for one dictionary and store.

Outputs in ``out_dir``:
- ``enrichment.tsv``: per basis (sae | neuron), concept and split, the top-k features ranked
  on the validation split, with threshold, precision, recall, F1, AUROC, odds ratio, p, q;
- ``enrichment_best.tsv``: the selected (feature, threshold) per concept and basis with its
  validation and test scores; ``skipped_concepts.tsv``: concepts not scored and why;
- ``sample_enrichment.tsv`` and ``rank_<label>.tsv`` (scanpy) when sample-level labels are given;
- ``features.h5ad`` (samples x features; ``neurons.h5ad`` for the baseline), and with
  ``token_level=True`` ``tokens.h5ad`` (tokens x features, small runs); ``enrichment_summary.json``;
- ``report.html`` with ``figures/*.png`` when ``report=True``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core.enrich.concepts import ConceptMatrix
from core.enrich.engine import DEFAULT_THRESHOLDS, EnrichmentResult, enrich
from core.enrich.features import DictionaryFeatures, NeuronFeatures
from core.errors import ConfigError
from core.io import atomic_path, write_json

log = logging.getLogger(__name__)


def assign_splits(sample_ids: Any, *, mode: str = "all", valid_fraction: float = 0.5,
                  holdout_fraction: float = 0.05, seed: int = 0) -> dict[int, str]:
    """A deterministic sample -> split map from hashes of the sample index.

    ``mode="holdout"``: only the samples the dictionary did not train on (the store's
    holdout, same hash as ``ActivationDataModule``) are scored, split into valid/test;
    ``mode="all"``: every sample is scored. Concept labels never reach training, so "all"
    is sound for concept association and gives more support.
    """
    from core.store import holdout_mask

    ids = np.unique(np.asarray(sample_ids, dtype=np.int64))
    if mode == "holdout":
        held = holdout_mask(ids, holdout_fraction, seed).numpy()
    elif mode == "all":
        held = np.ones(len(ids), dtype=bool)
    else:
        raise ConfigError(f"unknown split mode {mode!r}", fix="use analysis.split_mode=all or holdout")
    to_valid = holdout_mask(ids, valid_fraction, seed + 7919).numpy()
    out = np.where(~held, "train", np.where(to_valid, "valid", "test"))
    return {int(i): str(s) for i, s in zip(ids, out, strict=True)}


def run_enrichment(sae: Any, store: Any, concepts: ConceptMatrix, splits: dict[int, str] | None,
                   out_dir: str | Path, *, thresholds: tuple[float, ...] = DEFAULT_THRESHOLDS,
                   min_positives: int = 5, neuron_baseline: bool = True,
                   sample_labels: pd.DataFrame | None = None, top_k: int = 5, sample_reduce: str = "max",
                   fdr_family: str = "selected", chunk_tokens: int = 32768, batch_tokens: int = 4096,
                   device: str = "cpu", token_text: Any = None, report: bool = True, umap: bool = True,
                   umap_max_features: int = 20000, n_cards: int = 12, rank_method: str = "wilcoxon",
                   title: str = "Feature enrichment", sample_meta: pd.DataFrame | None = None,
                   token_level: bool = False, normalise: str = "global", norm_split: str = "train",
                   norm_max_samples: int | None = None, positional_control: bool = False,
                   position_classifiers: list[str] | None = None, subsets: dict[str, Any] | None = None,
                   progress: bool = True) -> dict[str, Any]:
    """Score a dictionary's features (and the neurons, and with ``positional_control`` the
    position-only predictors) against concepts; write tables, AnnData, report.

    ``subsets`` (concept -> sample ids): the selected pairs are scored again on those test
    samples only (``subset_scores.tsv``, ``summary["subsets"]``).

    ``position_classifiers``: concepts that get a fitted position-only classifier beside the
    position windows (fitted on the training split's tokens)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    sources: dict[str, Any] = {}
    if sae is not None:
        sources["sae"] = DictionaryFeatures(sae, store, chunk_tokens=chunk_tokens, batch_tokens=batch_tokens,
                                            device=device)
    if neuron_baseline or sae is None:
        sources["neuron"] = NeuronFeatures(store, chunk_tokens=chunk_tokens)
    if splits is None:
        splits = assign_splits(concepts.tokens["sample"].unique())
    if positional_control:
        sources["position"] = position_source(concepts, splits, position_classifiers or [])
    if sample_meta is None:
        stores = store if isinstance(store, (list, tuple)) else [store]
        sample_meta = stores[0].samples() if hasattr(stores[0], "samples") else None
    result = enrich(sources, concepts, splits, thresholds=thresholds, min_positives=min_positives,
                    top_k=top_k, sample_labels=sample_labels, sample_reduce=sample_reduce,
                    fdr_family=fdr_family, n_cards=n_cards, normalise=normalise, norm_split=norm_split,
                    norm_max_samples=norm_max_samples, progress=progress)
    summary = write_outputs(result, out_dir, sae=sae, token_text=token_text, report=report, umap=umap,
                            umap_max_features=umap_max_features, rank_method=rank_method, title=title,
                            sample_meta=sample_meta, sample_labels=sample_labels)
    if subsets:
        from core.enrich.subsets import score_on_subsets

        scored = score_on_subsets(result, sources, concepts, splits, subsets)
        _tsv(scored, out_dir / "subset_scores.tsv")
        summary["files"].append("subset_scores.tsv")
        summary["subsets"] = {b: {c: {r.selection: {"feature": int(r.feature), "f1": round(r.f1, 4),
                                                    "token_f1": round(r.token_f1, 4),
                                                    "coverage": round(r.coverage, 4), "n_samples": int(r.n_samples)}
                                      for r in g2.itertuples()}
                                  for c, g2 in g.groupby("concept", sort=False)}
                              for b, g in scored.groupby("basis", sort=False)}
        write_json(out_dir / "enrichment_summary.json", summary)
    if token_level:
        from core.enrich.anndata_export import tokens_anndata, write_h5ad

        main = "sae" if "sae" in sources else "neuron"
        write_h5ad(tokens_anndata(sources[main], concepts, splits), out_dir / "tokens.h5ad")
        summary["files"].append("tokens.h5ad")
        write_json(out_dir / "enrichment_summary.json", summary)
    return summary


def position_source(concepts: ConceptMatrix, splits: dict[int, str], classifiers: list[str]):
    """The positional control over the concept matrix's tokens, its classifiers fitted on the
    training split (concepts absent from the matrix are a ConfigError)."""
    from core.enrich.position import PositionFeatures, classifier_targets

    unknown = sorted(set(classifiers) - set(concepts.names))
    if unknown:
        raise ConfigError(f"position classifiers asked for unknown concepts {unknown[:5]}",
                          fix="name concepts of the concept matrix (its concepts table)")
    smp = concepts.tokens["sample"].to_numpy()
    train = np.flatnonzero(pd.Series(smp).map(splits).to_numpy() == "train")
    targets = classifier_targets(concepts, train, classifiers) if classifiers and len(train) else {}
    return PositionFeatures(concepts.tokens, classifiers=targets)


def write_outputs(result: EnrichmentResult, out_dir: str | Path, *, sae: Any = None, token_text: Any = None,
                  report: bool = True, umap: bool = True, umap_max_features: int = 20000,
                  rank_method: str = "wilcoxon", title: str = "Feature enrichment",
                  sample_meta: pd.DataFrame | None = None,
                  sample_labels: pd.DataFrame | None = None) -> dict[str, Any]:
    """Write the tables, AnnData files, summary and (optionally) the report of a result."""
    from core.enrich.anndata_export import decoder_layout, features_anndata, rank_features, write_h5ad

    out_dir = Path(out_dir)
    _tsv(result.table, out_dir / "enrichment.tsv")
    _tsv(result.best, out_dir / "enrichment_best.tsv")
    _tsv(result.skipped, out_dir / "skipped_concepts.tsv")
    files = ["enrichment.tsv", "enrichment_best.tsv", "skipped_concepts.tsv"]
    if result.sample_table is not None:
        _tsv(result.sample_table, out_dir / "sample_enrichment.tsv")
        files.append("sample_enrichment.tsv")
    layout = None
    main = "sae" if "sae" in result.bases else next(iter(result.bases))
    if umap and sae is not None and hasattr(sae, "W_dec") and main == "sae":
        n_feat = result.bases[main].n_features
        if n_feat >= 5:
            layout = decoder_layout(sae.W_dec, max_features=umap_max_features)
            layout.index = layout.index.astype(int)
    for name in result.bases:
        lay = None
        if layout is not None and name == main:
            lay = layout.copy()
            lay.index = [result.bases[name].feature_names[i] for i in lay.index]
        adata = features_anndata(result, name, sample_meta=sample_meta, sample_labels=sample_labels, layout=lay)
        fname = "features.h5ad" if name == main else f"{name}s.h5ad"
        write_h5ad(adata, out_dir / fname)
        files.append(fname)
        if sample_labels is not None and name == main:
            for col in sample_labels.columns:
                ranked = rank_features(adata, col, method=rank_method)
                _tsv(ranked, out_dir / f"rank_{_safe(col)}.tsv")
                files.append(f"rank_{_safe(col)}.tsv")
    for name, b in result.bases.items():
        if b.scale is not None:
            fname = "feature_scale.tsv" if name == main else f"{name}_scale.tsv"
            _tsv(pd.DataFrame({"feature": b.feature_names, "max": b.scale,
                               "split": b.reference.split}), out_dir / fname)
            files.append(fname)
    summary = dict(result.summary)
    summary["files"] = files
    if report:
        from core.enrich.report import add_enrichment_sections
        from core.report.html import Report

        rep = Report(title, out_dir)
        add_enrichment_sections(rep, result, token_text=token_text, layout=layout, card_basis=main)
        rep.write("report.html")
        summary["files"].append("report.html")
    write_json(out_dir / "enrichment_summary.json", summary)
    return summary


def _tsv(df: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, sep="\t", index=False, float_format="%.6g")


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in str(name))
