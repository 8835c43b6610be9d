"""Adapters on tiny random models: capture, splice, steer and stop-early behave exactly.

Each model is built in the test (random weights, a few layers) and saved to a local folder
or file first, so the real local loading code is what gets exercised.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from core.adapters import load_adapter
from core.adapters.interventions import Ablate, Splice
from core.errors import ConfigError, DataError, OfflineError
from core.samples import Sample

torch.manual_seed(0)

CHARS = "abcdefghijklmnopqrstuvwxyz .,?!"


def _char_tokenizer():
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<bos>": 1, "<eos>": 2, "<unk>": 3}
    for c in CHARS:
        vocab[c] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>",
                                   pad_token="<pad>", unk_token="<unk>")


def _tiny_causal(kind: str, folder):
    from transformers import GPT2Config, GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    vocab = 4 + len(CHARS)
    if kind == "llama":
        cfg = LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                          bos_token_id=1, eos_token_id=2, pad_token_id=0)
        model = LlamaForCausalLM(cfg)
    elif kind == "qwen2":
        from transformers import Qwen2Config, Qwen2ForCausalLM

        cfg = Qwen2Config(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
                          bos_token_id=1, eos_token_id=2, pad_token_id=0)
        model = Qwen2ForCausalLM(cfg)
    elif kind == "gemma":
        from transformers import GemmaConfig, GemmaForCausalLM

        cfg = GemmaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                          num_attention_heads=4, num_key_value_heads=2, head_dim=8, max_position_embeddings=128,
                          bos_token_id=1, eos_token_id=2, pad_token_id=0)
        model = GemmaForCausalLM(cfg)
    else:
        cfg = GPT2Config(vocab_size=vocab, n_embd=32, n_layer=3, n_head=4, n_positions=128,
                         bos_token_id=1, eos_token_id=2)
        model = GPT2LMHeadModel(cfg)
    model.save_pretrained(folder)
    _char_tokenizer().save_pretrained(folder)
    return folder


@pytest.fixture(scope="module", params=["llama", "gpt2"])
def causal(request, tmp_path_factory):
    folder = _tiny_causal(request.param, tmp_path_factory.mktemp(request.param))
    return load_adapter({"_target_": "core.adapters.causal_lm.load_causal_lm", "name_or_path": str(folder),
                         "name": f"tiny-{request.param}", "device": "cpu"})


PROMPTS = ["hello there.", "a much longer prompt, to force padding!", "hi"]


def _hidden_states(adapter, batch):
    pos = (batch.attention_mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        return adapter.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=pos,
                             output_hidden_states=True).hidden_states


def _real(batch):
    return batch.attention_mask.bool()


class _RandomSAE(nn.Module):
    def __init__(self, d: int, n: int) -> None:
        super().__init__()
        self.W_enc = nn.Parameter(torch.randn(d, n) / d**0.5)
        self.W_dec = nn.Parameter(torch.randn(n, d) / n**0.5)
        self.b_enc = nn.Parameter(torch.zeros(n))
        self.b_dec = nn.Parameter(torch.zeros(d))

    def encode(self, x):
        return torch.relu((x - self.b_dec) @ self.W_enc + self.b_enc)

    def decode(self, f):
        return f @ self.W_dec + self.b_dec


class _IdentitySAE(_RandomSAE):
    def encode(self, x):
        return x

    def decode(self, f):
        return f


def test_capture_equals_hidden_states(causal):
    batch = causal.tokenize(PROMPTS)
    hidden = _hidden_states(causal, batch)
    hooks = [f"blocks.{i}.hook_resid_post" for i in range(causal.n_layers - 1)]
    acts = causal.capture(batch, hooks)
    real = _real(batch)
    for i, h in enumerate(hooks):
        torch.testing.assert_close(acts[h][real], hidden[i + 1][real], rtol=0, atol=1e-6)
    pre0 = causal.capture(batch, ["blocks.0.hook_resid_pre"])["blocks.0.hook_resid_pre"]
    torch.testing.assert_close(pre0[real], hidden[0][real], rtol=0, atol=1e-6)


def test_left_padding_matches_single_prompt(causal):
    batch = causal.tokenize(PROMPTS)
    alone = causal.tokenize(PROMPTS[:1])
    h = "blocks.2.hook_resid_post"
    padded = causal.capture(batch, [h])[h][0][_real(batch)[0]]
    single = causal.capture(alone, [h])[h][0]
    torch.testing.assert_close(padded, single, rtol=1e-4, atol=1e-5)


def test_stop_early_equals_full_pass(causal):
    batch = causal.tokenize(PROMPTS)
    h = ["blocks.0.hook_mlp_out", "blocks.1.hook_resid_post"]
    early = causal.capture(batch, h)
    full = causal.capture(batch, h, stop_early=False)
    for k in h:
        assert torch.equal(early[k], full[k])
    assert causal.forward(batch, stop_at="blocks.0.hook_resid_post") is None


def test_splice_with_error_term_reproduces_logits(causal):
    batch = causal.tokenize(PROMPTS)
    clean = causal.forward(batch)
    sae = _RandomSAE(causal.d_model, 64)
    with causal.intervene("blocks.1.hook_resid_post", Splice(sae, error_term=True)):
        spliced = causal.forward(batch)
    with causal.intervene("blocks.1.hook_resid_post", Splice(sae, error_term=False)):
        lossy = causal.forward(batch)
    real = _real(batch)
    torch.testing.assert_close(spliced[real], clean[real], rtol=0, atol=1e-5)
    assert (lossy[real] - clean[real]).abs().max() > 1e-2


def test_splice_identity_dictionary_reproduces_logits(causal):
    batch = causal.tokenize(PROMPTS)
    clean = causal.forward(batch)
    with causal.intervene("blocks.0.hook_mlp_out", Splice(_IdentitySAE(causal.d_model, causal.d_model))):
        spliced = causal.forward(batch)
    assert torch.equal(spliced, clean)


def test_steer_shifts_activation_by_decoder_direction(causal):
    batch = causal.tokenize(PROMPTS)
    sae = _RandomSAE(causal.d_model, 16)
    direction = sae.W_dec[5].detach() * 3.0
    h = "blocks.1.hook_resid_post"
    before = causal.capture(batch, [h])[h]
    with causal.intervene(h, lambda act, _b: act + direction):
        after = causal.capture(batch, [h])[h]
    torch.testing.assert_close(after - before, direction.expand_as(before), rtol=0, atol=1e-6)


def test_zero_ablation_changes_logits_only_on_real_tokens(causal):
    batch = causal.tokenize(PROMPTS)
    h = "blocks.2.hook_mlp_out"
    with causal.intervene(h, Ablate()):
        acts = causal.capture(batch, [h])[h]
    assert acts[_real(batch)].abs().max() == 0


def test_logprobs_and_generate(causal):
    lp = causal.next_token_logprobs(PROMPTS)
    assert lp.shape == (3, causal.model.config.vocab_size)
    torch.testing.assert_close(lp.exp().sum(-1), torch.ones(3), rtol=0, atol=1e-4)
    seq = causal.sequence_logprobs(["hello", "hello"], [" there", " there."])
    assert seq.shape == (2,) and (seq < 0).all()
    # the longer continuation adds one more negative term to the same prefix
    first = causal.sequence_logprobs(["hello"], [" there"])
    torch.testing.assert_close(seq[0], first[0], rtol=1e-4, atol=1e-4)
    assert seq[1] < seq[0]
    out = causal.generate(["hello", "a b"], max_new_tokens=5)
    assert len(out) == 2 and all(isinstance(t, str) for t in out)
    # greedy generation equals the argmax of next_token_logprobs at step one
    first_tok = causal.tokenizer.decode([int(causal.next_token_logprobs(["hello"])[0].argmax())])
    one = causal.generate(["hello"], max_new_tokens=1, skip_special_tokens=False)[0]
    assert one == first_tok or first_tok in ("<eos>",)


def test_generation_passes_interventions_each_step(causal):
    shapes = []

    def spy(act, batch):
        assert act.shape[:2] == batch.input_ids.shape
        shapes.append(act.shape[1])
        return act

    with causal.intervene("blocks.0.hook_resid_post", spy):
        causal.generate(["hello"], max_new_tokens=3)
    assert shapes[0] == len(causal.tokenize(["hello"]).input_ids[0]) and set(shapes[1:]) <= {1}


def test_unknown_hook_lists_valid_ones(causal):
    with pytest.raises(ConfigError) as err:
        causal.capture(causal.tokenize(PROMPTS), ["blocks.9.hook_resid_post"])
    assert "blocks.{0..2}" in str(err.value) and "hook_resid_post" in str(err.value)


def test_empty_prompt_is_a_data_error(causal):
    with pytest.raises(DataError, match="empty"):
        causal.tokenize([Sample("s1", "")])


def test_missing_model_path(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_adapter({"_target_": "core.adapters.causal_lm.load_causal_lm",
                      "name_or_path": str(tmp_path / "nowhere")})


def test_hub_name_offline_gives_one_clear_message(monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)  # read at import time
    with pytest.raises(OfflineError) as err:
        load_adapter({"_target_": "core.adapters.causal_lm.load_causal_lm",
                      "name_or_path": "sparsescope-test/no-such-model"})
    text = str(err.value)
    assert "sparsescope-test/no-such-model" in text and "could not be downloaded" in text
    assert "model.name_or_path=" in text


# --- protein models -------------------------------------------------------------------------

SEQS = [Sample("p1", "MKTAYIAKQRQISFVKSHFSRQ"), Sample("p2", "GSHMLE"), Sample("p3", "MVLSPADKTNVKAAWGKVGAHAGEYGAEALERMF")]


def _tiny_fair_esm(folder, regression: bool = True):
    import argparse

    import esm

    model = esm.model.esm2.ESM2(num_layers=3, embed_dim=32, attention_heads=4, alphabet="ESM-1b", token_dropout=True)
    state = {f"encoder.sentence_encoder.{k}": v for k, v in model.state_dict().items()
             if not k.startswith("contact_head.regression")}
    cfg = argparse.Namespace(encoder_layers=3, encoder_embed_dim=32, encoder_attention_heads=4, token_dropout=True)
    path = folder / "esm2_t3_tiny.pt"
    torch.save({"cfg": {"model": cfg}, "model": state}, path)
    if regression:
        reg = {k: v for k, v in model.state_dict().items() if k.startswith("contact_head.regression")}
        torch.save({"model": reg}, folder / "esm2_t3_tiny-contact-regression.pt")
    return path


def _tiny_hf_esm(folder):
    import esm
    from transformers import EsmConfig, EsmForMaskedLM

    alphabet = esm.data.Alphabet.from_architecture("ESM-1b")
    cfg = EsmConfig(vocab_size=len(alphabet.all_toks), hidden_size=32, num_hidden_layers=3, num_attention_heads=4,
                    intermediate_size=64, max_position_embeddings=130, position_embedding_type="rotary",
                    pad_token_id=alphabet.padding_idx, mask_token_id=alphabet.mask_idx, token_dropout=True,
                    emb_layer_norm_before=False)
    EsmForMaskedLM(cfg).save_pretrained(folder)
    (folder / "vocab.txt").write_text("\n".join(alphabet.all_toks) + "\n")
    return folder


@pytest.fixture(scope="module", params=["fair", "hf"])
def esm_adapter(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(f"esm_{request.param}")
    if request.param == "fair":
        cfg = {"_target_": "core.adapters.esm_fair.load_esm2_fair", "name_or_path": str(_tiny_fair_esm(folder))}
    else:
        cfg = {"_target_": "core.adapters.esm_hf.load_esm2_hf", "name_or_path": str(_tiny_hf_esm(folder))}
    return load_adapter({**cfg, "device": "cpu", "overlap": 4})


def _esm_reference_hidden(adapter, batch):
    """Per-layer residual stream from the library's own API (not our hooks)."""
    with torch.no_grad():
        if hasattr(adapter.model, "layers"):
            out = adapter.model(batch.input_ids, repr_layers=list(range(adapter.n_layers + 1)))
            return [out["representations"][i] for i in range(adapter.n_layers)]
        out = adapter.model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, output_hidden_states=True)
        return list(out.hidden_states[: adapter.n_layers])


