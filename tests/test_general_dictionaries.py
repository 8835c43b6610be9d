"""General dictionaries on a tiny random Llama: trained once, found in the library afterwards
(no training call, weights untouched), keyed by what decides the weights, and a cached folder
of the wrong width refused with one message."""

from __future__ import annotations

import copy
import json
import os
import random

import pytest

from core.checkpoint.library import config_hash, library_folder, load_cached, save_cached
from core.errors import DataError, ShapeError
from domains.text import general

WORDS = ("the cat sat on a mat while rain fell over quiet hills and old ships sailed far "
         "from home to strange new lands where people spoke of kings dragons bread and wine").split()


@pytest.fixture(scope="module")
def adapter():
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from core.adapters.causal_lm import CausalLMAdapter

    vocab = {"<pad>": 0, "<unk>": 1, **{w: i + 2 for i, w in enumerate(sorted(set(WORDS)))}}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", unk_token="<unk>")
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(vocab), hidden_size=16, intermediate_size=32, num_hidden_layers=3,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=128)
    return CausalLMAdapter(LlamaForCausalLM(cfg), tok, name="tiny_llama", device="cpu", batch_size=16)


@pytest.fixture
def gc(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARSESCOPE_CACHE", str(tmp_path / "cache"))
    rng = random.Random(0)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(" ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 30)))
                                  for _ in range(400)) + "\n")
    return {"use": "topk",
            "corpus": {"source": str(corpus), "train_tokens": 3000, "heldout_permille": 100},
            "harvest": {"positions": "skip_first", "dtype": "float32", "batch_tokens": 1024, "shard_tokens": 1024},
            "architectures": {"topk": {"architecture": "topk", "d_sae": 32, "k": 4},
                              "matryoshka": {"architecture": "matryoshka", "d_sae": 32, "k": 4}},
            "training": {"total_tokens": 2048, "batch_size": 256, "buffer_tokens": 1024, "lr": None, "seed": 0},
            "eval": {"heldout_documents": 8, "splice_documents": 4, "splice_max_chars": 200, "batch_tokens": 512},
            "progress": False}


@pytest.fixture
def train_calls(monkeypatch):
    import core.training

    calls = []
    real = core.training.train_sae

    def counting(*args, **kwargs):
        calls.append(args[0])
        return real(*args, **kwargs)

    monkeypatch.setattr(core.training, "train_sae", counting)
    return calls


def test_second_call_finds_the_cache_and_trains_nothing(adapter, gc, tmp_path, train_calls):
    first = general.ensure(adapter, [1, 2], gc, tmp_path / "work")
    assert len(train_calls) == 4 and all(e["trained_now"] for e in first.values())
    weights = {k: (e["folder"] + "/sae_weights.safetensors") for k, e in first.items()}
    mtimes = {k: os.stat(p).st_mtime_ns for k, p in weights.items()}
    for (_, arch), e in first.items():
        core, sp = e["eval"]["core"], e["eval"]["spliced"]
        assert 0.0 <= core["fvu"] < 1.0
        assert core["l0"] <= 4.0 + 1e-6 if arch == "topk" else 1.0 < core["l0"] < 8.0
        assert sp["n_scored_tokens"] > 0 and sp["ce_clean"] > 0
        assert e["corpus"]["train_tokens"] >= 3000 and e["training"]["tokens"] >= 2048 - 256
    assert not list((tmp_path / "work").glob("*/activations")), "training tokens are deleted once cached"
    assert not list((tmp_path / "work").glob("*/train/*")), "so are the Lightning checkpoints"

    second = general.ensure(adapter, [1, 2], gc, tmp_path / "work")
    assert len(train_calls) == 4, "a cache hit must not train"
    assert all(not e["trained_now"] for e in second.values())
    assert {k: os.stat(p).st_mtime_ns for k, p in weights.items()} == mtimes
    for k in first:
        assert second[k]["eval"] == json.loads(json.dumps(first[k]["eval"]))
        a, b = first[k]["sae"].state_dict(), second[k]["sae"].state_dict()
        assert all((a[n] == b[n]).all() for n in a)

    sae, info = general.general_dictionary(adapter, 2, gc, tmp_path / "work")
    assert len(train_calls) == 4 and info["dictionary"] == "general" and info["architecture"] == "topk"
    assert info["folder"] == first[2, "topk"]["folder"]


def test_the_key_follows_what_decides_the_weights(adapter, gc, tmp_path, train_calls):
    spec = general.spec_for(gc, "topk")
    other_eval = copy.deepcopy(gc)
    other_eval["eval"]["heldout_documents"] = 3
    other_eval["progress"] = True
    assert general.spec_for(other_eval, "topk") == spec
    for path, value in ((("training", "seed"), 1), (("corpus", "train_tokens"), 2000),
                        (("architectures", "topk", "d_sae"), 48)):
        changed = copy.deepcopy(gc)
        node = changed
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
        assert config_hash(general.spec_for(changed, "topk")) != config_hash(spec), path
    assert config_hash(general.spec_for(gc, "matryoshka")) != config_hash(spec)
    assert config_hash(general.spec_for(gc, "topk", "bfloat16")) != config_hash(spec)
    assert general.model_dtype(adapter) == "float32"
    assert library_folder("m", "blocks.1.hook_resid_post", spec) != library_folder("m", "blocks.2.hook_resid_post", spec)
    assert library_folder("m", "h", spec) != library_folder("n", "h", spec)

    general.ensure(adapter, [1], gc, tmp_path / "work", archs=["topk"])
    reseeded = copy.deepcopy(gc)
    reseeded["training"]["seed"] = 1
    general.ensure(adapter, [1], other_eval, tmp_path / "work", archs=["topk"])
    assert len(train_calls) == 1, "an evaluation setting is not part of the key"
    again = general.ensure(adapter, [1], reseeded, tmp_path / "work", archs=["topk"])
    assert len(train_calls) == 2 and again[1, "topk"]["trained_now"]


