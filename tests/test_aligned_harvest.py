"""Aligned multi-source harvest on tiny random models with the real AntiBERTy and IgLM token
maps: each model's special tokens dropped exactly, rows line up one to one, a sample one model
skips is dropped from both, and stores that do not line up are refused before training."""

from __future__ import annotations

import random
import shutil

import pytest
import torch

from core.adapters.antiberty import BertMLMAdapter, shipped_antiberty
from core.adapters.iglm import IgLMAdapter, shipped_iglm
from core.errors import DataError, UserError
from core.harvest.aligned import Source, harvest_aligned
from core.samples import Sample
from core.store import ActivationDataModule, ActivationStore

AA = "ACDEFGHIKLMNPQRSTVWY"


@pytest.fixture(scope="module")
def adapters(tmp_path_factory):
    from transformers import BertConfig, BertForMaskedLM, GPT2Config, GPT2LMHeadModel

    root = tmp_path_factory.mktemp("tiny_ab")
    torch.manual_seed(0)
    BertForMaskedLM(BertConfig(vocab_size=25, hidden_size=16, num_hidden_layers=2, num_attention_heads=2,
                               intermediate_size=32, max_position_embeddings=40)).save_pretrained(root / "bert")
    (root / "gpt").mkdir()
    GPT2LMHeadModel(GPT2Config(vocab_size=33, n_embd=12, n_layer=2, n_head=2,
                               n_positions=64)).save_pretrained(root / "gpt" / "model")
    shutil.copy(shipped_iglm("IgLM-S")[1], root / "gpt" / "vocab.txt")
    bert = BertMLMAdapter(str(root / "bert"), str(shipped_antiberty()[1]), device="cpu", long_sequences="skip")
    gpt = IgLMAdapter(str(root / "gpt" / "model"), device="cpu")
    return bert, gpt


def chains(n: int = 24, seed: int = 0) -> list[Sample]:
    rng = random.Random(seed)
    out = [Sample(f"c{i}", "".join(rng.choice(AA) for _ in range(rng.randint(8, 30))),
                  {"chain": rng.choice(["H", "K"])}) for i in range(n)]
    out.append(Sample("too_long_for_bert", "".join(rng.choice(AA) for _ in range(45)), {"chain": "H"}))
    return out


def _harvest(adapters, out, samples):
    bert, gpt = adapters
    sources = [Source("antiberty", bert, ["blocks.1.hook_resid_post"]), Source("iglm", gpt, ["blocks.0.hook_resid_post"])]
    return harvest_aligned(sources, samples, out, shard_tokens=128, progress=False), sources


def test_alignment_drops_exactly_each_models_special_tokens(adapters, tmp_path):
    samples = chains()
    stores, sources = _harvest(adapters, tmp_path, samples)
    a, b = stores["antiberty"]["blocks.1.hook_resid_post"], stores["iglm"]["blocks.0.hook_resid_post"]
    kept = samples[:-1]  # the 45-residue chain exceeds the tiny BERT's 38-residue window and is skipped there
    assert a.n_tokens == b.n_tokens == sum(len(s.text) for s in kept)
    ca, cb = (s.load(("sample", "position", "token")) for s in (a, b))
    assert torch.equal(ca["sample"], cb["sample"]) and torch.equal(ca["position"], cb["position"])
    assert int(ca["sample"].max()) == len(kept) - 1 and bool((ca["position"] >= 0).all())
    for store, cols in ((a, ca), (b, cb)):  # every stored token is the residue at its position
        vocab = store.meta["vocab"]
        text = "".join(vocab[int(t)] for t in cols["token"])
        assert text == "".join(samples[int(i)].text[int(p)] for i, p in zip(cols["sample"], cols["position"], strict=True))
    bert_drop, iglm_drop = sources[0].dropped, sources[1].dropped
    assert bert_drop["special_tokens"] == 2 * len(kept)  # [CLS] ... [SEP]
    assert iglm_drop["special_tokens"] == 3 * len(samples)  # [HEAVY|LIGHT] [HUMAN] ... [SEP], every chain
    assert iglm_drop["residues_not_shared"] == 45 and bert_drop["residues_not_shared"] == 0
    rec_a, rec_b = a.meta["alignment"], b.meta["alignment"]
    assert rec_a == rec_b and [s["name"] for s in rec_a["sources"]] == ["antiberty", "iglm"]
    assert [s["d"] for s in rec_a["sources"]] == [16, 12]
    dm = ActivationDataModule([a.root, b.root], batch_size=32)
    assert next(iter(dm.train_dataloader())).shape == (32, 28)
    again, _ = _harvest(adapters, tmp_path, samples)  # a re-run resumes: nothing changes
    assert again["iglm"]["blocks.0.hook_resid_post"].meta["alignment"] == rec_b


def test_stores_that_do_not_line_up_are_refused(adapters, tmp_path):
    samples = chains()
    good, _ = _harvest(adapters, tmp_path / "one", samples)
    fewer, _ = _harvest(adapters, tmp_path / "two", samples[:-3])
    shuffled = samples[:-1][::-1] + samples[-1:]  # the same chains in another order: same token count
    other, _ = _harvest(adapters, tmp_path / "three", shuffled)
    a = good["antiberty"]["blocks.1.hook_resid_post"]
    with pytest.raises(UserError, match="tokens"):
        ActivationDataModule([a.root, fewer["iglm"]["blocks.0.hook_resid_post"].root])
    b_other = other["iglm"]["blocks.0.hook_resid_post"]
    assert b_other.n_tokens == a.n_tokens
    with pytest.raises(DataError, match="different samples"):
        ActivationDataModule([a.root, b_other.root])
    plain = ActivationStore(b_other.root)
    assert plain.meta["alignment"]["rows_sha256"] != a.meta["alignment"]["rows_sha256"]