def test_esm_capture_equals_library_hidden_states(esm_adapter):
    batch = esm_adapter.tokenize(SEQS)
    ref = _esm_reference_hidden(esm_adapter, batch)
    hooks = [f"blocks.{i}.hook_resid_post" for i in range(esm_adapter.n_layers - 1)]
    acts = esm_adapter.capture(batch, hooks)
    real = _real(batch)
    for i, h in enumerate(hooks):
        torch.testing.assert_close(acts[h][real], ref[i + 1][real], rtol=0, atol=1e-6)


def test_esm_positions_exclude_special_tokens(esm_adapter):
    batch = esm_adapter.tokenize(SEQS)
    for r, s in enumerate(SEQS):
        pos = batch.positions[r][batch.positions[r] >= 0]
        assert pos.tolist() == list(range(len(s.text)))
        assert batch.positions[r, 0] == -1  # CLS/BOS
    assert batch.special_mask[1, len(SEQS[1].text) + 1]  # EOS


def test_esm_splice_and_stop_early(esm_adapter):
    batch = esm_adapter.tokenize(SEQS)
    clean = esm_adapter.forward(batch)
    real = _real(batch)
    for hook in ("blocks.1.hook_resid_post", "blocks.0.hook_mlp_in", "blocks.2.hook_attn_out"):
        d = esm_adapter.capture(batch, [hook])[hook].shape[-1]
        with esm_adapter.intervene(hook, Splice(_RandomSAE(d, 48), error_term=True)):
            spliced = esm_adapter.forward(batch)
        torch.testing.assert_close(spliced[real], clean[real], rtol=0, atol=1e-5)
        with esm_adapter.intervene(hook, Splice(_IdentitySAE(d, d))):
            assert torch.equal(esm_adapter.forward(batch)[real], clean[real])
    h = ["blocks.0.hook_resid_post", "blocks.1.hook_mlp_out"]
    early, full = esm_adapter.capture(batch, h), esm_adapter.capture(batch, h, stop_early=False)
    for k in h:
        assert torch.equal(early[k], full[k])


