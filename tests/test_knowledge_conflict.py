"""Knowledge-conflict domain: answer matching, NQ-Swap loading, probe set, memorised set, probes."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from core.errors import ConfigError, DataError, OfflineError
from core.samples import Sample
from domains.knowledge_conflict.answers import classify_answer, exact_match, normalize_answer
from domains.knowledge_conflict.data import REQUIRED_FIELDS, load_conflict_examples
from domains.knowledge_conflict.memorised import memorised_set
from domains.knowledge_conflict.probe_set import FACTS, builtin_examples
from domains.knowledge_conflict.prompts import INSTRUCTIONS, conflict_samples, qa_prompt

CHARS = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,?!:'-\n"


# ---------------------------------------------------------------- answers

@pytest.mark.parametrize("pred, aliases, expected", [
    ("The Eiffel Tower", ["Eiffel Tower"], True),
    ("  paris.", ["Paris"], True),
    ("PARIS!", ["paris"], True),
    ("an apple", ["Apple"], True),
    ("J.K. Rowling", ["J. K. Rowling"], True),
    ("Rowling", ["J. K. Rowling"], False),
    ("JK Rowling", ["J. K. Rowling", "JK Rowling"], True),
    ("Brasilia", ["Brasília"], True),
    ("Paris\n\ncontext: more", ["Paris"], True),
    ("Paris, France", ["Paris"], False),
    ("", ["Paris"], False),
    ("the", ["the"], False),
])
def test_exact_match_normalisation(pred, aliases, expected):
    assert exact_match(pred, aliases) is expected


def test_normalize_answer_rules():
    assert normalize_answer("  The  Quick,  Brown-Fox! ") == "quick brown fox"
    assert normalize_answer("Les Misérables") == "les miserables"


def test_classify_prefers_context_then_memory():
    assert classify_answer("Madrid", ["Madrid"], ["Paris"]) == "context"
    assert classify_answer("the Paris", ["Madrid"], ["Paris", "City of Light"]) == "memory"
    assert classify_answer("Rome", ["Madrid"], ["Paris"]) == "neither"
    assert classify_answer("Paris", ["Paris"], ["Paris"]) == "context"


# ---------------------------------------------------------------- loading

def _record(i: int, **over):
    rec = {"question": f"q{i}?", "org_context": "c org", "org_answer": ["A"], "sub_context": "c sub",
           "sub_answer": ["B", "b2"]}
    rec.update(over)
    return rec


def test_load_jsonl_json_and_parquet(tmp_path):
    recs = [_record(i) for i in range(3)]
    (tmp_path / "d.jsonl").write_text("\n".join(json.dumps(r) for r in recs) + "\n")
    (tmp_path / "d.json").write_text(json.dumps({"data": recs}))
    import pandas as pd

    pd.DataFrame(recs).to_parquet(tmp_path / "d.parquet")
    for name in ("d.jsonl", "d.json", "d.parquet"):
        ex = load_conflict_examples(tmp_path / name)
        assert len(ex) == 3 and ex[1].question == "q1?" and ex[0].sub_answer == ["B", "b2"]
    one = load_conflict_examples(tmp_path / "d.jsonl", limit=1)
    assert len(one) == 1
    (tmp_path / "s.json").write_text(json.dumps([_record(0, org_answer="A")]))
    assert load_conflict_examples(tmp_path / "s.json")[0].org_answer == ["A"]


def test_missing_field_names_field_and_row(tmp_path):
    recs = [_record(0), _record(1)]
    del recs[1]["sub_answer"]
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in recs))
    with pytest.raises(DataError) as err:
        load_conflict_examples(path)
    msg = str(err.value)
    assert "sub_answer" in msg and "row 1" in msg and "bad.jsonl" in msg
    path.write_text(json.dumps([_record(0, org_answer=[])]))
    with pytest.raises(DataError, match="org_answer"):
        load_conflict_examples(path)
    with pytest.raises(DataError, match="does not exist"):
        load_conflict_examples(tmp_path / "nope.jsonl")


def test_hub_name_offline_is_an_offline_error(monkeypatch):
    import datasets

    def fail(*a, **k):
        raise ConnectionError("no network")

    monkeypatch.setattr(datasets, "load_dataset", fail)
    with pytest.raises(OfflineError, match="data.path"):
        load_conflict_examples("someone/nq_swap")


# ---------------------------------------------------------------- probe set and prompts

def test_builtin_probe_set_is_well_formed():
    ex = builtin_examples()
    assert len(ex) == sum(len(v) for v in FACTS.values()) and len({e.id for e in ex}) == len(ex)
    for e in ex:
        assert set(REQUIRED_FIELDS) <= set(e.to_record())
        assert not exact_match(e.sub_answer[0], e.org_answer)
        assert e.sub_answer[0] in e.sub_context and e.org_answer[0] in e.org_context
        assert e.org_context.rpartition(e.org_answer[0])[0] == e.sub_context.rpartition(e.sub_answer[0])[0]
    # every substitute is some other fact's answer, so words alone do not reveal a conflict
    org = {(e.meta["relation"], e.org_answer[0]) for e in ex}
    assert {(e.meta["relation"], e.sub_answer[0]) for e in ex} == org
    assert [e.sub_answer for e in builtin_examples(seed=0)] == [e.sub_answer for e in ex]


def test_prompt_formats():
    ex = builtin_examples()[0]
    p = qa_prompt(ex.sub_context, ex.question)
    assert p.endswith(f"context: {ex.sub_context}\nquestion: {ex.question}\nanswer:")
    assert p.count("answer:") == 4 and "\n\n" in p
    closed = qa_prompt(None, ex.question)
    assert "context:" not in closed and closed.endswith(f"question: {ex.question}\nanswer:")
    instructed = qa_prompt(ex.sub_context, ex.question, instruction=INSTRUCTIONS["use_memory"])
    assert instructed.startswith(INSTRUCTIONS["use_memory"])
    chat = SimpleNamespace(render_chat=lambda msgs: "|".join(f"{m['role']}:{m['content']}" for m in msgs))
    c = qa_prompt(ex.sub_context, ex.question, fmt="chat", adapter=chat)
    assert c.startswith("system:") and c.endswith(f"user:context: {ex.sub_context}\nquestion: {ex.question}")
    with pytest.raises(ConfigError):
        qa_prompt(ex.sub_context, ex.question, fmt="xml")
    s = conflict_samples([ex])
    assert [x.meta["conflict"] for x in s] == [0, 1]
    assert s[1].meta["context_answers"] == ex.sub_answer and s[1].meta["memory_answers"] == ex.org_answer


# ---------------------------------------------------------------- memorised set

class _Oracle:
    """Answers closed-book questions from a lookup table (or always wrongly)."""

    name = "oracle"

    def __init__(self, table: dict[str, str]):
        self.table = table
        self.calls = 0

    def generate(self, prompts, max_new_tokens=8, stop=None):
        self.calls += 1
        out = []
        for p in prompts:
            q = p.rsplit("question: ", 1)[1].split("\n")[0]
            out.append(" " + self.table.get(q, "I do not know") + "\nquestion: next")
        return out


def test_memorised_set_keeps_known_facts_and_caches(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARSESCOPE_CACHE", str(tmp_path))
    ex = builtin_examples()[:6]
    table = {e.question: e.org_answer[-1].upper() for e in ex[:4]}
    oracle = _Oracle(table)
    kept, answers = memorised_set(oracle, ex)
    assert [e.id for e in kept] == [e.id for e in ex[:4]] and len(answers) == 6
    memorised_set(oracle, ex)
    assert oracle.calls == 1  # second call read the cache


def test_empty_memorised_set_says_the_model_knows_none(tmp_path, monkeypatch):
    monkeypatch.setenv("SPARSESCOPE_CACHE", str(tmp_path))
    with pytest.raises(DataError, match="knows none of these"):
        memorised_set(_Oracle({}), builtin_examples()[:5], use_cache=False)


# ---------------------------------------------------------------- model-level pieces on a tiny Llama

@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from core.adapters import load_adapter

    folder = tmp_path_factory.mktemp("tiny_llama")
    vocab = {"<pad>": 0, "<bos>": 1, "<eos>": 2, "<unk>": 3}
    for c in CHARS:
        vocab[c] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    tok.post_processor = processors.TemplateProcessing(single="<bos> $A", special_tokens=[("<bos>", 1)])
    PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>", pad_token="<pad>",
                            unk_token="<unk>").save_pretrained(folder)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=4,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                      bos_token_id=1, eos_token_id=2, pad_token_id=0)
    LlamaForCausalLM(cfg).save_pretrained(folder)
    return load_adapter({"_target_": "core.adapters.causal_lm.load_causal_lm", "name_or_path": str(folder),
                         "name": "tiny-llama", "device": "cpu"})


def test_layer_outside_the_model_is_a_config_error(tiny):
    from core.steering import resolve_hook

    assert resolve_hook(tiny, 3, "mlp_out") == "blocks.3.hook_mlp_out"
    with pytest.raises(ConfigError, match="outside the model, which has 4 layers"):
        resolve_hook(tiny, 4)
    with pytest.raises(ConfigError, match="outside"):
        resolve_hook(tiny, -1)
    with pytest.raises(ConfigError, match="unknown site"):
        resolve_hook(tiny, 1, "ffn")


def test_probe_curve_on_tiny_model_keeps_facts_together(tiny):
    from domains.knowledge_conflict.analysis import probe_curve, split_by_group

    ex = [e for e in builtin_examples() if e.meta["relation"] == "symbol"][:12]
    samples = [Sample(s.id, s.text.lower(), s.meta) for s in conflict_samples(ex, n_shot=1)]
    groups = [s.meta["example"] for s in samples]
    test = split_by_group(groups, test_fraction=0.25, seed=0)
    for g in set(groups):
        assert len({bool(t) for t, gg in zip(test, groups, strict=True) if gg == g}) == 1
    df, acts = probe_curve(tiny, samples, [s.meta["conflict"] for s in samples], groups, layers=[0, 3],
                           sites=["resid", "attn_out"], test_fraction=0.25)
    assert set(df["site"]) == {"resid", "attn_out"} and len(df) == 4
    assert df["accuracy"].between(0, 1).all() and acts["blocks.3.hook_resid_post"].shape == (24, 32)


def test_behaviour_function_labels_and_steers(tiny):
    from core.steering import AddDirection
    from domains.knowledge_conflict.behaviour import ConflictBehaviour

    ex = builtin_examples()[:3]
    samples = [Sample(s.id, s.text.lower(), s.meta) for s in conflict_samples(ex, n_shot=1) if s.meta["conflict"]]
    beh = ConflictBehaviour(tiny, "blocks.1.hook_resid_post", "memory", max_new_tokens=3)
    base = beh(None, samples)
    assert set(base) >= {"behaviour", "context_rate", "memory_rate", "neither_rate", "fluency"}
    assert base["context_rate"] + base["memory_rate"] + base["neither_rate"] == pytest.approx(1.0)
    steered = beh(AddDirection(torch.randn(32) * 50, 1.0, positions="last"), samples)
    answers = [r["answer"] for r in beh.log]
    assert len(answers) == 6 and answers[:3] != answers[3:] and np.isfinite(steered["behaviour"])


@pytest.mark.slow
def test_case_study_runs_end_to_end_on_a_tiny_model(tiny, tmp_path, monkeypatch):
    """Every step on a tiny random Llama; answers are relabelled alternately so both behaviour
    groups exist (a random model knows no facts and copies no contexts)."""
    from omegaconf import OmegaConf

    import domains.knowledge_conflict.behaviour as beh_mod
    import domains.knowledge_conflict.studies.knowledge_conflict as cs

    monkeypatch.setenv("SPARSESCOPE_CACHE", str(tmp_path / "cache"))
    examples = [e for e in builtin_examples() if e.meta["relation"] == "symbol"][:12]
    for e in examples:
        e.question = e.question.lower()
    monkeypatch.setattr(cs, "load_examples", lambda kc: examples)
    monkeypatch.setattr(cs, "memorised_set", lambda adapter, ex, **kw: (ex, {e.id: e.org_answer[0] for e in ex}))

    def alternate(samples, answers):
        return ["memory" if i % 2 else "context" for i, _ in enumerate(samples)]

    monkeypatch.setattr(cs, "label_answers", alternate)
    monkeypatch.setattr(beh_mod, "label_answers", alternate)
    import core.adapters

    monkeypatch.setattr(core.adapters, "load_adapter", lambda cfg: tiny)
    study = OmegaConf.load("conf/case_study/knowledge_conflict.yaml")
    steer = OmegaConf.merge(OmegaConf.load("conf/steer/default.yaml"), study.steer)
    cfg = OmegaConf.create({"seed": 0, "model": {}, "kc": study.kc, "steer": steer})
    cfg.steer.layer = 2
    cfg.steer.strengths = {"diffmean": [1.0, 2.0], "probe": [1.0], "spare": [1.0, 2.0]}
    cfg.kc.max_facts = None
    cfg.kc.min_group = 2
    cfg.kc.probe.layer_stride = 2
    cfg.kc.sae.update({"d_sae": 64, "k": 4, "aux_k": 8, "last_tokens": 8, "batch_size": 64, "total_tokens": 2048})
    res = cs.run(cfg, tmp_path / "run")
    assert set(res["probe"]) == {"resid", "mlp_out", "attn_out"} and set(res["probe"]["resid"]) == {0, 2}
    for task in ("to_memory", "to_context"):
        got = res["steering"][task]
        assert {"none", "diffmean", "probe", "spare"} <= set(got)
        assert all(0 <= got[m]["memory_rate"] <= 1 for m in ("none", "diffmean", "spare"))
    assert (tmp_path / "run" / "report.html").exists() and (tmp_path / "run" / "sae" / "cfg.json").exists()
    assert res["timings_s"]["total"] > 0

    def never(*a, **k):
        raise AssertionError("a resumed run recomputed a cached step")

    monkeypatch.setattr(cs, "probe_curve", never)
    monkeypatch.setattr(cs, "generate_answers", never)
    again = cs.run(cfg, tmp_path / "run")
    assert again["behaviour"] == res["behaviour"] and again["probe"] == res["probe"]
    assert again["memorised"] == res["memorised"]
