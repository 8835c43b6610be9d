"""core.explain on planted truth: the sampler's quantile bins hold what they claim, negatives are
negative, the concept scorer separates true from shuffled explanations at chance, and the judge
scorers compute their metrics exactly from a scripted fake endpoint that also times out, fails
and answers garbage."""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

from core.enrich.concepts import ConceptMatrix
from core.enrich.features import ArrayFeatures
from core.explain.examples import ExampleSampler, SamplerConfig
from core.explain.records import ExampleSet

TOKENS_PER_SAMPLE = 40


def planted_source(n_tokens=16000, n_features=8, seed=0, chunk=3000, rare=(6, 7)):
    """Features fire on ~5% of tokens with exponential activations, the ``rare`` ones on 0.1%."""
    rng = np.random.default_rng(seed)
    sample = np.arange(n_tokens) // TOKENS_PER_SAMPLE
    position = np.arange(n_tokens) % TOKENS_PER_SAMPLE
    token = rng.integers(0, 500, n_tokens)
    X = np.zeros((n_tokens, n_features), np.float32)
    for f in range(n_features):
        on = rng.random(n_tokens) < (0.001 if f in rare else 0.05)
        X[on, f] = rng.exponential(1.0, int(on.sum())) + 1e-3
    return ArrayFeatures(sample, position, sp.csr_matrix(X), token=token, chunk_tokens=chunk), X, token


def _sample(tmp_path, src, n_features, **kw):
    cfg = SamplerConfig(**{"min_examples": 50, "reservoir": 4000, "part_windows": 300, **kw})
    nbrs = np.array([[(f + 1) % n_features, (f + 2) % n_features] for f in range(n_features)])
    ExampleSampler(src, tmp_path / "ex", cfg, neighbours=nbrs, progress=False).run()
    return ExampleSet(tmp_path / "ex"), cfg, nbrs


def test_quantile_bins_hold_what_they_claim_and_negatives_are_negative(tmp_path):
    src, X, token = planted_source()
    es, cfg, nbrs = _sample(tmp_path, src, X.shape[1])
    assert list(es.features) == [0, 1, 2, 3, 4, 5]
    assert es.n_skipped_too_few == 2  # the two rare features fire < min_examples times
    for f in es.features:
        rec = es.record(f)
        vals = X[:, f][X[:, f] > 0]
        assert rec.n_activating == len(vals)
        np.testing.assert_allclose(rec.edges, np.quantile(vals, np.linspace(0, 1, 11)), rtol=1e-6)
        assert len(rec.train) == 40 and len(rec.test) == 50
        bins = [w.bin for w in rec.train + rec.test]
        assert np.bincount(bins, minlength=10).tolist() == [9] * 10
        for w in rec.train + rec.test:
            row = w.sample * TOKENS_PER_SAMPLE + w.position
            assert rec.edges[w.bin] <= w.activation <= rec.edges[w.bin + 1]
            assert w.activation == X[row, f] and token[row] == w.tokens[w.centre]
            lo = row - w.centre
            np.testing.assert_array_equal(w.tokens, token[lo:lo + len(w.tokens)])
            np.testing.assert_allclose(w.acts, X[lo:lo + len(w.tokens), f])
            start = min(max(w.position - 24, 0), TOKENS_PER_SAMPLE - cfg.ctx_len)  # 3/4 in, inside the sample
            assert len(w.tokens) == cfg.ctx_len and w.centre == w.position - start
        assert len(rec.negatives) == cfg.n_non_activating
        for w in rec.negatives:
            lo = w.sample * TOKENS_PER_SAMPLE + w.position - w.centre
            assert not (X[lo:lo + len(w.tokens), f] > 0).any()
        assert len({(w.sample, w.position) for w in rec.negatives}) == len(rec.negatives)
        for w in rec.hard:
            row = w.sample * TOKENS_PER_SAMPLE + w.position
            assert (X[row, nbrs[f]] > 0).any()