def test_a_cached_dictionary_of_the_wrong_width_is_refused(adapter, gc):
    from core.dictionaries import DictionaryConfig, build_dictionary

    spec = general.spec_for(gc, "topk")
    hook = general.hook_of(1)
    wrong = build_dictionary(DictionaryConfig(architecture="topk", d_in=24, d_sae=32, k=4))
    folder = save_cached(wrong, adapter.name, hook, spec)
    assert load_cached(adapter.name, hook, spec, d_in=24) is not None
    with pytest.raises(ShapeError, match="24-wide activations but tiny_llama blocks.1.hook_resid_post is 16 wide") as err:
        general.ensure(adapter, [1], gc, "unused", archs=["topk"])
    assert str(folder) in str(err.value) and "fix:" in str(err.value)


def test_a_missing_corpus_file_is_refused_before_any_work(adapter, gc, tmp_path):
    gc["corpus"]["source"] = str(tmp_path / "no_such_corpus.txt")
    with pytest.raises(DataError, match="no_such_corpus.txt: corpus file does not exist"):
        general.ensure(adapter, [1], gc, tmp_path / "work")
    assert not (tmp_path / "work").exists()


def test_case_study_table(adapter, gc, tmp_path, monkeypatch):
    from omegaconf import OmegaConf

    from domains.text.studies import general_dictionaries as study

    monkeypatch.setattr("core.adapters.load_adapter", lambda cfg: adapter)
    cfg = OmegaConf.create({"general": gc, "model": {}, "case_study": {"layers": [2]}})
    res = study.run(cfg, tmp_path / "run")
    assert res["trained_now"] == 2 and res["cache_hits"] == 0
    table = (tmp_path / "run" / "general_dictionaries.md").read_text()
    assert table.count("trained now") == 2 and "| 2 | matryoshka |" in table
    res2 = study.run(cfg, tmp_path / "run2")
    assert res2["trained_now"] == 0 and res2["cache_hits"] == 2
    assert [r["fvu"] for r in res2["dictionaries"]] == [r["fvu"] for r in res["dictionaries"]]


def test_a_study_takes_the_general_or_its_own_dictionary_and_records_which(adapter, gc, tmp_path):
    from omegaconf import OmegaConf

    from core.dictionaries import DictionaryConfig, build_dictionary
    from core.errors import ConfigError

    own = build_dictionary(DictionaryConfig(architecture="topk", d_in=16, d_sae=8, k=2))
    hook = general.hook_of(2)
    cfg = OmegaConf.create({"general": gc, "case_study": {"dictionary": "general"}})
    sae, rec = general.study_dictionary(cfg, adapter, hook, tmp_path / "g", lambda: (own, {"tokens": 1}))
    assert rec["dictionary"] == "general" and rec["d_sae"] == 32 and rec["trained_now"]
    assert json.loads((tmp_path / "g" / "dictionary.json").read_text())["dictionary"] == "general"
    cfg.case_study.dictionary = "study"
    with pytest.raises(ConfigError, match="made with case_study.dictionary=general"):
        general.study_dictionary(cfg, adapter, hook, tmp_path / "g", lambda: (own, {}))
    sae, rec = general.study_dictionary(cfg, adapter, hook, tmp_path / "s", lambda: (own, {"tokens": 1}))
    assert sae is own and rec == {"dictionary": "study", "d_sae": 8, "training": {"tokens": 1}}
    cfg.case_study.dictionary = "general"
    with pytest.raises(ConfigError, match="residual stream"):
        general.study_dictionary(cfg, adapter, "blocks.2.hook_mlp_out", tmp_path / "m", lambda: (own, {}))
    cfg.case_study.dictionary = "mine"
    with pytest.raises(ConfigError, match="general, study or both"):
        general.study_dictionary(cfg, adapter, hook, tmp_path / "x", lambda: (own, {}))


def test_cli_refuses_a_cached_dictionary_of_the_wrong_width(adapter, gc, tmp_path, monkeypatch):
    """Through the command a user types: one ``sparsescope: error:`` line naming the folder, exit 2."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf
    from test_bad_input_matrix import sparsescope

    from core.cli import CONF_DIR
    from core.dictionaries import DictionaryConfig, build_dictionary

    folder = tmp_path / "tiny_llama"
    adapter.model.save_pretrained(folder)
    adapter.tokenizer.save_pretrained(folder)
    args = ["case_study=general_dictionaries", "model=causal_lm", f"model.name_or_path={folder}",
            "case_study.layers=[1]", f"general.corpus.source={gc['corpus']['source']}"]
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        composed = OmegaConf.to_container(compose("config", overrides=args).general, resolve=True)
    wrong = build_dictionary(DictionaryConfig(architecture="topk", d_in=24, d_sae=32, k=4))
    bad = save_cached(wrong, "tiny_llama", general.hook_of(1), general.spec_for(composed, "topk"))
    out = sparsescope([*args, f"hydra.run.dir={tmp_path / 'run'}"], cwd=tmp_path)
    errors = [line for line in out.stderr.splitlines() if line.startswith("sparsescope: error:")]
    assert out.returncode == 2 and len(errors) == 1 and "Traceback" not in out.stderr, out.stderr[-2000:]
    assert str(bad) in errors[0] and "24-wide" in errors[0] and "fix:" in errors[0]