def test_esm_steer_shift_is_exact(esm_adapter):
    batch = esm_adapter.tokenize(SEQS)
    direction = torch.randn(esm_adapter.d_model)
    h = "blocks.1.hook_resid_post"
    before = esm_adapter.capture(batch, [h])[h]
    with esm_adapter.intervene(h, lambda act, _b: act + direction):
        after = esm_adapter.capture(batch, [h])[h]
    torch.testing.assert_close(after - before, direction.expand_as(before), rtol=0, atol=1e-6)


def test_esm_long_sequences_chunk_or_skip(esm_adapter, tmp_path):
    esm_adapter.max_residues, saved = 20, esm_adapter.max_residues
    try:
        long = Sample("long", "ACDEFGHIKLMNPQRSTVWY" * 3)
        batch = esm_adapter.tokenize([SEQS[1], long], sample_index=[7, 8])
        rows = (batch.sample_index == 8).nonzero().flatten()
        assert len(rows) >= 3
        owned = torch.cat([batch.positions[r][batch.positions[r] >= 0] for r in rows])
        assert sorted(owned.tolist()) == list(range(60))  # every residue exactly once
        esm_adapter.long_sequences = "skip"
        batch = esm_adapter.tokenize([SEQS[1], long])
        assert batch.sample_index.tolist() == [0] and esm_adapter.skipped["too_long"] == 1
    finally:
        esm_adapter.max_residues, esm_adapter.long_sequences = saved, "chunk"