def test_sampling_resumes_after_a_kill_with_the_same_windows(tmp_path):
    src, X, _ = planted_source()
    full, _, _ = _sample(tmp_path / "a", src, X.shape[1])

    class Dies:
        def __init__(self, inner, after):
            self.inner, self.after, self.n_features, self.calls = inner, after, inner.n_features, 0

        def iter_chunks(self, keep=None):
            self.calls += 1
            for i, ch in enumerate(self.inner.iter_chunks(keep)):
                if self.calls == 3 and i == self.after:
                    raise KeyboardInterrupt
                yield ch

    cfg = SamplerConfig(min_examples=50, reservoir=4000, part_windows=300)
    nbrs = np.array([[(f + 1) % 8, (f + 2) % 8] for f in range(8)])
    with pytest.raises(KeyboardInterrupt):
        ExampleSampler(Dies(src, 4), tmp_path / "b" / "ex", cfg, neighbours=nbrs, progress=False).run()
    state = json.loads((tmp_path / "b" / "ex" / "examples.json").read_text())
    assert not state["complete"] and state["parts"]
    ExampleSampler(src, tmp_path / "b" / "ex", cfg, neighbours=nbrs, progress=False).run()
    again = ExampleSet(tmp_path / "b" / "ex")
    for f in full.features:
        a, b = full.record(f), again.record(f)
        assert [(w.sample, w.position) for w in a.test] == [(w.sample, w.position) for w in b.test]
        assert [(w.sample, w.position) for w in a.negatives] == [(w.sample, w.position) for w in b.negatives]


def planted_concepts(n_tokens=20000, n_features=12, seed=0, p=0.08, noise=0.01):
    """Independent token classes; feature f fires on class f (plus noise)."""
    rng = np.random.default_rng(seed)
    sample = np.arange(n_tokens) // TOKENS_PER_SAMPLE
    position = np.arange(n_tokens) % TOKENS_PER_SAMPLE
    member = rng.random((n_tokens, n_features)) < p
    X = (member * rng.uniform(0.5, 2, member.shape) + (rng.random(member.shape) < noise) * 0.3).astype(np.float32)
    tokens = pd.DataFrame({"sample": sample, "position": position})
    concepts = pd.DataFrame({"name": [f"class{f}" for f in range(n_features)], "kind": "token"})
    cm = ConceptMatrix(sp.csr_matrix(member.astype(np.int32)), concepts, tokens)
    return ArrayFeatures(sample, position, sp.csr_matrix(X), chunk_tokens=4000), cm, member


def test_concept_scorer_true_above_shuffled_and_shuffled_at_chance():
    from core.explain.concept_scorer import concept_aurocs
    from core.explain.run import derangement

    src, cm, member = planted_concepts()
    n_f = member.shape[1]
    test = np.arange(0, 500, 2)
    keep = lambda s: np.isin(s, test)  # noqa: E731
    perm = derangement(n_f, 0)
    assert (perm != np.arange(n_f)).all()
    true = concept_aurocs(src, cm, [(f, f"class{f}") for f in range(n_f)], keep=keep)
    shuf = concept_aurocs(src, cm, [(f, f"class{perm[f]}") for f in range(n_f)], keep=keep)
    t = np.array([r["auroc"] for r in true])
    s = np.array([r["auroc"] for r in shuf])
    assert (t > 0.95).all()
    n_pos, n_neg = true[0]["n_pos"], true[0]["n_neg"]
    sd = np.sqrt((n_pos + n_neg + 1) / (12 * n_pos * n_neg))  # AUROC's sd under the null
    assert abs(s.mean() - 0.5) < 3 * sd / np.sqrt(n_f) + 0.01
    assert (np.abs(s - 0.5) < 4 * sd + 0.01).all()
    from sklearn.metrics import roc_auc_score

    rows = np.flatnonzero(keep(cm.tokens["sample"].to_numpy()))
    Xd = src.X.toarray()
    assert t[3] == pytest.approx(roc_auc_score(member[rows, 3], Xd[rows, 3]))
    assert s[3] == pytest.approx(roc_auc_score(member[rows, perm[3]], Xd[rows, 3]))


# --- fake OpenAI-compatible endpoint ---------------------------------------------------------

class FakeEndpoint:
    """A thread serving /v1/chat/completions from a script: callables of the request body that
    return (status, body bytes, delay seconds)."""

    def __init__(self, answer):
        self.answer, self.requests = answer, []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.requests.append(body)
                status, payload, delay = outer.answer(body, len(outer.requests))
                if delay:
                    threading.Event().wait(delay)
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.end_headers()
                    self.wfile.write(payload)
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def log_message(self, *a):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def chat(text, top=None):
    choice = {"index": 0, "message": {"role": "assistant", "content": text}}
    if top is not None:
        choice["logprobs"] = {"content": [{"token": max(top, key=top.get), "logprob": max(top.values()),
                                           "top_logprobs": [{"token": t, "logprob": v} for t, v in top.items()]}]}
    return json.dumps({"choices": [choice]}).encode()


