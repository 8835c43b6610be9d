"""Read back what ``run_enrichment`` wrote, for the stages that show features to people.

The atlas and sequence annotation label features with the enrichment stage's results; they
read its files (``features.h5ad``'s per-feature summary and per-sample activations,
``enrichment.tsv``'s feature x concept rows) through these functions rather than re-deriving
anything, so a feature's "best concept" is the same number everywhere.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import scipy.sparse as sp

from core.errors import DataError

FEATURES_H5AD = "features.h5ad"
TABLE_TSV = "enrichment.tsv"
SAMPLE_TSV = "sample_enrichment.tsv"


def feature_index(names: pd.Index | list[str]) -> np.ndarray:
    """Integer feature ids from the var names ``f0, f1, ...`` the engine writes."""
    try:
        return np.asarray([int(str(n).lstrip("f")) for n in names], dtype=np.int64)
    except ValueError:
        raise DataError(f"feature names {list(names)[:3]} are not of the form f<index>",
                        fix="use a features.h5ad written by the enrich stage for a dictionary") from None


def has_enrichment(enrich_dir: Path | None) -> bool:
    return enrich_dir is not None and (Path(enrich_dir) / FEATURES_H5AD).exists()


def _read_h5ad(enrich_dir: Path):
    import anndata as ad

    path = Path(enrich_dir) / FEATURES_H5AD
    if not path.exists():
        raise DataError("no features.h5ad here", path=str(enrich_dir),
                        fix="run stage=enrich (or the case study) for this dictionary first")
    try:
        return ad.read_h5ad(path)
    except (OSError, KeyError, ValueError) as err:
        raise DataError(f"cannot read features.h5ad ({err})", path=str(path),
                        fix="re-run stage=enrich to rewrite it") from None


def read_feature_summary(enrich_dir: Path) -> pd.DataFrame:
    """One row per feature, indexed by integer id: density, max_activation, best_concept,
    best_threshold, f1_valid, f1_test and, when the run made the decoder map, umap1/umap2/leiden."""
    var = _read_h5ad(enrich_dir).var.copy()
    var.index = pd.Index(feature_index(var.index), name="feature")
    for col in ("best_concept", "leiden"):
        if col in var.columns:
            var[col] = var[col].astype(str).replace({"nan": "", "None": ""})
    return var.drop(columns=["feature_name"], errors="ignore")


def read_sample_activations(enrich_dir: Path) -> tuple[np.ndarray, sp.csc_matrix, pd.DataFrame]:
    """Store sample indices, their per-sample (max) activation per feature (samples x features,
    CSC so a feature's column is cheap) and the obs table (split, labels)."""
    adata = _read_h5ad(enrich_dir)
    samples = adata.obs["sample"].to_numpy().astype(np.int64)
    X = adata.X if sp.issparse(adata.X) else sp.csr_matrix(np.asarray(adata.X))
    return samples, sp.csc_matrix(X, dtype=np.float32), adata.obs


def read_associations(enrich_dir: Path, *, basis: str = "sae") -> pd.DataFrame:
    """The feature x concept rows of ``enrichment.tsv`` for one basis (both splits), or an empty
    frame when the file is absent."""
    path = Path(enrich_dir) / TABLE_TSV
    if not path.exists():
        return pd.DataFrame(columns=["feature", "concept", "split", "threshold", "precision", "recall", "f1"])
    table = pd.read_csv(path, sep="\t")
    return table[table["basis"] == basis].reset_index(drop=True)


def read_sample_associations(enrich_dir: Path) -> pd.DataFrame:
    """Sequence-level label rows (``sample_enrichment.tsv``) of the dictionary, when written."""
    path = Path(enrich_dir) / SAMPLE_TSV
    if not path.exists():
        return pd.DataFrame()
    table = pd.read_csv(path, sep="\t")
    return table[table["basis"] == "sae"].reset_index(drop=True) if "basis" in table.columns else table