def test_esm_bad_inputs(esm_adapter):
    with pytest.raises(DataError) as err:
        esm_adapter.tokenize([SEQS[0], Sample("weird", "MKT#AY")])
    assert "weird" in str(err.value) and "'#'" in str(err.value)
    with pytest.raises(DataError, match="empty sequence"):
        esm_adapter.tokenize([Sample("blank", "  ")])
    with pytest.raises(ConfigError, match="valid hook points"):
        esm_adapter.capture(esm_adapter.tokenize(SEQS), ["layer3"])
    esm_adapter.on_unknown = "skip"
    try:
        batch = esm_adapter.tokenize([SEQS[0], Sample("weird", "MKT#AY"), SEQS[1]])
        assert batch.sample_index.tolist() == [0, 2] and esm_adapter.skipped["unknown_character"] == 1
    finally:
        esm_adapter.on_unknown = "error"


def test_fair_esm_local_file_without_regression_weights(tmp_path):
    path = _tiny_fair_esm(tmp_path, regression=False)
    adapter = load_adapter({"_target_": "core.adapters.esm_fair.load_esm2_fair", "name_or_path": str(path),
                            "device": "cpu"})
    assert adapter.n_layers == 3 and adapter.d_model == 32 and adapter.name == "esm2_t3_tiny"