def _excerpt(body):
    return body["messages"][-1]["content"].split("Excerpt: ")[1].split("\n\n")[0]


def test_detection_metrics_are_computed_exactly_from_scripted_answers(tmp_path):
    from sklearn.metrics import balanced_accuracy_score, roc_auc_score

    from core.explain.clients import HTTPChat
    from core.explain.scorers import DetectionScorer
    from core.explain.text import TokenText

    src, X, _ = planted_source()
    es, _, _ = _sample(tmp_path, src, X.shape[1])
    rec = es.record(2)
    text = TokenText([f"w{i} " for i in range(500)])
    client = HTTPChat("http://unused", "m")
    items = DetectionScorer(client, text).items(rec)
    label = dict(items)
    rng = np.random.default_rng(0)
    script = {ex: (rng.random() < 0.8) == bool(y) for ex, y in items}  # a judge right 80% of the time
    margin = {ex: float(rng.normal(1.0 if y else -1.0)) for ex, y in items}

    def answer(body, n):
        ex = _excerpt(body)
        said = "Yes" if script[ex] else "No"
        return 200, chat(said, {"Yes": -0.1 + min(margin[ex], 0), "No": -0.1 - max(margin[ex], 0)}), 0

    with FakeEndpoint(answer) as ep:
        scorer = DetectionScorer(HTTPChat(ep.url, "served-model", retries=0), text)
        res = scorer.score(rec, "some explanation")
        assert all(b["model"] == "served-model" and b["logprobs"] for b in ep.requests)
    y = np.array([label[ex] for ex, _ in items])
    pred = np.array([int(script[ex]) for ex, _ in items])
    s = np.array([margin[ex] for ex, _ in items])
    assert res.n_items == res.n_scored == 100 and res.n_failed == 0
    assert res.balanced_accuracy == pytest.approx(balanced_accuracy_score(y, pred))
    assert res.auroc == pytest.approx(roc_auc_score(y, s))


def test_fuzzing_marks_the_true_tokens_and_scores_exactly_from_scripted_answers(tmp_path):
    from sklearn.metrics import balanced_accuracy_score, roc_auc_score

    from core.explain.clients import HTTPChat
    from core.explain.scorers import FuzzScorer
    from core.explain.text import MARK_OPEN, TokenText, render

    src, X, _ = planted_source()
    es, _, _ = _sample(tmp_path, src, X.shape[1])
    rec = es.record(4)
    text = TokenText([f"w{i} " for i in range(500)])
    items = FuzzScorer(HTTPChat("http://unused", "m"), text).items(rec)
    n = len(rec.test)
    assert sorted(y for _, y in items) == [0] * n + [1] * n
    truly = {render(text.tokens(w.tokens), w.active) for w in rec.test}
    assert {ex for ex, y in items if y == 1} == truly  # positives: exactly the active tokens marked

    def n_marked(ex):
        return sum(len(re.findall(r"w\d+", run)) for run in re.findall(f"{MARK_OPEN}(.*?)>>", ex))

    negatives = [ex for ex, y in items if y == 0]
    assert sorted(map(n_marked, negatives)) == sorted(max(1, int(w.active.sum())) for w in rec.test)
    rng = np.random.default_rng(1)
    said = {ex: (rng.random() < 0.7) == bool(y) for ex, y in items}  # a judge right 70% of the time
    margin = {ex: float(rng.normal(0.8 if y else -0.8)) for ex, y in items}

    def answer(body, _):
        ex = _excerpt(body)
        return 200, chat("Yes" if said[ex] else "No", {"Yes": 0.0, "No": -margin[ex]}), 0

    with FakeEndpoint(answer) as ep:
        res = FuzzScorer(HTTPChat(ep.url, "served", retries=0), text).score(rec, "an explanation")
        assert all("marked tokens" in b["messages"][-1]["content"] for b in ep.requests)
    y = np.array([lab for _, lab in items])
    assert res.scorer == "fuzzing" and res.n_scored == res.n_items == 2 * n and res.n_failed == 0
    assert res.balanced_accuracy == pytest.approx(balanced_accuracy_score(y, [int(said[ex]) for ex, _ in items]))
    assert res.auroc == pytest.approx(roc_auc_score(y, [margin[ex] for ex, _ in items]))


