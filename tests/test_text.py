"""The text domain: token concepts from a store's token column, and the offline corpus."""

from __future__ import annotations

import pytest
import torch

from domains.text.concepts import text_concepts

STRINGS = ["Return", " the", " value", " (", "see", " `", "foo", "_", "bar", "`)", ".", " Next", " 12"]


class _Store:
    """What ``text_concepts`` reads from an activation store: its (sample, position, token) rows."""

    def __init__(self, first_position: int = 1) -> None:
        n = len(STRINGS)
        # two samples with the same tokens; rows of sample 1 come first to check the ordering
        self.cols = {"sample": torch.tensor([1] * n + [0] * n),
                     "position": torch.arange(first_position, first_position + n).repeat(2),
                     "token": torch.arange(n).repeat(2)}

    def load(self, columns):
        return {c: self.cols[c] for c in columns}


def test_token_and_span_concepts_follow_the_token_strings():
    cm = text_concepts(_Store(), lambda t: STRINGS[t])
    ind = cm.indicator().toarray().astype(bool)
    names = cm.names
    rows = cm.tokens.reset_index(drop=True)

    def tokens_of(name, sample=0):
        hit = ind[:, names.index(name)] & (rows["sample"].to_numpy() == sample)
        return [STRINGS[int(p) - 1] for p in rows["position"].to_numpy()[hit]]

    assert tokens_of("word_start") == [" the", " value", " Next"]
    assert tokens_of("function_word") == [" the"]
    assert tokens_of("underscore") == ["_"] and tokens_of("digit") == [" 12"]
    assert tokens_of("punctuation") == [" (", " `", "_", "`)", "."]
    assert tokens_of("in_parentheses") == ["see", " `", "foo", "_", "bar"]
    assert tokens_of("in_backquotes") == ["foo", "_", "bar"]
    assert tokens_of("sentence_start") == [" Next"]
    assert tokens_of("in_parentheses", sample=1) == tokens_of("in_parentheses")
    n_inst = dict(zip(names, cm.n_instances(), strict=True))
    assert n_inst["in_parentheses"] == 2 and n_inst["sentence_start"] == 2  # one span per sample


def test_docstring_corpus_is_real_prose_and_fixed():
    from domains.text.corpus import docstring_samples, stdlib_paragraphs

    texts = stdlib_paragraphs(50)
    assert len(texts) == 50 and all(200 < len(t) <= 1200 for t in texts)
    again = docstring_samples(10, start=40)
    assert [s.text for s in again] == texts[40:50] and again[0].id == "doc40"
    assert sum(t.count(" the ") for t in texts) > 50


def test_case_study_layer_range_is_checked():
    from core.errors import ConfigError
    from domains.text.studies.transcoders import check_layers

    assert check_layers({"layers": [3, 4, 5]}, 30) == [3, 4, 5]
    with pytest.raises(ConfigError, match="has layer 40, but the model has 30 layers"):
        check_layers({"layers": [3, 40]}, 30)
    with pytest.raises(ConfigError, match="at least two distinct increasing"):
        check_layers({"layers": [4, 3]}, 30)


@pytest.mark.slow
def test_transcoders_runner_on_a_tiny_model(tmp_path):
    """The whole runner on a random 3-layer Llama (char tokenizer), about a minute of CPU: every
    (layer, kind) entry, the CLT's replacement model with its error term equal to clean, the report."""
    import json

    from test_adapters import _tiny_causal
    from test_cli import sparsescope

    model = _tiny_causal("llama", tmp_path / "llama")
    run = tmp_path / "run"
    args = ["case_study=transcoders", "model=causal_lm", f"model.name_or_path={model}", "model.device=cpu",
            f"hydra.run.dir={run}", "case_study.layers=[0,1]", "case_study.n_train_samples=16",
            "case_study.max_chars=100", "case_study.dictionary.d_sae=32", "case_study.dictionary.k=4",
            "case_study.dictionary.aux_k=8", "case_study.training.total_tokens=1024",
            "case_study.training.batch_size=256", "case_study.training.buffer_tokens=512",
            "case_study.splice.n_samples=3", "case_study.splice.max_chars=100", "case_study.harvest.shard_tokens=512"]
    out = sparsescope(*args, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads((run / "results.json").read_text())
    rows = res["transcoders"]
    assert {(r["layer"], r["kind"]) for r in rows} == {(lay, k) for lay in (0, 1) for k in ("sae", "plt", "skip", "clt")}
    for r in rows:
        assert r["l0"] <= 4 + 1e-6 and 0 <= r["dead_frac"] <= 1 and r["fvu"] > 0 and r["kl"] >= 0
    check = [r for r in res["transcoders_all_layers"] if "with error" in r["kind"]][0]
    assert check["ce_spliced"] == pytest.approx(res["clean_ce"], abs=1e-5) and check["kl"] < 1e-6
    assert "ce_recovered_vs_l0" in (run / "report.html").read_text()
    assert len(list((run / "dictionaries").glob("*/cfg.json"))) == 7  # 2 x (sae, plt, skip) + the CLT


@pytest.mark.slow
def test_transcoders_case_study_end_to_end(tmp_path):
    """The case study at reduced size on the real SmolLM2: every (layer, kind) entry, the report."""
    import json
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    run = tmp_path / "run"
    args = ["case_study=transcoders", f"hydra.run.dir={run}", "case_study.layers=[2,3]", "case_study.n_train_samples=40",
            "case_study.dictionary.d_sae=1152", "case_study.dictionary.k=16", "case_study.training.total_tokens=16384",
            "case_study.training.batch_size=1024", "case_study.splice.n_samples=4"]
    out = subprocess.run([sys.executable, "-m", "core.cli", *args], cwd=root, capture_output=True, text=True,
                         timeout=3000)
    assert out.returncode == 0, out.stderr[-3000:]
    res = json.loads((run / "results.json").read_text())
    rows = res["transcoders"]
    assert {(r["layer"], r["kind"]) for r in rows} == {(lay, k) for lay in (2, 3) for k in ("sae", "plt", "skip", "clt")}
    for r in rows:
        assert {"fvu", "l0", "ce_recovered", "kl", "dead_frac"} <= set(r)
        assert 0 < r["l0"] < 1152 and r["fvu"] > 0 and r["kl"] >= 0
    check = [r for r in res["transcoders_all_layers"] if "with error" in r["kind"]][0]
    assert check["kl"] < 1e-4
    html = (run / "report.html").read_text()
    assert "ce_recovered_vs_l0" in html and "<table>" in html
