"""Enrichment engine on planted data: the right feature wins, decoys lose, instances count once,
selection never sees test labels, statistics match reference implementations, bad input is refused."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from core.enrich.concepts import ConceptMatrix
from core.enrich.engine import enrich
from core.enrich.features import ArrayFeatures, iter_sample_chunks
from core.enrich.reference import f1_grid_loop
from core.errors import ConfigError, DataError, ShapeError

N_SAMPLES = 90


def planted(seed: int = 0, n_features: int = 12, noise: float = 0.05):
    """Samples of 30-50 tokens; an instance concept 'motif' (one span per sample in 4 of 5
    samples) and a token concept 'site' (two residues per sample). Feature 3 fires exactly on
    the motif, feature 5 exactly on sites, feature 7 is a decoy that fires on as many tokens
    as the motif has in each sample but at random positions; the rest is noise."""
    rng = np.random.default_rng(seed)
    tok, spans = [], []
    for s in range(N_SAMPLES):
        n = int(rng.integers(30, 50))
        tok += [(s, p) for p in range(n)]
        if s % 5 != 4:
            a, length = int(rng.integers(0, n - 8)), int(rng.integers(3, 8))
            spans.append((s, a, a + length, "motif", f"m{s}"))
        for p in rng.choice(n, 2, replace=False):
            spans.append((s, int(p), int(p) + 1, "site", 0))
    tokens = pd.DataFrame(tok, columns=["sample", "position"])
    table = pd.DataFrame({"name": ["motif", "site"], "kind": ["instance", "token"]})
    cm = ConceptMatrix.from_spans(spans, tokens, table)
    V = cm.values.toarray()
    n = len(tokens)
    X = np.zeros((n, n_features), np.float32)
    noisy = rng.random((n, n_features)) < noise
    X[noisy] = rng.uniform(0.05, 1, int(noisy.sum()))
    X[:, 3] = (V[:, 0] > 0) * rng.uniform(0.5, 2, n)
    X[:, 5] = (V[:, 1] > 0) * rng.uniform(0.5, 2, n)
    X[:, 7] = 0
    smp = tokens["sample"].to_numpy()
    for s in range(N_SAMPLES):
        rows = np.flatnonzero(smp == s)
        k = int((V[rows, 0] > 0).sum())
        X[rng.choice(rows, k, replace=False), 7] = rng.uniform(0.5, 2, k)
    splits = {s: ("train", "valid", "test")[s % 3] for s in range(N_SAMPLES)}
    return tokens, cm, X, splits


def run(tokens, cm, X, splits, **kw):
    src = ArrayFeatures(tokens["sample"], tokens["position"], sp.csr_matrix(X), chunk_tokens=kw.pop("chunk", 400))
    kw.setdefault("min_positives", 3)
    kw.setdefault("progress", False)
    return enrich({"sae": src}, cm, splits, **kw)


def test_planted_feature_gets_f1_one_and_top_rank_decoy_does_not():
    tokens, cm, X, splits = planted()
    res = run(tokens, cm, X, splits)
    best = res.best.set_index("concept")
    assert best.loc["motif", "feature"] == 3 and best.loc["site", "feature"] == 5
    assert best.loc["motif", "f1_test"] == pytest.approx(1.0)
    assert best.loc["site", "f1_test"] == pytest.approx(1.0)
    motif_test = res.table[(res.table.concept == "motif") & (res.table.split == "test")]
    assert motif_test.iloc[0]["feature"] == 3 and motif_test.iloc[0]["rank"] == 1
    decoy = motif_test[motif_test.feature == 7]
    assert len(decoy) == 1 and decoy.iloc[0]["rank"] > 1
    assert decoy.iloc[0]["f1"] < 0.5
    # the decoy has exactly the motif's token count per sample, so only position tells them apart
    assert (X[:, 7] > 0).sum() == (X[:, 3] > 0).sum()
    row = motif_test.iloc[0]
    assert row["q"] < 1e-10 and row["auroc"] > 0.99


def test_instance_recall_counts_instances_not_tokens():
    # two samples, each with a long (10 tokens) and a short (2 tokens) instance of one concept
    tokens = pd.DataFrame([(s, p) for s in range(4) for p in range(20)], columns=["sample", "position"])
    spans = []
    for s in range(4):
        spans += [(s, 0, 10, "dom", "long"), (s, 15, 17, "dom", "short")]
    cm = ConceptMatrix.from_spans(spans, tokens, pd.DataFrame({"name": ["dom"], "kind": ["instance"]}))
    X = np.zeros((80, 2), np.float32)
    pos = tokens["position"].to_numpy()
    X[(pos == 3) | (pos == 15), 0] = 1.0       # one token in every instance
    X[pos < 10, 1] = 1.0                        # every token of the long instances only
    res = run(tokens, cm, X, {0: "valid", 1: "valid", 2: "test", 3: "test"}, min_positives=1,
              thresholds=(0.0,), chunk=20)
    rec = res.bases["sae"].recall["test"][0, 0]
    assert rec[0] == pytest.approx(1.0)   # 4 of 4 instances hit although only 4 of 24 tokens
    assert rec[1] == pytest.approx(0.5)   # 2 of 4 instances although 20 of 24 tokens
    assert res.bases["sae"].counts["test"].n_inst[0] == 4
    # the same data as a per-token concept uses token recall
    cm_tok = ConceptMatrix(cm.values, cm.concepts.assign(kind="token"), cm.tokens)
    res_tok = run(tokens, cm_tok, X, {0: "valid", 1: "valid", 2: "test", 3: "test"}, min_positives=1,
                  thresholds=(0.0,), chunk=20)
    assert res_tok.bases["sae"].recall["test"][0, 0, 0] == pytest.approx(4 / 24)
    assert res_tok.bases["sae"].recall["test"][0, 0, 1] == pytest.approx(20 / 24)


def test_selection_never_sees_test_labels():
    tokens, cm, X, splits = planted(seed=1, noise=0.2)
    X = X.copy()
    X[:, 3] *= np.random.default_rng(0).random(len(X)) < 0.8   # make the choice non-trivial
    base = run(tokens, cm, X, splits)
    # scramble the concept rows of test tokens: test labels become noise
    test_rows = np.flatnonzero(tokens["sample"].map(splits).to_numpy() == "test")
    perm = np.random.default_rng(3).permutation(test_rows)
    vals = cm.values.tolil()
    vals[test_rows] = cm.values[perm]
    scrambled = ConceptMatrix(vals.tocsr(), cm.concepts, cm.tokens)
    other = run(tokens, scrambled, X, splits)
    cols = ["concept", "basis", "feature", "threshold", "f1_valid"]
    pd.testing.assert_frame_equal(base.best[cols], other.best[cols])
    assert not np.allclose(base.best["f1_test"], other.best["f1_test"])


def test_per_sample_normalisation_stays_available_as_an_option():
    # per-sample scales spanning four orders of magnitude; on-concept at the sample's max,
    # off-concept at 40 % of it: only a per-sample normalised threshold of 0.5 separates them
    tokens, cm, X, splits = planted(seed=2, noise=0.0)
    rng = np.random.default_rng(0)
    scale = 10.0 ** rng.uniform(-2, 2, N_SAMPLES)
    smp = tokens["sample"].to_numpy()
    motif = cm.values.toarray()[:, 0] > 0
    X = X.copy()
    has_motif = (smp % 5 != 4).astype(np.float32)   # samples without a motif stay silent
    X[:, 0] = np.where(motif, 1.0, 0.4) * scale[smp] * has_motif
    X[:, 3] = 0
    res = run(tokens, cm, X, splits, thresholds=(0.0, 0.15, 0.5), normalise="sample")
    best = res.best.set_index("concept").loc["motif"]
    assert best["feature"] == 0 and best["threshold"] == 0.5
    assert best["f1_test"] == pytest.approx(1.0)
    assert res.summary["sae"]["normalise"] == {"by": "per-sample max"}
    with pytest.raises(ConfigError, match="normalise"):
        run(tokens, cm, X, splits, normalise="protein")


def test_engine_matches_the_metric_definition_oracle_sparse_and_dense():
    rng = np.random.default_rng(5)
    tokens = pd.DataFrame([(s, p) for s in range(45) for p in range(int(rng.integers(5, 25)))],
                          columns=["sample", "position"])
    n = len(tokens)
    spans = []
    for c in range(4):
        for s in rng.choice(45, 18, replace=False):
            a = int(rng.integers(0, 5))
            spans.append((int(s), a, a + int(rng.integers(1, 4)), f"c{c}", f"{s}:{c}"))
    table = pd.DataFrame({"name": [f"c{c}" for c in range(4)], "kind": ["instance", "token"] * 2})
    cm = ConceptMatrix.from_spans(spans, tokens, table)
    # features of very different scale per sample, so per-sample and dataset maxima disagree
    X = np.where(rng.random((n, 15)) < 0.3, rng.normal(0, 1, (n, 15)), 0).astype(np.float32)
    smp = tokens["sample"].to_numpy()
    X *= (10.0 ** rng.uniform(-1, 1, 45))[smp, None].astype(np.float32)
    splits = {s: ("train", "valid", "test")[s % 3] for s in range(45)}
    split_of = np.array([splits[s] for s in smp])
    grid = (0.0, 0.15, 0.5, 0.6, 0.8)
    for normalise, ref_rows in (("global", split_of == "train"), ("sample", None)):
        for dense in (False, True):
            src = ArrayFeatures(smp, tokens["position"], X if dense else sp.csr_matrix(X), chunk_tokens=50)
            res = enrich({"b": src}, cm, splits, min_positives=1, progress=False, n_cards=0, normalise=normalise)
            b = res.bases["b"]
            for split in ("valid", "test"):
                ref = f1_grid_loop(X, smp, cm.values, table["kind"].tolist(), grid, reference_rows=ref_rows,
                                   rows=split_of == split)
                for k in ("precision", "recall", "f1"):
                    np.testing.assert_allclose(getattr(b, k)[split], ref[k], atol=1e-6)
    # the two normalisations do disagree on this data (so the oracle comparison has teeth)
    assert not np.allclose(f1_grid_loop(X, smp, cm.values, table["kind"].tolist(), grid,
                                        reference_rows=split_of == "train", rows=split_of == "test")["f1"],
                           f1_grid_loop(X, smp, cm.values, table["kind"].tolist(), grid,
                                        rows=split_of == "test")["f1"])


def test_q_values_match_statsmodels_and_p_matches_fisher_exact():
    from scipy.stats import fisher_exact
    from statsmodels.stats.multitest import multipletests

    from core.enrich.stats import bh_qvalues

    p = np.random.default_rng(0).uniform(0, 1, 500) ** 3
    np.testing.assert_allclose(bh_qvalues(p), multipletests(p, method="fdr_bh")[1], rtol=1e-12)
    tokens, cm, X, splits = planted(noise=0.2)
    res = run(tokens, cm, X, splits, top_k=6)
    t = res.table[res.table.split == "test"]
    np.testing.assert_allclose(t["q"], multipletests(t["p"], method="fdr_bh")[1], rtol=1e-10)
    for r in t.itertuples():
        if r.tp <= r.n_pos * r.n_fire / r.n_tokens:
            assert r.p == 1.0   # depleted pairs: documented p = 1
            continue
        tab = [[r.tp, r.n_fire - r.tp], [r.n_pos - r.tp, r.n_tokens - r.n_fire - r.n_pos + r.tp]]
        assert r.p == pytest.approx(fisher_exact(tab, alternative="greater")[1], rel=1e-6)
    assert res.table[res.table.split == "valid"]["p"].isna().all()
    # the whole (concept, feature) family: same p-values, larger family, q never smaller
    wide = run(tokens, cm, X, splits, top_k=6, fdr_family="all")
    tw = wide.table[wide.table.split == "test"]
    np.testing.assert_allclose(tw["p"].to_numpy(), t["p"].to_numpy())
    assert (tw["q"].to_numpy() >= t["q"].to_numpy() - 1e-15).all()


def test_auroc_matches_sklearn_on_raw_activation():
    from sklearn.metrics import roc_auc_score

    tokens, cm, X, splits = planted(noise=0.3)
    res = run(tokens, cm, X, splits, top_k=4)
    smp = tokens["sample"].to_numpy()
    te = np.array([splits[s] == "test" for s in smp])
    V = cm.values.toarray()
    for r in res.table[res.table.split == "test"].itertuples():
        exact = roc_auc_score(V[te, r.concept_index] > 0, X[te, r.feature])
        assert r.auroc == pytest.approx(exact, abs=0.01)


def test_sample_level_labels_select_on_valid_and_report_test():
    tokens, cm, X, splits = planted()
    labels = pd.DataFrame({"has_motif": ["yes" if s % 5 != 4 else "no" for s in range(N_SAMPLES)]})
    res = run(tokens, cm, X, splits, sample_labels=labels)
    top = res.sample_table[(res.sample_table.value == "yes") & (res.sample_table["rank"] == 1)].iloc[0]
    assert top["feature"] in (3, 7)   # both fire only in motif samples
    assert top["auroc_valid"] == pytest.approx(1.0) and top["auroc_test"] == pytest.approx(1.0)
    sl = res.summary["sample_level"]
    assert sl["select"] == "valid" and sl["report"] == "test"
    assert sl["sae"]["has_motif"]["yes"]["auroc_test"] == pytest.approx(1.0)


def test_sample_reduce_last_uses_the_last_token():
    tokens, cm, X, splits = planted()
    res = run(tokens, cm, X, splits, sample_reduce="last")
    b = res.bases["sae"]
    smp, pos = tokens["sample"].to_numpy(), tokens["position"].to_numpy()
    for i, s in enumerate(b.sample_ids[:10]):
        last = np.flatnonzero(smp == s)[np.argmax(pos[smp == s])]
        np.testing.assert_allclose(b.sample_act[i].toarray().ravel(), X[last])


def test_bad_inputs_are_refused_or_skipped_with_counts():
    tokens, cm, X, splits = planted()
    # token count mismatch
    short = ConceptMatrix.from_spans([], tokens.iloc[:-5], pd.DataFrame({"name": ["motif"]}))
    with pytest.raises(ShapeError, match="token rows but the activations"):
        run(tokens, short, X, splits)
    # activation tokens with no concept row (same count, shifted positions)
    shifted = ConceptMatrix(cm.values, cm.concepts, cm.tokens.assign(position=cm.tokens["position"] + 1))
    with pytest.raises(ShapeError, match="no row in the concept matrix"):
        run(tokens, shifted, X, splits)
    # an empty concept and a concept with no positives in the test split are skipped and counted
    table = pd.DataFrame({"name": ["motif", "empty", "valid_only"], "kind": ["instance", "token", "token"]})
    valid_sample = next(s for s, v in splits.items() if v == "valid")
    spans = [(s, 0, 3, "motif", s) for s in range(N_SAMPLES)] + [(valid_sample, 0, 5, "valid_only", 0)]
    cm2 = ConceptMatrix.from_spans(spans, tokens, table)
    res = run(tokens, cm2, X, splits, min_positives=1)
    reasons = dict(zip(res.skipped["concept"], res.skipped["reason"], strict=True))
    assert reasons["empty"].startswith("empty")
    assert "no positives in the test split" in reasons["valid_only"]
    assert res.summary["n_concepts_skipped"] == 2 and res.summary["n_concepts_scored"] == 1
    assert set(res.best["concept"]) == {"motif"}
    # support below min_positives
    res = run(tokens, cm2, X, splits, min_positives=10_000)
    assert res.summary["n_concepts_scored"] == 0 and res.best.empty
    with pytest.raises(ConfigError, match="unknown split"):
        run(tokens, cm, X, {0: "holdout"})
    with pytest.raises(ConfigError, match="thresholds"):
        run(tokens, cm, X, splits, thresholds=(0.5, 1.5))


def test_samples_split_over_shards_are_joined_and_scattered_samples_refused():
    shards = [{"sample": np.array([0, 0, 1]), "position": np.array([0, 1, 0])},
              {"sample": np.array([1, 1, 2]), "position": np.array([1, 2, 0])}]
    chunks = list(iter_sample_chunks(iter(shards), chunk_tokens=100))
    whole = np.concatenate([c["sample"] for c in chunks])
    assert whole.tolist() == [0, 0, 1, 1, 1, 2]
    for c in chunks:   # no sample is cut between chunks
        assert not any(set(c["sample"]) & set(o["sample"]) for o in chunks if o is not c)
    bad = [{"sample": np.array([0, 1, 0]), "position": np.array([0, 0, 1])}]
    with pytest.raises(DataError, match="not contiguous"):
        list(iter_sample_chunks(iter(bad), chunk_tokens=100))


def _store_and_sae(tmp_path):
    """A tiny activation store with a planted direction and a ReLU SAE whose latent 0 reads it."""
    from core.dictionaries.base import build_dictionary
    from core.store import ActivationStore, ShardWriter

    tokens, cm, _, splits = planted()
    rng = np.random.default_rng(0)
    d = 16
    u = np.zeros(d, np.float32)
    u[0] = 1
    motif = (cm.values.toarray()[:, 0] > 0).astype(np.float32)
    acts = rng.normal(0, 0.1, (len(tokens), d)).astype(np.float32) + np.outer(motif * 3, u)
    w = ShardWriter(tmp_path / "store", model="toy", hook="blocks.0.hook_resid_post", d=d, shard_tokens=700)
    smp, pos = tokens["sample"].to_numpy(), tokens["position"].to_numpy()
    for s in range(N_SAMPLES):
        m = smp == s
        w.add(torch.from_numpy(acts[m]), torch.from_numpy(smp[m]), torch.from_numpy(pos[m]),
              torch.from_numpy(rng.integers(0, 20, int(m.sum()))), samples_done=s + 1)
    w.close()
    sae = build_dictionary({"architecture": "relu", "d_in": d, "d_sae": 8})
    with torch.no_grad():
        sae.W_enc.zero_()
        sae.b_dec.zero_()
        sae.W_enc[0, 0] = 1.0
        sae.b_enc.fill_(-1.0)
        sae.W_enc[1:, 1:] = torch.randn(d - 1, 7)
    return ActivationStore(tmp_path / "store"), sae, cm, splits


def test_run_enrichment_writes_tables_anndata_and_report(tmp_path):
    import anndata as ad

    from core.enrich import run_enrichment

    store, sae, cm, splits = _store_and_sae(tmp_path)
    labels = pd.DataFrame({"grp": ["a" if s % 2 else "b" for s in range(N_SAMPLES)]})
    summary = run_enrichment(sae, store, cm, splits, tmp_path / "out", min_positives=3, sample_labels=labels,
                             progress=False, chunk_tokens=300, umap=False, token_level=True)
    out = tmp_path / "out"
    for f in ("enrichment.tsv", "enrichment_best.tsv", "skipped_concepts.tsv", "features.h5ad", "neurons.h5ad",
              "report.html", "enrichment_summary.json", "sample_enrichment.tsv", "rank_grp.tsv"):
        assert (out / f).exists(), f
    assert summary["sae"]["per_concept"]["motif"]["feature"] == 0
    assert summary["sae"]["per_concept"]["motif"]["f1_test"] > 0.95
    # the neuron baseline finds the planted dimension too (it is a single neuron here)
    assert summary["neuron"]["per_concept"]["motif"]["feature"] == 0
    table = pd.read_csv(out / "enrichment.tsv", sep="\t")
    assert {"feature", "concept", "threshold", "precision", "recall", "f1", "auroc", "odds_ratio", "p", "q",
            "split", "basis"} <= set(table.columns)
    assert set(table["basis"]) == {"sae", "neuron"}
    a = ad.read_h5ad(out / "features.h5ad")
    assert a.shape == (60, 8) and sp.issparse(a.X)
    assert a.var.loc["f0", "best_concept"] == "motif"
    assert {"split", "grp"} <= set(a.obs.columns)
    assert {"density", "best_concept", "f1_test"} <= set(a.var.columns)
    tok = ad.read_h5ad(out / "tokens.h5ad")
    assert tok.shape == (store.n_tokens, 8) and set(tok.obs["split"]) == {"train", "valid", "test"}
    assert tok.obsm["concepts"].shape == (tok.n_obs, 2)
    motif = np.asarray(tok.obsm["concepts"][:, 0].todense()).ravel() > 0
    assert np.asarray(tok.X[:, 0].todense()).ravel()[motif].min() > 0
    html = (out / "report.html").read_text()
    assert "Feature cards" in html and "data:image/png;base64" in html


@pytest.mark.slow
def test_decoder_layout_gives_umap_and_leiden_clusters_of_directions():
    from core.enrich.anndata_export import decoder_layout

    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 16))
    W = np.repeat(centres, 40, axis=0) + 0.05 * rng.normal(size=(120, 16))
    lay = decoder_layout(W, n_neighbors=10)
    assert lay[["umap1", "umap2"]].notna().all().all()
    # directions from one centre share a cluster
    for g in range(3):
        assert lay["leiden"].iloc[g * 40:(g + 1) * 40].nunique() == 1
    assert lay["leiden"].nunique() >= 3
