"""The controls a reviewer asks for, on planted data: InterPLM's dataset-wide normalisation, a
sequence-level choice made on validation and kept on test, a neuron baseline that finds a
neuron by its mean, a positional control that matches a concept defined by position, marker
vs span features, and a linear-probe ceiling."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp
import torch

from core.enrich.concepts import ConceptMatrix
from core.enrich.engine import enrich
from core.enrich.features import ArrayFeatures, NeuronFeatures
from core.enrich.position import PositionFeatures
from core.enrich.run import position_source

SPLIT = ("train", "valid", "test")


def samples(n_samples: int = 60, lo: int = 20, hi: int = 40, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame([(s, p) for s in range(n_samples) for p in range(int(rng.integers(lo, hi)))],
                        columns=["sample", "position"])


def test_a_feature_weak_in_one_protein_does_not_fire_there_at_half_its_dataset_max():
    # protein 0 (weak) and 3k+1.. (strong); one concept span [2, 6) in every protein; the
    # feature sits on the span at 1.0 in strong proteins and at 0.1 in the weak test protein
    tokens = samples(30, 10, 11)
    spans = [(s, 2, 6, "dom", s) for s in range(30)]
    cm = ConceptMatrix.from_spans(spans, tokens, pd.DataFrame({"name": ["dom"], "kind": ["instance"]}))
    smp, pos = tokens["sample"].to_numpy(), tokens["position"].to_numpy()
    on = (pos >= 2) & (pos < 6)
    weak = 2   # a test protein (2 % 3 == 2)
    X = np.where(on, np.where(smp == weak, 0.1, 1.0), 0.0).astype(np.float32)[:, None]
    splits = {s: SPLIT[s % 3] for s in range(30)}
    src = ArrayFeatures(smp, pos, sp.csr_matrix(X))
    grid = (0.0, 0.5)
    res = enrich({"sae": src}, cm, splits, thresholds=grid, min_positives=1, progress=False, n_cards=0)
    test_tokens_strong = int((on & (smp != weak) & (smp % 3 == 2)).sum())
    b = res.bases["sae"]
    assert b.counts["test"].fired[1, 0] == test_tokens_strong        # the weak protein stays silent at 0.5
    assert b.counts["test"].fired[0, 0] == test_tokens_strong + 4    # ... and fires at 0
    assert b.scale[0] == pytest.approx(1.0)
    assert res.summary["sae"]["normalise"] == {"by": "reference max", "split": "train",
                                               "n_tokens": int((smp % 3 == 0).sum())}
    per_sample = enrich({"sae": src}, cm, splits, thresholds=grid, min_positives=1, progress=False, n_cards=0,
                        normalise="sample")
    assert per_sample.bases["sae"].counts["test"].fired[1, 0] == test_tokens_strong + 4   # stretched to 1


def test_a_planted_sequence_feature_is_chosen_on_valid_and_keeps_its_auroc_on_test():
    rng = np.random.default_rng(1)
    tokens = samples(150)
    smp = tokens["sample"].to_numpy()
    y = rng.random(150) < 0.4
    X = (rng.random((len(tokens), 20)) < 0.1) * rng.uniform(0.1, 1, (len(tokens), 20))
    # feature 6 fires on a few tokens of labelled samples only (max pool separates, mean less so)
    X[:, 6] = y[smp] * (rng.random(len(tokens)) < 0.15) * rng.uniform(1, 2, len(tokens))
    cm = ConceptMatrix.from_spans([], tokens, pd.DataFrame({"name": ["none"], "kind": ["token"]}))
    labels = pd.DataFrame({"tagged": y}, index=pd.Index(range(150), name="sample"))
    splits = {s: SPLIT[s % 3] for s in range(150)}
    res = enrich({"sae": ArrayFeatures(smp, tokens["position"], sp.csr_matrix(X.astype(np.float32)))}, cm, splits,
                 sample_labels=labels, min_positives=1, progress=False, n_cards=0)
    pick = res.summary["sample_level"]["sae"]["tagged"]["True"]
    assert pick["feature"] == 6 and pick["pooling"] == "max"
    assert pick["auroc_valid"] > 0.95 and pick["auroc_test"] > 0.95


def _store(tmp_path, acts: np.ndarray, tokens: pd.DataFrame):
    from core.store import ActivationStore, ShardWriter

    smp, pos = tokens["sample"].to_numpy(), tokens["position"].to_numpy()
    w = ShardWriter(tmp_path / "store", model="toy", hook="h", d=acts.shape[1], shard_tokens=500)
    for s in np.unique(smp):
        m = smp == s
        w.add(torch.from_numpy(acts[m]), torch.from_numpy(smp[m]), torch.from_numpy(pos[m]),
              torch.zeros(int(m.sum()), dtype=torch.long), samples_done=int(s) + 1)
    w.close()
    return ActivationStore(tmp_path / "store")


def test_the_neuron_baseline_finds_a_neuron_by_its_mean_and_the_probe_sets_a_ceiling(tmp_path):
    rng = np.random.default_rng(2)
    tokens = samples(150)
    smp = tokens["sample"].to_numpy()
    y = rng.random(150) < 0.5
    acts = rng.normal(0, 1, (len(tokens), 8)).astype(np.float32)
    acts[:, 2] = 5 + rng.normal(0, 1, len(tokens)) - 1.5 * y[smp]   # non-zero everywhere, lower mean if y
    acts[:, 5] += 0.4 * y[smp] + 0.4 * y[smp] * rng.normal(0, 1, len(tokens))
    store = _store(tmp_path, acts, tokens)
    cm = ConceptMatrix.from_spans([], tokens, pd.DataFrame({"name": ["none"], "kind": ["token"]}))
    labels = pd.DataFrame({"y": y}, index=pd.Index(range(150), name="sample"))
    splits = {s: SPLIT[s % 3] for s in range(150)}
    res = enrich({"neuron": NeuronFeatures(store)}, cm, splits, sample_labels=labels, min_positives=1,
                 progress=False, n_cards=0)
    pick = res.summary["sample_level"]["neuron"]["y"]["True"]
    assert pick["feature_name"] == "n2-" and pick["pooling"] == "mean"
    assert pick["auroc_test"] > 0.95
    probe = res.summary["sample_level"]["neuron_probe"]["y"]["True"]
    assert probe["auroc_test"] >= pick["auroc_test"] - 0.02


def test_a_concept_defined_by_position_is_matched_by_the_positional_control():
    tokens = samples(90, 25, 45, seed=3)
    smp = tokens["sample"].to_numpy()
    last = tokens.groupby("sample")["position"].transform("max").to_numpy()
    spans = [(s, 0, 3, "head", s) for s in range(90)]
    spans += [(s, int(last[smp == s][0]) - 1, int(last[smp == s][0]) + 1, "tail", s) for s in range(90)]
    cm = ConceptMatrix.from_spans(spans, tokens, pd.DataFrame({"name": ["head", "tail"],
                                                               "kind": ["instance", "instance"]}))
    splits = {s: SPLIT[s % 3] for s in range(90)}
    src = position_source(cm, splits, ["head", "tail"])
    assert isinstance(src, PositionFeatures) and src.feature_names()[-2:] == ["clf:head", "clf:tail"]
    res = enrich({"position": src}, cm, splits, min_positives=1, progress=False, n_cards=0)
    best = res.best.set_index("concept")
    assert best.loc["head", "f1_test"] == pytest.approx(1.0)
    assert best.loc["tail", "f1_test"] == pytest.approx(1.0)
    assert best.loc["tail", "feature_name"].startswith(("end[", "clf:tail"))
    names = np.asarray(src.feature_names())
    assert best.loc["head", "token_f1_test"] == pytest.approx(1.0)   # e.g. the classifier, or start[0,4) at 0.75
    assert names[best.loc["head", "token_feature"]] in ("clf:head", "start[0,4)", "start[0,2)")


def test_a_single_residue_marker_has_full_instance_recall_low_coverage_and_is_a_marker():
    tokens = samples(60, 30, 40, seed=4)
    smp, pos = tokens["sample"].to_numpy(), tokens["position"].to_numpy()
    spans = [(s, 8, 20, "loop", s) for s in range(60)]
    cm = ConceptMatrix.from_spans(spans, tokens, pd.DataFrame({"name": ["loop"], "kind": ["instance"]}))
    X = np.zeros((len(tokens), 3), np.float32)
    X[:, 0] = pos == 8                       # the loop's first residue only
    X[:, 1] = (pos >= 8) & (pos < 20)        # the whole loop
    X[:, 2] = (pos >= 8) & (pos < 20) & (pos % 2 == 0)
    splits = {s: SPLIT[s % 3] for s in range(60)}
    res = enrich({"sae": ArrayFeatures(smp, pos, sp.csr_matrix(X))}, cm, splits, min_positives=1, progress=False,
                 n_cards=0)
    t = res.table[(res.table.split == "test")].set_index("feature")
    assert t.loc[0, "recall"] == pytest.approx(1.0) and t.loc[0, "f1"] == pytest.approx(1.0)
    assert t.loc[0, "coverage"] < 0.2
    best = res.best.iloc[0]
    assert best["feature"] == 0 and best["kind"] == "marker"   # ties go to the lower index
    assert best["token_feature"] == 1 and best["token_f1_test"] == pytest.approx(1.0)
    only_span = enrich({"sae": ArrayFeatures(smp, pos, sp.csr_matrix(X[:, 1:]))}, cm, splits, min_positives=1,
                       progress=False, n_cards=0)
    assert only_span.best.iloc[0]["kind"] == "span"
    assert res.summary["sae"]["n_markers"] == 1 and only_span.summary["sae"]["n_spans"] == 1


def test_subset_scores_show_what_a_feature_captures_beyond_position():
    # a region at residues 5-9 in most samples, shifted to 15-19 in every fourth one; feature 0
    # tracks the region wherever it is; the positional control can only learn the usual place
    tokens = samples(120, 30, 31, seed=5)
    smp, pos = tokens["sample"].to_numpy(), tokens["position"].to_numpy()
    shifted = {s for s in range(120) if s % 4 == 0}
    start = np.where(np.isin(smp, list(shifted)), 15, 5)
    spans = [(s, 15 if s in shifted else 5, 20 if s in shifted else 10, "reg", s) for s in range(120)]
    cm = ConceptMatrix.from_spans(spans, tokens, pd.DataFrame({"name": ["reg"], "kind": ["instance"]}))
    X = ((pos >= start) & (pos < start + 5)).astype(np.float32)[:, None]
    splits = {s: SPLIT[s % 3] for s in range(120)}
    sources = {"sae": ArrayFeatures(smp, pos, sp.csr_matrix(X)), "position": position_source(cm, splits, [])}
    res = enrich(sources, cm, splits, min_positives=1, progress=False, n_cards=0)
    from core.enrich.subsets import score_on_subsets

    scored = score_on_subsets(res, sources, cm, splits, {"reg": shifted}).set_index(["basis", "selection"])
    assert scored.loc[("sae", "f1"), "f1"] == pytest.approx(1.0)
    assert scored.loc[("sae", "token_f1"), "token_f1"] == pytest.approx(1.0)
    assert scored.loc[("position", "f1"), "f1"] < 0.3          # the usual place is empty on shifted chains
    assert scored.loc[("sae", "f1"), "n_samples"] == len([s for s in shifted if splits[s] == "test"])


def test_cached_latents_equal_fresh_ones_whatever_the_rows_kept(tmp_path):
    from core.dictionaries.base import build_dictionary
    from core.enrich.features import DictionaryFeatures

    rng = np.random.default_rng(6)
    tokens = samples(40, 10, 30, seed=6)
    store = _store(tmp_path, rng.normal(0, 1, (len(tokens), 8)).astype(np.float32), tokens)
    sae = build_dictionary({"architecture": "topk", "d_in": 8, "d_sae": 16, "k": 3})
    cached = DictionaryFeatures(sae, store, chunk_tokens=200)
    fresh = DictionaryFeatures(sae, store, chunk_tokens=200, cache_nnz=0)
    for keep in (lambda s: s % 3 == 0, lambda s: s % 3 != 0, None, lambda s: s % 3 == 0):
        a = list(cached.iter_chunks(keep))
        b = list(fresh.iter_chunks(keep))
        assert len(a) == len(b) and sum(len(c["sample"]) for c in a) > 0
        for x, y in zip(a, b, strict=True):
            np.testing.assert_array_equal(x["sample"], y["sample"])
            np.testing.assert_allclose(x["X"].toarray(), y["X"].toarray(), atol=1e-6)
    assert cached._cached_nnz > 0 and fresh._cached_nnz == 0
