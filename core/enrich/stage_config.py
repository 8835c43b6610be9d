"""Shared option handling for the annotate, enrich and report stages (``cfg.analysis``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from core.errors import ConfigError, DataError

DEFAULTS: dict[str, Any] = {
    "store": None, "sae": None, "concepts": "concepts/concepts", "out_dir": "enrichment",
    "thresholds": [0.0, 0.15, 0.5, 0.6, 0.8], "min_positives": 5, "neuron_baseline": True, "top_k": 5,
    "splits": None, "split_mode": "all", "valid_fraction": 0.5, "holdout_fraction": 0.05, "seed": 0,
    "sample_reduce": "max", "fdr_family": "selected", "chunk_tokens": 32768, "batch_tokens": 4096,
    "device": "cpu", "umap": True, "n_cards": 12, "token_text": "ids", "rank_method": "wilcoxon",
    "normalise": "global", "norm_split": "train", "norm_max_samples": None, "positional_control": False,
    "position_classifiers": None,
}


def analysis_options(cfg: DictConfig) -> dict[str, Any]:
    """``cfg.analysis`` merged over the defaults; unknown keys are a ConfigError."""
    given = OmegaConf.to_container(cfg.analysis, resolve=True) if cfg.get("analysis") else {}
    unknown = sorted(set(given) - set(DEFAULTS))
    if unknown:
        raise ConfigError(f"unknown analysis options {unknown}", fix=f"valid options are {sorted(DEFAULTS)}")
    return {**DEFAULTS, **given}


def resolve(run_dir: Path, path: str | None) -> Path | None:
    if path in (None, "", "null"):
        return None
    p = Path(str(path))
    return p if p.is_absolute() else Path(run_dir) / p


def find_store(run_dir: Path, opts: dict[str, Any]) -> Path:
    """The store folder: ``analysis.store``, or the only store under ``<run_dir>/activations``."""
    given = resolve(run_dir, opts.get("store"))
    if given is not None:
        if not (given / "manifest.json").exists():
            raise DataError("no activation store here (manifest.json missing)", path=str(given),
                            fix="point analysis.store at a folder written by stage=harvest")
        return given
    found = sorted(p.parent for p in (Path(run_dir) / "activations").glob("**/manifest.json"))
    if len(found) != 1:
        raise ConfigError(f"found {len(found)} activation stores under {Path(run_dir) / 'activations'}",
                          fix="set analysis.store=<folder of one store> (run stage=harvest first)")
    return found[0]