def test_endpoint_timeouts_retries_and_garbage_keep_what_could_be_scored(tmp_path):
    from core.explain.clients import EndpointError, HTTPChat
    from core.explain.scorers import DetectionScorer
    from core.explain.text import TokenText

    src, X, _ = planted_source()
    es, _, _ = _sample(tmp_path, src, X.shape[1])
    rec = es.record(1)
    text = TokenText([f"w{i} " for i in range(500)])
    attempts = {}

    def answer(body, n):
        ex = _excerpt(body)
        k = attempts[ex] = attempts.get(ex, 0) + 1
        h = sum(map(ord, ex)) % 4
        if h == 0:
            return 200, b"<html>not json</html>", 0  # garbage on every try
        if h == 1 and k == 1:
            return 200, chat("Yes"), 0.5  # too slow the first time, then fine
        if h == 2 and k == 1:
            return 503, b"{}", 0  # overloaded once
        return 200, chat("Yes" if "w" in ex else "No"), 0

    with FakeEndpoint(answer) as ep:
        client = HTTPChat(ep.url, "m", timeout=0.2, retries=2, backoff=0.01)
        scorer = DetectionScorer(client, text, max_items=40)
        res = scorer.score(rec, "x")
        times = pd.Series([ex for ex, _ in scorer.items(rec)]).value_counts()  # identical windows can recur
        kind = {ex: sum(map(ord, ex)) % 4 for ex in times.index}
        n_garbage = int(sum(times[ex] for ex in times.index if kind[ex] == 0))
        assert res.n_failed == n_garbage > 0
        assert res.n_scored == res.n_items - n_garbage and res.balanced_accuracy is not None
        assert all(attempts[ex] == 3 * times[ex] for ex in times.index if kind[ex] == 0)
        assert all(attempts[ex] == times[ex] + 1 for ex in times.index if kind[ex] in (1, 2))
        assert all(attempts[ex] == times[ex] for ex in times.index if kind[ex] == 3)
        assert "unusable answer" in res.error and ep.url in res.error
    dead = HTTPChat("http://127.0.0.1:9", "m", timeout=0.2, retries=1, backoff=0.01)
    out = dead.complete([[{"role": "user", "content": "hi"}]], max_tokens=2)
    assert isinstance(out[0], EndpointError) and "cannot connect" in str(out[0]) and "fix:" in str(out[0])


def test_a_dead_endpoint_stops_the_run_with_a_message_and_keeps_scores(tmp_path):
    from core.explain.clients import EndpointError, HTTPChat
    from core.explain.explainers import ConceptExplainer
    from core.explain.run import explain_and_score
    from core.explain.scorers import DetectionScorer
    from core.explain.text import TokenText

    src, X, _ = planted_source()
    es, _, _ = _sample(tmp_path, src, X.shape[1])
    table = pd.DataFrame({"basis": "sae", "split": "valid", "feature": range(6), "concept": [f"c{i}" for i in range(6)],
                          "f1": 0.9})
    up = {"on": True}

    def answer(body, n):
        return (200, chat("Yes"), 0) if up["on"] else (500, b"down", 0)

    with FakeEndpoint(answer) as ep:
        client = HTTPChat(ep.url, "m", timeout=1, retries=1, backoff=0.01)
        scorer = DetectionScorer(client, TokenText(None), max_items=10)
        explainer = ConceptExplainer(table)

        class Flaky(ConceptExplainer):
            def explain(self, records):
                if any(r.feature >= 2 for r in records):
                    up["on"] = False
                return explainer.explain(records)

        with pytest.raises(EndpointError, match="scores computed so far are kept"):
            explain_and_score(es, Flaky(table), {"detection": scorer}, tmp_path / "out", batch=2,
                              shuffled_control=False, progress=False)
        kept = pd.read_csv(tmp_path / "out" / "scores.tsv", sep="\t")
        assert set(kept.loc[kept.n_failed == 0, "feature"]) == {0, 1}
        up["on"] = True
        summary = explain_and_score(es, explainer, {"detection": scorer}, tmp_path / "out", batch=2,
                                    shuffled_control=False, progress=False)
    assert summary["detection_own"]["n_features"] == 6 and summary["detection_own"]["n_failed_prompts"] == 0
    again = pd.read_csv(tmp_path / "out" / "scores.tsv", sep="\t")
    assert sorted(again["feature"]) == list(range(6))  # features that failed entirely were redone


