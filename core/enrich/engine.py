"""The enrichment engine: which features (and which neurons) stand for which concepts.

Two streaming passes over the feature source, each holding one chunk of whole samples:

1. counts: per split, threshold, concept and feature, the co-firing tokens and instances
   (``core.enrich.counts``), plus each feature's per-sample maximum (for sample-level
   labels, AnnData and choosing top contexts) and its range;
2. detail: for the (feature, concept) pairs that make the table, 256-bin histograms of the
   raw activation for AUROC, and the activation traces of the top samples of the features
   shown in the report.

Between the passes the (feature, threshold) for each concept is chosen on the validation
split only; the test split's labels are read solely to score that choice.

This module only orchestrates: pass 1 is ``core.enrich.grid``, the selection and the tables
``core.enrich.tables``, pass 2 ``core.enrich.detail``, sample-level labels
``core.enrich.sample_level``; what they share is in ``core.enrich.basis``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from core.enrich import stats
from core.enrich.basis import SPLITS, BasisResult, split_lookup
from core.enrich.concept_shards import ConceptShards
from core.enrich.concepts import ConceptMatrix
from core.enrich.detail import detail_pass
from core.enrich.features import FeatureSource
from core.enrich.grid import count_pass, support
from core.enrich.sample_level import probe_ceiling, sample_level_summary, sample_level_table
from core.enrich.scale import reference_pass
from core.enrich.tables import best_table, card_features, pair_table, summarise
from core.errors import ConfigError, ShapeError

__all__ = ["DEFAULT_THRESHOLDS", "SPLITS", "BasisResult", "EnrichmentResult", "enrich", "split_lookup"]

log = logging.getLogger(__name__)

DEFAULT_THRESHOLDS = (0.0, 0.15, 0.5, 0.6, 0.8)


def reference_split(cm: ConceptMatrix, lookup, wanted: str, fallback: str) -> str:
    """``wanted`` when any token falls in it, else ``fallback`` (said in the log)."""
    if (lookup(cm.sample_tokens()[0]) == SPLITS.index(wanted)).any():
        return wanted
    log.info("enrich: the %s split is empty; feature maxima come from the %s split", wanted, fallback)
    return fallback


@dataclass
class EnrichmentResult:
    table: pd.DataFrame
    best: pd.DataFrame
    skipped: pd.DataFrame
    bases: dict[str, BasisResult]
    concepts: ConceptMatrix
    thresholds: tuple[float, ...]
    sample_table: pd.DataFrame | None = None
    summary: dict[str, Any] = field(default_factory=dict)


def enrich(sources: Mapping[str, FeatureSource], concepts: ConceptMatrix | ConceptShards,
           splits: Mapping[int, str] | pd.Series, *, thresholds: tuple[float, ...] = DEFAULT_THRESHOLDS,
           min_positives: int = 5, eval_splits: tuple[str, str] = ("valid", "test"), top_k: int = 5,
           sample_labels: pd.DataFrame | None = None, sample_reduce: str = "max",
           n_cards: int = 12, n_contexts: int = 4, auroc_bins: int = 256, fdr_family: str = "selected",
           normalise: str = "global", norm_split: str = "train", norm_max_samples: int | None = None,
           pool_dir: str | Path | None = None, progress: bool = True) -> EnrichmentResult:
    """Run the passes for every basis in ``sources`` and build the tables (nothing written).

    ``normalise="global"`` (InterPLM): each feature is divided by its maximum over the
    ``norm_split`` samples (the validation split when that one is empty, as with
    ``assign_splits(mode="all")``); ``"sample"``: by its maximum within each sample.
    ``concepts``: one matrix, or ``ConceptShards`` read shard by shard with the features.
    ``pool_dir``: write each basis's per-sample pools under ``pool_dir/<basis>`` as they are
    made instead of holding them (memory flat in the number of shards; Swiss-Prot scale).
    """
    if fdr_family not in ("selected", "all"):
        raise ConfigError(f"fdr_family must be 'selected' or 'all', got {fdr_family!r}")
    if normalise not in ("global", "sample"):
        raise ConfigError(f"normalise must be 'global' or 'sample', got {normalise!r}",
                          fix="use normalise=global (InterPLM: one maximum per feature) or normalise=sample")
    if norm_split not in SPLITS:
        raise ConfigError(f"norm_split must be one of {SPLITS}, got {norm_split!r}")
    thresholds = tuple(float(t) for t in thresholds)
    if not thresholds or any(t < 0 or t >= 1 for t in thresholds):
        raise ConfigError(f"thresholds must lie in [0, 1), got {thresholds}",
                          fix="use the InterPLM grid (0, 0.15, 0.5, 0.6, 0.8) or similar")
    if sample_reduce not in ("max", "last"):
        raise ConfigError(f"sample_reduce must be 'max' or 'last', got {sample_reduce!r}")
    valid, _ = eval_splits
    lookup = split_lookup(splits)
    wanted = [SPLITS.index(s) for s in eval_splits]
    for name, src in sources.items():
        n_src = getattr(src, "n_tokens", None)
        if n_src is not None and int(n_src) != concepts.n_tokens:
            raise ShapeError(f"the concept matrix has {concepts.n_tokens} token rows but the "
                             f"activations ({name}) hold {int(n_src)} tokens",
                             fix="build the concept matrix from the same samples and token positions "
                                 "that were harvested (stage=annotate after stage=harvest)")

    ref_split = reference_split(concepts, lookup, norm_split, valid)
    bases: dict[str, BasisResult] = {}
    for name, src in sources.items():
        ref = None
        if normalise == "global" or sample_labels is not None:
            code = SPLITS.index(ref_split)
            ref = reference_pass(src, lambda s, code=code: lookup(s) == code, ref_split,
                                 pool=sample_labels is not None and getattr(src, "probe_columns", None) is not None,
                                 max_samples=norm_max_samples, progress=progress)
        bases[name] = count_pass(name, src, concepts, lookup, wanted, thresholds, sample_reduce, progress,
                                 reference=ref, global_scale=normalise == "global",
                                 pool_dir=Path(pool_dir) / name if pool_dir is not None else None)

    first = next(iter(bases.values()))
    keep, skipped = support(concepts, first.counts, eval_splits, min_positives)
    instance_kind = (concepts.concepts["kind"] == "instance").to_numpy()
    for b in bases.values():
        for s in eval_splits:
            b.precision[s], b.recall[s], b.f1[s] = stats.prf(b.counts[s], instance_kind)
        f1v = b.f1[valid].copy()
        f1v[:, ~keep, :] = -1.0
        b.best_t, b.best_f, b.pair_t = stats.select_best(f1v)
        del f1v
        for s in eval_splits:
            b.token_f1[s] = stats.token_f1(b.counts[s], b.precision[s])
        tv = b.token_f1[valid].copy()
        tv[:, ~keep, :] = -1.0
        b.token_best_t, b.token_best_f, _ = stats.select_best(tv)

    table = pair_table(bases, concepts, keep, thresholds, eval_splits, top_k, fdr_family)
    pairs_by_basis = {n: table[(table.basis == n)][["concept_index", "feature"]].drop_duplicates()
                      for n in bases}
    auroc_parts = []
    for name, src in sources.items():
        b = bases[name]
        cards = card_features(b, keep, n_cards) if n_cards else []
        if not len(pairs_by_basis[name]) and not cards:
            continue
        aur = detail_pass(b, src, concepts, lookup, wanted, pairs_by_basis[name], cards, n_contexts,
                          auroc_bins, progress).assign(basis=name)
        auroc_parts.append(aur)
    if auroc_parts:
        key = ["basis", "split", "concept_index", "feature"]
        merged = table.drop(columns="auroc").merge(pd.concat(auroc_parts), on=key, how="left")
        table = merged[table.columns]
    best = best_table(table, bases, thresholds)
    sample_table = None
    if sample_labels is not None:
        parts = [sample_level_table(bases, sample_labels, eval_splits, top_k)]
        for name, src in sources.items():
            cols = getattr(src, "probe_columns", None)
            if cols is not None:
                parts.append(probe_ceiling(bases[name], sample_labels, eval_splits, cols))
        sample_table = pd.concat([p for p in parts if len(p)], ignore_index=True) if any(len(p) for p in parts) \
            else parts[0]
    summary = summarise(best, skipped, bases, concepts, eval_splits, thresholds, min_positives)
    if sample_table is not None and len(sample_table):
        summary["sample_level"] = sample_level_summary(sample_table, eval_splits)
    return EnrichmentResult(table=table, best=best, skipped=skipped, bases=bases, concepts=concepts,
                            thresholds=thresholds, sample_table=sample_table, summary=summary)
