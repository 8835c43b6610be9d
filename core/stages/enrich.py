"""Stage ``enrich``: score SAE features (and neurons) against the annotated concepts.

Reads the store (``analysis.store``), the SAE (``analysis.sae``, or ``<run_dir>/sae``), the
concept matrix written by stage=annotate and its sample labels; writes the enrichment
tables, ``features.h5ad`` and ``report.html`` under ``<run_dir>/<analysis.out_dir>``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from omegaconf import DictConfig

from core.enrich.concepts import ConceptMatrix
from core.enrich.stage_config import analysis_options, find_store, resolve
from core.errors import ConfigError, DataError


def read_splits(path: Path) -> dict[int, str]:
    if not path.exists():
        raise DataError("split table not found", path=str(path), fix="write a TSV with columns sample, split")
    df = pd.read_csv(path, sep="\t")
    if not {"sample", "split"} <= set(df.columns):
        raise DataError(f"split table has columns {list(df.columns)}", path=str(path),
                        fix="use columns sample (int) and split (train|valid|test)")
    return dict(zip(df["sample"].astype(int), df["split"].astype(str), strict=True))


def residue_text(samples: pd.DataFrame | None):
    """token_text for sequences whose store positions index characters of ``samples.tsv``'s text."""
    if samples is None or "text" not in samples.columns:
        raise ConfigError("analysis.token_text=residues needs a samples.tsv with a text column",
                          fix="use analysis.token_text=ids")
    text = samples["text"].astype(str).to_dict()

    def fn(sample, positions, tokens):
        seq = text.get(int(sample), "")
        return [seq[p] if 0 <= p < len(seq) else "?" for p in positions]

    return fn


def run(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    from core.checkpoint import load_sae
    from core.enrich.run import assign_splits, run_enrichment
    from core.store import ActivationStore

    opts = analysis_options(cfg)
    store = ActivationStore(find_store(run_dir, opts))
    sae_dir = resolve(run_dir, opts["sae"]) or (Path(run_dir) / "sae")
    sae = load_sae(sae_dir, plain=True) if sae_dir.exists() else None
    if opts["sae"] and sae is None:
        raise DataError("SAE folder not found", path=str(sae_dir), fix="set analysis.sae to a trained SAE folder")
    prefix = resolve(run_dir, opts["concepts"])
    cm = ConceptMatrix.load(prefix)
    labels_path = Path(f"{prefix}.labels.tsv")
    labels = pd.read_csv(labels_path, sep="\t", index_col="sample") if labels_path.exists() else None
    split_file = resolve(run_dir, opts["splits"])
    if split_file is not None:
        splits = read_splits(split_file)
    else:
        splits = assign_splits(cm.tokens["sample"].unique(), mode=opts["split_mode"],
                               valid_fraction=float(opts["valid_fraction"]),
                               holdout_fraction=float(opts["holdout_fraction"]), seed=int(opts["seed"]))
    token_text = residue_text(store.samples()) if opts["token_text"] == "residues" else None
    summary = run_enrichment(sae, store, cm, splits, resolve(run_dir, opts["out_dir"]),
                             thresholds=tuple(opts["thresholds"]), min_positives=int(opts["min_positives"]),
                             neuron_baseline=bool(opts["neuron_baseline"]), sample_labels=labels,
                             top_k=int(opts["top_k"]), sample_reduce=opts["sample_reduce"],
                             fdr_family=opts["fdr_family"], chunk_tokens=int(opts["chunk_tokens"]),
                             batch_tokens=int(opts["batch_tokens"]), device=opts["device"],
                             token_text=token_text, umap=bool(opts["umap"]), n_cards=int(opts["n_cards"]),
                             rank_method=opts["rank_method"], normalise=opts["normalise"],
                             norm_split=opts["norm_split"], norm_max_samples=opts["norm_max_samples"],
                             positional_control=bool(opts["positional_control"]),
                             position_classifiers=list(opts["position_classifiers"] or []))
    return {"enrich": {k: v for k, v in summary.items() if k not in ("sae", "neuron", "position")},
            **{b: {k: v for k, v in summary[b].items() if k != "per_concept"}
               for b in ("sae", "neuron", "position") if b in summary}}