def test_parse_and_yes_no_score():
    from core.explain.clients import yes_no_score
    from core.explain.scorers import parse_yes_no

    assert [parse_yes_no(a) for a in ("Yes.", " no", "1", "0", "**Yes**", "maybe", "", "Nope")] == \
        [1, 0, 1, 0, 1, None, None, None]
    assert yes_no_score({"Yes": np.log(0.75), " yes": np.log(0.05), "No": np.log(0.2)}) == pytest.approx(np.log(4))
    assert yes_no_score({"banana": -1.0}) is None


# --- the stage on a planted store ------------------------------------------------------------

def planted_store(root, n_samples=300, d=12, seed=0, p=0.08):
    """A store whose dimension f is "class f is present" (independent classes, random magnitudes),
    an identity ReLU SAE over it (latent f = dimension f), and the class concept matrix."""
    import torch

    from core.checkpoint import save_sae
    from core.dictionaries import DictionaryConfig, build_dictionary
    from core.store import ShardWriter

    n = n_samples * TOKENS_PER_SAMPLE
    rng = np.random.default_rng(seed)
    member = rng.random((n, d)) < p
    x = member * rng.uniform(0.5, 2, (n, d)) + rng.normal(0, 0.01, (n, d))
    sample = np.arange(n) // TOKENS_PER_SAMPLE
    position = np.arange(n) % TOKENS_PER_SAMPLE
    with ShardWriter(root / "store", model="toy", hook="h", d=d, shard_tokens=4096,
                     meta={"vocab": [f"t{i}" for i in range(50)]}) as w:
        w.add(torch.as_tensor(x, dtype=torch.float32), torch.as_tensor(sample), torch.as_tensor(position),
              torch.as_tensor(rng.integers(0, 50, n)), samples_done=n_samples)
    sae = build_dictionary(DictionaryConfig("relu", d_in=d, d_sae=d))
    with torch.no_grad():
        sae.W_enc.copy_(torch.eye(d))
        sae.W_dec.copy_(torch.eye(d))
        sae.b_enc.zero_()
        sae.b_dec.zero_()
    save_sae(sae, root / "sae")
    tokens = pd.DataFrame({"sample": sample, "position": position})
    concepts = pd.DataFrame({"name": [f"class{f}" for f in range(d)], "kind": "token"})
    ConceptMatrix(sp.csr_matrix(member.astype(np.int32)), concepts, tokens).save(root / "concepts")
    table = pd.DataFrame({"basis": "sae", "split": "valid", "feature": range(d),
                          "concept": [f"class{f}" for f in range(d)], "f1": 0.8})
    table.to_csv(root / "enrichment.tsv", sep="\t", index=False)
    return member


def test_explain_stage_with_concepts_scores_true_above_shuffled(tmp_path):
    from omegaconf import OmegaConf

    from core.stages import explain as stage

    planted_store(tmp_path)
    cfg = OmegaConf.create({"data": {"root": str(tmp_path / "store")}, "explain": {
        "sae": str(tmp_path / "sae"), "explainer": "concepts", "scorers": ["concept"],
        "enrichment": str(tmp_path / "enrichment.tsv"), "concepts": str(tmp_path / "concepts"),
        "n_features": 12, "progress": False, "examples": {"min_examples": 100, "part_windows": 500}}})
    out = stage.run(cfg, tmp_path / "run")["explain"]
    assert out["n_features_chosen"] == 12 and out["examples"]["n_eligible"] == 12
    assert out["concept_own"]["auroc"] > 0.95
    assert abs(out["concept_shuffled"]["auroc"] - 0.5) < 0.05
    scores = pd.read_csv(tmp_path / "run" / "explanations" / "concept_scores.tsv", sep="\t")
    assert len(scores) == 24
    from core.sequence_annotation.trained_run import read_explanations

    labels = read_explanations(tmp_path / "run" / "explanations" / "explanations.tsv")
    assert labels.loc[3, "explanation"] == "class3" and labels.loc[3, "explanation_score"] > 0.95
    cfg.explain.scorers = ["bogus"]
    from core.errors import ConfigError

    with pytest.raises(ConfigError, match="detection"):
        stage.run(cfg, tmp_path / "run2")