def test_missing_protein_model_paths(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_adapter({"_target_": "core.adapters.esm_fair.load_esm2_fair", "name_or_path": str(tmp_path / "x.pt")})
    with pytest.raises(DataError, match="does not exist"):
        load_adapter({"_target_": "core.adapters.antiberty.load_antiberty", "path": str(tmp_path / "nothing")})


# --- harvest --------------------------------------------------------------------------------

def test_harvest_matches_capture_and_metadata(esm_adapter, tmp_path):
    from core.harvest import harvest
    from core.store import read_samples_tsv

    samples = SEQS * 3
    hooks = ["blocks.0.hook_resid_post", "blocks.2.hook_mlp_out"]
    stores = harvest(esm_adapter, samples, hooks, tmp_path, batch_tokens=64, shard_tokens=40, progress=False)
    n_res = sum(len(s.text) for s in samples)
    for h in hooks:
        data = stores[h].load(columns=("acts", "sample", "position", "token"))
        assert stores[h].n_tokens == n_res and stores[h].n_samples == len(samples)
        got = {(int(s), int(p)): a for s, p, a in zip(data["sample"], data["position"], data["acts"], strict=True)}
        assert len(got) == n_res  # each residue once
        ref = esm_adapter.capture(esm_adapter.tokenize(samples), [h])[h]
        batch = esm_adapter.tokenize(samples)
        for r in range(len(samples)):
            for t in range(batch.input_ids.shape[1]):
                p = int(batch.positions[r, t])
                if p >= 0:
                    torch.testing.assert_close(got[(r, p)], ref[r, t], rtol=1e-4, atol=1e-5)
        tok = dict(zip(zip(data["sample"].tolist(), data["position"].tolist(), strict=True), data["token"].tolist(),
                       strict=True))
        assert tok[(1, 0)] == int(batch.input_ids[1, 1])
        table = read_samples_tsv(stores[h].root / "samples.tsv")
        assert list(table["id"][:3]) == ["p1", "p2", "p3"] and table["text"].iloc[1] == "GSHMLE"


def test_harvest_resumes_after_interruption(esm_adapter, tmp_path):
    from core.harvest import harvest

    samples = [Sample(f"s{i}", "ACDEFGHIKLMNPQRSTVWY"[: 5 + i]) for i in range(12)]
    hook = "blocks.1.hook_resid_post"
    full = harvest(esm_adapter, samples, [hook], tmp_path / "full", batch_tokens=40, shard_tokens=30,
                   progress=False)[hook].load(columns=("acts", "sample", "position"))

    calls = {"n": 0}
    real_capture = esm_adapter.capture

    def dying_capture(batch, hooks, **kw):
        calls["n"] += 1
        if calls["n"] == 4:
            raise KeyboardInterrupt
        return real_capture(batch, hooks, **kw)

    esm_adapter.capture = dying_capture
    try:
        with pytest.raises(KeyboardInterrupt):
            harvest(esm_adapter, samples, [hook], tmp_path / "resumed", batch_tokens=40, shard_tokens=30,
                    progress=False)
    finally:
        del esm_adapter.capture
    from core.store import read_manifest

    partial = read_manifest(tmp_path / "resumed" / hook)
    assert not partial["complete"] and 0 < partial["n_samples"] < len(samples)
    resumed = harvest(esm_adapter, samples, [hook], tmp_path / "resumed", batch_tokens=40, shard_tokens=30,
                      progress=False)[hook].load(columns=("acts", "sample", "position"))
    key = lambda d: sorted(zip(d["sample"].tolist(), d["position"].tolist(), strict=True))  # noqa: E731
    assert key(resumed) == key(full)
    order_f = torch.argsort(full["sample"] * 1000 + full["position"])
    order_r = torch.argsort(resumed["sample"] * 1000 + resumed["position"])
    torch.testing.assert_close(resumed["acts"][order_r], full["acts"][order_f], rtol=1e-4, atol=1e-5)


def test_harvest_last_position_and_special_tokens(causal, tmp_path):
    from core.harvest import harvest

    samples = [Sample(f"q{i}", t) for i, t in enumerate(PROMPTS)]
    hook = "blocks.1.hook_resid_post"
    last = harvest(causal, samples, [hook], tmp_path / "last", positions="last", progress=False)[hook]
    data = last.load(columns=("acts", "sample", "position"))
    assert last.n_tokens == 3
    for s, p, a in zip(data["sample"].tolist(), data["position"].tolist(), data["acts"], strict=True):
        alone = causal.tokenize([samples[s]])
        assert p == alone.input_ids.shape[1] - 1
        torch.testing.assert_close(a, causal.capture(alone, [hook])[hook][0, -1], rtol=1e-4, atol=1e-5)
    every = harvest(causal, samples, [hook], tmp_path / "all", drop_special=False, progress=False)[hook]
    dropped = harvest(causal, samples, [hook], tmp_path / "nobos", drop_special=True, progress=False)[hook]
    assert every.n_tokens == dropped.n_tokens + 3  # one BOS per prompt
    rest = harvest(causal, samples, [hook], tmp_path / "rest", positions="skip_first", progress=False)[hook]
    assert rest.n_tokens == dropped.n_tokens - 3  # and one first real token per prompt
    kept = rest.load(columns=("sample", "position"))
    all_pos = dropped.load(columns=("sample", "position"))
    for s in range(3):
        first = int(all_pos["position"][all_pos["sample"] == s].min())
        assert first not in kept["position"][kept["sample"] == s].tolist()


# --- spliced evaluation ---------------------------------------------------------------------

def _check_spliced(adapter, samples, objective):
    from core.eval.spliced import spliced_metrics

    hook = "blocks.1.hook_resid_post"
    ident = spliced_metrics(adapter, _IdentitySAE(adapter.d_model, adapter.d_model), hook, samples, mask_fraction=0.3)
    assert ident["objective"] == objective
    assert ident["ce_spliced"] == pytest.approx(ident["ce_clean"], abs=1e-6)
    assert ident["kl_spliced"] == pytest.approx(0.0, abs=1e-6)
    assert ident["loss_recovered_zero"] == pytest.approx(1.0, abs=1e-5)
    rand = spliced_metrics(adapter, _RandomSAE(adapter.d_model, 64), hook, samples, mask_fraction=0.3)
    assert rand["ce_spliced_with_error"] == pytest.approx(rand["ce_clean"], abs=1e-4)
    assert rand["kl_spliced"] > 0 and rand["kl_zero_ablation"] > 0
    assert rand["n_scored_tokens"] == ident["n_scored_tokens"]  # same positions for every condition


def test_spliced_metrics_causal(causal):
    _check_spliced(causal, [Sample(f"s{i}", t) for i, t in enumerate(PROMPTS)], "clm")


def test_spliced_metrics_masked(esm_adapter):
    _check_spliced(esm_adapter, SEQS, "mlm")


def test_spliced_evaluator_on_a_harvested_store(esm_adapter, tmp_path):
    from omegaconf import OmegaConf

    from core.dictionaries import build_dictionary
    from core.dictionaries.base import DictionaryConfig
    from core.eval.spliced import spliced_evaluator
    from core.harvest import harvest
    from core.store import ActivationDataModule

    hook = "blocks.1.hook_resid_post"
    samples = [Sample(f"s{i}", SEQS[i % 3].text[: 6 + i]) for i in range(20)]
    harvest(esm_adapter, samples, [hook], tmp_path / "acts", progress=False)
    dm = ActivationDataModule(tmp_path / "acts" / hook, batch_size=16, holdout_fraction=0.2)
    sae = build_dictionary(DictionaryConfig(architecture="topk", d_in=esm_adapter.d_model, d_sae=64, k=8))
    model_cfg = {"_target_": type(esm_adapter).__module__ + ".load_" + ("esm2_fair" if "Fair" in type(esm_adapter).__name__
                                                                         else "esm2_hf"),
                 "name_or_path": str(esm_adapter.source), "device": "cpu"}
    cfg = OmegaConf.create({"model": model_cfg})
    out = spliced_evaluator(cfg, {"spliced": {"n_samples": 8}}, sae, dm)
    assert out["objective"] == "mlm" and out["n_samples"] == 8
    assert out["ce_spliced_with_error"] == pytest.approx(out["ce_clean"], abs=1e-4)
    assert out["ce_spliced"] > out["ce_clean"] - 1e-6 or out["kl_spliced"] > 0


def test_harvest_stage_from_fasta(tmp_path):
    from omegaconf import OmegaConf

    from core.stages.harvest import run

    model = _tiny_fair_esm(tmp_path)
    fasta = tmp_path / "in.fa"
    fasta.write_text("".join(f">{s.id}\n{s.text}\n" for s in SEQS))
    cfg = OmegaConf.create({"model": {"_target_": "core.adapters.esm_fair.load_esm2_fair", "name_or_path": str(model),
                                      "device": "cpu"},
                            "harvest": {"fasta": str(fasta), "layers": [0, -1]}})
    out = run(cfg, tmp_path / "run")
    assert set(out["harvest"]) == {"blocks.0.hook_resid_post", "blocks.2.hook_resid_post"}
    assert all(v["n_tokens"] == sum(len(s.text) for s in SEQS) for v in out["harvest"].values())
    cfg.harvest.fasta = str(tmp_path / "missing.fa")
    with pytest.raises(DataError, match="does not exist"):
        run(cfg, tmp_path / "run2")


def test_harvest_refuses_to_resume_with_other_samples(esm_adapter, tmp_path):
    from core.harvest import harvest

    harvest(esm_adapter, SEQS, ["blocks.0.hook_resid_post"], tmp_path, progress=False)
    harvest(esm_adapter, SEQS, ["blocks.0.hook_resid_post"], tmp_path, progress=False)  # complete: a no-op
    with pytest.raises(ConfigError, match="different samples"):
        harvest(esm_adapter, SEQS[:2], ["blocks.0.hook_resid_post"], tmp_path, progress=False)


@pytest.mark.parametrize("family", ["qwen2", "gemma"])
def test_other_causal_families(family, tmp_path):
    folder = _tiny_causal(family, tmp_path)
    adapter = load_adapter({"_target_": "core.adapters.causal_lm.load_causal_lm", "name_or_path": str(folder),
                            "device": "cpu"})
    batch = adapter.tokenize(PROMPTS)
    hidden = _hidden_states(adapter, batch)
    acts = adapter.capture(batch, ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"])
    real = _real(batch)
    for i in (0, 1):
        torch.testing.assert_close(acts[f"blocks.{i}.hook_resid_post"][real], hidden[i + 1][real], rtol=0, atol=1e-6)
    clean = adapter.forward(batch)
    with adapter.intervene("blocks.1.hook_mlp_out", Splice(_IdentitySAE(32, 32))):
        assert torch.equal(adapter.forward(batch), clean)
