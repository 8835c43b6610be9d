"""Features as AnnData, scanpy label-vs-rest ranking, and a UMAP + Leiden map of decoder directions.

AnnData is the common currency of single-cell tools, and the shape fits: observations
(samples, or tokens for small runs) by variables (features), sparse X, free-form
per-observation metadata (split, labels) and per-variable summaries (density, best concept,
F1, cluster). Writing ``features.h5ad`` lets anyone open the result in scanpy.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from core.enrich import stats
from core.enrich.engine import SPLITS, BasisResult, EnrichmentResult
from core.io import atomic_path


def feature_summary(result: EnrichmentResult, basis: str) -> pd.DataFrame:
    """One row per feature: density, max activation, and the concept it best stands for."""
    b = result.bases[basis]
    valid, test = list(b.f1)[0], list(b.f1)[-1]
    n_tok = sum(c.n_tokens for c in b.counts.values())
    fired0 = sum(c.fired[0] for c in b.counts.values())
    scored = ~result.concepts.concepts["name"].isin(result.skipped["concept"]).to_numpy()
    pair_valid = stats.gather(b.f1[valid], b.pair_t)
    pair_test = stats.gather(b.f1[test], b.pair_t)
    pair_valid = np.where(scored[:, None], pair_valid, -1.0)
    df = pd.DataFrame({"feature_name": b.feature_names,
                       "density": fired0 / max(n_tok, 1),
                       "max_activation": b.fmax}, index=pd.Index(b.feature_names, name="feature"))
    if scored.any():
        best_c = np.argmax(pair_valid, axis=0)
        cols = np.arange(b.n_features)
        names = result.concepts.concepts["name"].to_numpy()
        df["best_concept"] = pd.Categorical(names[best_c])
        df["best_threshold"] = np.asarray(result.thresholds)[b.pair_t[best_c, cols]]
        df["f1_valid"] = pair_valid[best_c, cols]
        df["f1_test"] = pair_test[best_c, cols]
    else:
        df["best_concept"] = ""
        df["best_threshold"] = np.nan
        df["f1_valid"] = np.nan
        df["f1_test"] = np.nan
    return df


def features_anndata(result: EnrichmentResult, basis: str, *, sample_meta: pd.DataFrame | None = None,
                     sample_labels: pd.DataFrame | None = None, layout: pd.DataFrame | None = None):
    """Samples x features AnnData: X = per-sample activation (max or last token), var = summary."""
    import anndata as ad

    b: BasisResult = result.bases[basis]
    X = b.sample_act if sp.issparse(b.sample_act) else sp.csr_matrix(np.asarray(b.sample_act))
    obs = pd.DataFrame({"sample": b.sample_ids, "split": [SPLITS[int(i)] for i in b.sample_split]})
    for extra in (sample_meta, sample_labels):
        if extra is not None:
            add = extra.reindex(b.sample_ids)
            for col in add.columns:
                if col not in obs.columns:
                    obs[col] = add[col].to_numpy()
    obs.index = [str(s) for s in b.sample_ids]
    for col in obs.columns:
        if obs[col].dtype == object:
            obs[col] = obs[col].astype(str).astype("category")
    var = feature_summary(result, basis)
    if layout is not None:
        var = var.join(layout, how="left")
    var.index = var.index.astype(str)
    adata = ad.AnnData(X=sp.csr_matrix(X, dtype=np.float32), obs=obs, var=var)
    adata.uns["enrichment"] = {"basis": basis, "thresholds": list(result.thresholds),
                               "n_concepts_scored": int(result.summary.get("n_concepts_scored", 0))}
    return adata


def write_h5ad(adata, path: str | Path) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        adata.write_h5ad(tmp)
    return path


def rank_features(adata, groupby: str, *, method: str = "wilcoxon", n_top: int = 10) -> pd.DataFrame:
    """Label-vs-rest feature ranking with ``scanpy.tl.rank_genes_groups`` (one block per label value)."""
    import scanpy as sc

    sub = adata[adata.obs[groupby].notna()].copy()
    counts = sub.obs[groupby].value_counts()
    keep = counts[counts >= 2].index
    sub = sub[sub.obs[groupby].isin(keep)].copy()
    if sub.obs[groupby].nunique() < 2:
        return pd.DataFrame(columns=["group", "names", "scores", "logfoldchanges", "pvals", "pvals_adj"])
    sub.obs[groupby] = sub.obs[groupby].astype(str).astype("category")
    sc.tl.rank_genes_groups(sub, groupby, method=method, reference="rest", use_raw=False,
                            n_genes=n_top, key_added="rank_features")
    df = sc.get.rank_genes_groups_df(sub, group=None, key="rank_features")
    if "group" not in df.columns:
        df.insert(0, "group", str(sub.obs[groupby].cat.categories[0]))
    return df.assign(label=groupby)


def decoder_layout(W_dec: Any, *, n_neighbors: int = 15, resolution: float = 1.0, seed: int = 0,
                   max_features: int | None = None) -> pd.DataFrame:
    """UMAP of decoder directions (cosine neighbours) with Leiden clusters, via scanpy.

    Features are rows of ``W_dec``; directions are unit-normalised so the map reflects what
    the features write, not their scale.
    """
    import anndata as ad
    import scanpy as sc

    W = W_dec.detach().cpu().float().numpy() if hasattr(W_dec, "detach") else np.asarray(W_dec, np.float32)
    n = W.shape[0]
    W = W / np.maximum(np.linalg.norm(W, axis=1, keepdims=True), 1e-12)
    idx = np.arange(n)
    if max_features is not None and n > max_features:
        idx = np.sort(np.random.default_rng(seed).choice(n, max_features, replace=False))
    a = ad.AnnData(X=W[idx].astype(np.float32))
    k = int(max(2, min(n_neighbors, len(idx) - 1)))
    verbosity = sc.settings.verbosity
    sc.settings.verbosity = 0
    # exact sklearn kNN with a Gaussian kernel: same graph quality at these sizes, and it skips
    # umap-learn's fuzzy_simplicial_set, whose numba compilation costs about a minute per process
    sc.pp.neighbors(a, n_neighbors=k, use_rep="X", metric="cosine", random_state=seed, method="gauss",
                    transformer="sklearn")
    sc.tl.umap(a, random_state=seed)
    sc.tl.leiden(a, resolution=resolution, random_state=seed, flavor="igraph", n_iterations=2,
                 directed=False)
    sc.settings.verbosity = verbosity
    out = pd.DataFrame({"umap1": np.nan, "umap2": np.nan, "leiden": ""}, index=np.arange(n))
    out.loc[idx, "umap1"] = a.obsm["X_umap"][:, 0]
    out.loc[idx, "umap2"] = a.obsm["X_umap"][:, 1]
    out.loc[idx, "leiden"] = a.obs["leiden"].astype(str).to_numpy()
    return out


def tokens_anndata(source: Any, concepts: Any, splits: Any, *, max_tokens: int = 200_000):
    """Tokens x features AnnData for small runs: obs = (sample, position, token, split), the
    concept rows in ``obsm["concepts"]`` (instance ids, sparse), X = raw feature activations."""
    import anndata as ad

    from core.enrich.engine import split_lookup
    from core.errors import ConfigError

    lookup = split_lookup(splits)
    blocks, meta = [], []
    n = 0
    for ch in source.iter_chunks(keep=lambda s: lookup(s) >= 0):
        n += len(ch["sample"])
        if n > max_tokens:
            raise ConfigError(f"token-level AnnData holds more than {max_tokens} tokens",
                              fix="use the sample-level features.h5ad or raise max_tokens")
        X = ch["X"]
        blocks.append(X if sp.issparse(X) else sp.csr_matrix(np.where(np.asarray(X) > 0, X, 0)))
        meta.append(pd.DataFrame({"sample": ch["sample"], "position": ch["position"], "token": ch["token"],
                                  "split": [SPLITS[int(c)] for c in lookup(ch["sample"])]}))
    obs = pd.concat(meta, ignore_index=True) if meta else pd.DataFrame(columns=["sample", "position", "token", "split"])
    obs["split"] = obs["split"].astype("category")
    obs.index = [f"{s}:{p}" for s, p in zip(obs["sample"], obs["position"], strict=True)]
    X = sp.vstack(blocks, format="csr") if blocks else sp.csr_matrix((0, source.n_features), dtype=np.float32)
    adata = ad.AnnData(X=sp.csr_matrix(X, dtype=np.float32), obs=obs,
                       var=pd.DataFrame(index=source.feature_names()))
    rows = concepts.row_index(obs["sample"].to_numpy(), obs["position"].to_numpy())
    adata.obsm["concepts"] = sp.csr_matrix(concepts.values[np.maximum(rows, 0)].multiply((rows >= 0)[:, None]))
    adata.uns["concepts"] = concepts.names
    return adata
