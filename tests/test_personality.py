"""Personality domain: inventory loading and scoring, personas, persona vectors, monitor, steering summary."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from core.errors import DataError
from domains.personality.inventory import TRAITS, Item, builtin_inventory, load_inventory, stratified_halves
from domains.personality.personas import Persona, builtin_personas, check_personas
from domains.personality.scoring import (
    LETTERS,
    OPTIONS,
    Query,
    position_bias,
    render_query,
    render_question,
    score_inventory,
    score_queries,
    trait_profile,
)
from domains.personality.vectors import (
    correlate,
    masked_token_means,
    monitor_correlations,
    monitor_table,
    persona_vectors,
)

FIXTURES = Path(__file__).parent / "fixtures" / "personality"
VOCAB = 64


class ToyTokenizer:
    """Letters A-E are tokens 1-5, " A"-" E" tokens 11-15; anything else is one token per word."""

    def __call__(self, text: str, add_special_tokens: bool = False) -> dict[str, list[int]]:
        if text in LETTERS:
            return {"input_ids": [1 + LETTERS.index(text)]}
        if text.startswith(" ") and text[1:] in LETTERS:
            return {"input_ids": [11 + LETTERS.index(text[1:])]}
        return {"input_ids": [30 + len(w) % 30 for w in text.split()]}


class PlantedLM:
    """A toy LM whose next-token distribution puts planted probabilities on the answer options.

    ``planted[statement]`` gives probabilities over OPTIONS (by meaning). With ``reads=True``
    the toy finds which letter shows each option in the prompt, as a model that reads the
    options would; with ``reads=False`` it gives the planted vector to the letters A-E in
    order whatever they stand for (pure position bias). Half of each letter's mass goes to
    the spaced spelling so both spellings must be summed.
    """

    def __init__(self, planted: dict[str, np.ndarray], *, reads: bool = True, mass: float = 0.8) -> None:
        self.planted, self.reads, self.mass = planted, reads, mass
        self.tokenizer = ToyTokenizer()

    def render_chat(self, messages):
        return "".join(f"<{m['role']}>{m['content']}\n" for m in messages) + "<assistant>"

    def next_token_logprobs(self, prompts):
        out = torch.full((len(prompts), VOCAB), 0.0)
        for r, p in enumerate(prompts):
            statement = re.search(r'"(You [^"]*)"', p).group(1)
            probs = self.planted[statement]
            by_letter = np.zeros(5)
            for j, letter in enumerate(LETTERS):
                label = re.search(rf"\({letter}\) ([^\n]*)", p).group(1)
                by_letter[j] = probs[OPTIONS.index(label)] if self.reads else probs[j]
            row = np.full(VOCAB, (1 - self.mass) / (VOCAB - 10))
            for j in range(5):
                row[1 + j] = row[11 + j] = self.mass * by_letter[j] / 2
            out[r] = torch.log(torch.as_tensor(row, dtype=torch.float32))
        return out


def _items():
    return [Item("O1", "f", "Enjoy ideas", "O", 1), Item("O2", "f", "Avoid ideas", "O", -1),
            Item("N1", "f", "Worry a lot", "N", 1), Item("N2", "f", "Stay calm", "N", -1)]


# ---------------------------------------------------------------- inventory files

def test_builtin_inventory_is_balanced():
    items = builtin_inventory()
    assert {it.trait for it in items} == set(TRAITS)
    for t in TRAITS:
        keys = [it.key for it in items if it.trait == t]
        assert len(keys) >= 6 and keys.count(1) == keys.count(-1)
    assert len({it.text for it in items}) == len(items)
    assert all(it.statement().startswith("You ") and it.statement().endswith(".") for it in items)


def test_loader_reads_mpi_format(tmp_path):
    p = tmp_path / "inv.csv"
    p.write_text("label_raw,text,label_ocean,key\nAnxiety,Worry about things,N,1\n"
                 "Trust,Distrust people,a,-1\n")
    items = load_inventory(p)
    assert [(it.trait, it.key) for it in items] == [("N", 1), ("A", -1)]
    assert items[0].statement() == "You worry about things."
    assert [it.trait for it in load_inventory(p, traits=["N"])] == ["N"]


def test_loader_rejects_missing_column_by_name():
    with pytest.raises(DataError, match="missing column 'key'") as err:
        load_inventory(FIXTURES / "missing_key_column.csv")
    assert "missing_key_column.csv" in str(err.value)


@pytest.mark.parametrize("fixture, message", [
    ("bad_trait_letter.csv", r"row 2 .*unknown trait letter 'X'"),
    ("bad_key.csv", r"row 3 .*unknown key '2'"),
])
def test_loader_rejects_bad_rows_naming_the_row(fixture, message):
    with pytest.raises(DataError, match=message):
        load_inventory(FIXTURES / fixture)


def test_loader_rejects_empty_and_absent_files(tmp_path):
    empty = tmp_path / "empty.csv"
    empty.write_text("label_raw,text,label_ocean,key\n")
    with pytest.raises(DataError, match="no items"):
        load_inventory(empty)
    with pytest.raises(DataError, match="not found"):
        load_inventory(tmp_path / "absent.csv")


def test_stratified_halves_cover_each_trait_and_key():
    items = builtin_inventory()
    a, b = stratified_halves(items, seed=3)
    assert sorted(a + b) == list(range(len(items))) and not set(a) & set(b)
    for half in (a, b):
        for t in TRAITS:
            keys = [items[i].key for i in half if items[i].trait == t]
            assert 1 in keys and -1 in keys


# ---------------------------------------------------------------- scoring

def test_scores_match_planted_distributions_with_reversed_keys():
    items = _items()
    planted = {
        "You enjoy ideas.": np.array([1.0, 0, 0, 0, 0]),          # Very Accurate -> 5
        "You avoid ideas.": np.array([1.0, 0, 0, 0, 0]),          # Very Accurate, reverse-keyed -> 1
        "You worry a lot.": np.array([0.5, 0, 0, 0, 0.5]),       # expected 3, argmax 5 (first max)
        "You stay calm.": np.array([0, 0.25, 0, 0.75, 0]),       # raw 0.25*4 + 0.75*2 = 2.5 -> keyed 3.5
    }
    lm = PlantedLM(planted)
    df = score_inventory(lm, items, orders=("original", "reversed")).set_index(["item", "order"])
    for order in ("original", "reversed"):
        assert df.loc[("O1", order), "expected"] == pytest.approx(5.0, abs=1e-5)
        assert df.loc[("O2", order), "expected"] == pytest.approx(1.0, abs=1e-5)
        assert df.loc[("N1", order), "expected"] == pytest.approx(3.0, abs=1e-5)
        assert df.loc[("N2", order), "expected"] == pytest.approx(3.5, abs=1e-5)
        assert df.loc[("N2", order), "argmax"] == 4.0
        assert df.loc[("O2", order), "argmax"] == 1.0
        assert df.loc[("O1", order), "option_mass"] == pytest.approx(0.8, abs=1e-5)
    assert df.loc[("O1", "original"), "choice"] == "A" and df.loc[("O1", "reversed"), "choice"] == "E"
    prof = trait_profile(df.reset_index()).set_index(["order", "trait"])
    assert prof.loc[("original", "O"), "mean"] == pytest.approx(3.0, abs=1e-5)
    assert prof.loc[("original", "O"), "std"] == pytest.approx(np.std([5, 1], ddof=1), abs=1e-5)
    assert prof.loc[("original", "N"), "mean"] == pytest.approx(3.25, abs=1e-5)
    gap = position_bias(df.reset_index()).set_index("trait")
    assert gap["gap"].abs().max() < 1e-5 and gap["item_abs_gap"].max() < 1e-5


def test_position_bias_exposed_for_a_model_that_always_answers_a():
    items = _items()
    planted = {it.statement(): np.array([1.0, 0, 0, 0, 0]) for it in items}
    df = score_inventory(PlantedLM(planted, reads=False), items, orders=("original", "reversed"))
    gap = position_bias(df).set_index("trait")
    assert gap["item_abs_gap"].tolist() == pytest.approx([4.0, 4.0], abs=1e-5)
    # balanced keys cancel within a trait: the mean gap is 0 although every item swings by 4
    assert gap["gap"].abs().max() < 1e-5
    one_key = position_bias(df[df["key"] == 1]).set_index("trait")
    assert one_key["gap"].tolist() == pytest.approx([4.0, 4.0], abs=1e-5)


def test_persona_system_prompt_reaches_the_prompt():
    seen = []

    class Recorder(PlantedLM):
        def next_token_logprobs(self, prompts):
            seen.extend(prompts)
            return super().next_token_logprobs(prompts)

    items = _items()[:1]
    lm = Recorder({items[0].statement(): np.full(5, 0.2)})
    df = score_queries(lm, [Query(items[0], "Be very open.", "original", "O_high_0")])
    assert "<system>Be very open." in seen[0] and df["persona"].iloc[0] == "O_high_0"
    assert df["expected"].iloc[0] == pytest.approx(3.0, abs=1e-5)


def test_question_lists_every_option_once_in_each_order():
    it = _items()[0]
    for order in ("original", "reversed"):
        q = render_question(it, order)
        assert all(q.count(f"({letter})") == 1 for letter in LETTERS)
    assert "(A) Very Inaccurate" in render_question(it, "reversed")
    with pytest.raises(Exception, match="unknown option order"):
        render_question(it, "shuffled")


# ---------------------------------------------------------------- personas

def test_builtin_personas_have_both_poles_for_every_trait():
    ps = builtin_personas()
    assert {(p.trait, p.pole) for p in ps} == {(t, pole) for t in TRAITS for pole in ("high", "low")}
    assert len(builtin_personas(n_variants=1)) == 10


def test_empty_or_one_sided_persona_set_is_rejected():
    with pytest.raises(DataError, match="persona set is empty"):
        check_personas([])
    with pytest.raises(DataError, match="trait O has no low persona"):
        check_personas([Persona("O", "high", 0, "Be curious.")])
    with pytest.raises(DataError, match="unknown trait letter 'X'"):
        check_personas([Persona("X", "high", 0, "x"), Persona("X", "low", 0, "y")])
    with pytest.raises(Exception, match="unknown trait letter 'Q'"):
        builtin_personas(traits=["Q"])


# ---------------------------------------------------------------- persona vectors and monitor

def test_persona_vector_equals_planted_mean_difference():
    gen = torch.Generator().manual_seed(0)
    n, t_len, d = 8, 6, 5
    delta = torch.randn(d, generator=gen)
    labels = pd.DataFrame({"trait": ["E"] * n, "pole": ["high", "low"] * (n // 2)})
    n_prompt = 3
    acts = torch.randn(n, t_len, d, generator=gen)
    acts[:, :n_prompt] += 100.0  # prompt tokens must not leak into the response mean
    mask = torch.zeros(n, t_len, dtype=torch.bool)
    mask[:, n_prompt:] = True
    base = acts[:, n_prompt:].mean(1)
    for i in range(n):
        if labels["pole"][i] == "high":
            acts[i, n_prompt:] += delta
    means = masked_token_means(acts, mask)
    vec = persona_vectors(means[:, None, :], labels)["E"][0]
    expected = (base[0::2].mean(0) + delta) - base[1::2].mean(0)
    assert torch.allclose(vec, expected, atol=1e-5)
    # equal bases give exactly the planted difference
    acts2 = torch.zeros(n, t_len, d)
    acts2[0::2, n_prompt:] = delta
    vec2 = persona_vectors(masked_token_means(acts2, mask)[:, None, :], labels)["E"][0]
    assert torch.allclose(vec2, delta, atol=1e-6)


def test_masked_means_reject_rows_without_response_tokens():
    with pytest.raises(DataError, match="no response tokens"):
        masked_token_means(torch.ones(2, 3, 4), torch.tensor([[1, 1, 0], [0, 0, 0]], dtype=torch.bool))


def test_persona_vector_needs_both_poles():
    labels = pd.DataFrame({"trait": ["O", "O"], "pole": ["high", "high"]})
    with pytest.raises(DataError, match="only one pole"):
        persona_vectors(torch.ones(2, 1, 3), labels)


def test_monitor_correlation_recovers_a_planted_linear_relation():
    d = 4
    v = torch.tensor([2.0, 0, 0, 0])
    personas = [f"p{i}" for i in range(6)]
    proj = np.array([-2.0, -1.0, 0.0, 0.5, 1.0, 3.0])
    rows, acts = [], []
    for p, x in zip(personas, proj, strict=True):
        for _ in range(2):
            rows.append({"persona": p, "trait": "E", "pole": "high"})
            a = torch.zeros(d)
            a[0] = float(x)
            a[1] = 5.0  # orthogonal to the vector: ignored by the projection
            acts.append(a)
    labels = pd.DataFrame(rows)
    inventory = pd.DataFrame({"persona": personas, "trait": "E", "mean": 3 + 0.5 * proj})
    table = monitor_table(torch.stack(acts), labels, {"E": v}, inventory)
    assert table["projection"].tolist() == pytest.approx(proj.tolist())
    corr = monitor_correlations(table)
    assert corr["per_trait"]["E"]["pearson"] == pytest.approx(1.0)
    assert corr["per_trait"]["E"]["spearman"] == pytest.approx(1.0)
    assert math.isnan(correlate([1, 1, 1], [1, 2, 3])["pearson"])


# ---------------------------------------------------------------- prefix cache on a tiny real model

CHARS = "abcdefghijklmnopqrstuvwxyzABCDE .,?!:;\"'()-\n"


def _tiny_adapter(tmp_path):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from core.adapters.causal_lm import CausalLMAdapter

    vocab = {"<pad>": 0, "<bos>": 1, "<eos>": 2, "<unk>": 3}
    for c in CHARS:
        vocab[c] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split("", behavior="isolated")
    hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<bos>", eos_token="<eos>",
                                     pad_token="<pad>", unk_token="<unk>")
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=3,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
                      bos_token_id=1, eos_token_id=2, pad_token_id=0)
    return CausalLMAdapter(LlamaForCausalLM(cfg), hf_tok, name="tiny", device="cpu", batch_size=2)


@pytest.fixture
def one_thread():
    """Tiny models run faster on one thread than on oversubscribed OpenMP threads of a shared CPU."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_prefix_cache_matches_full_forward_with_and_without_steering(tmp_path, one_thread):
    from core.steering import AddDirection
    from domains.personality.prefix_cache import common_prefix_length, shared_prefix_logprobs

    adapter = _tiny_adapter(tmp_path)
    items = [it for it in builtin_inventory() if it.trait == "O"][:3]
    queries = [Query(it, "be open.", "reversed") for it in items]
    prompts = [render_query(adapter, q) for q in queries]
    rows = [adapter.encode(p) for p in prompts]
    assert 0 < common_prefix_length(rows) < min(len(r) for r in rows)
    full = adapter.next_token_logprobs(prompts)
    cached = shared_prefix_logprobs(adapter, prompts, batch_size=2)
    assert torch.allclose(full, cached, atol=1e-4)
    steer = AddDirection(torch.randn(adapter.d_model), 2.0, positions="all")
    hook = "blocks.1.hook_resid_post"
    with adapter.intervene(hook, steer):
        full_s = adapter.next_token_logprobs(prompts)
    cached_s = shared_prefix_logprobs(adapter, prompts, batch_size=3, hook=hook, intervention=steer)
    assert torch.allclose(full_s, cached_s, atol=1e-4)
    assert not torch.allclose(full, full_s, atol=1e-3)
    df = score_queries(adapter, queries, hook=hook, intervention=steer)
    assert np.allclose(df[[f"p_{x}" for x in LETTERS]].sum(1), 1.0)


# ---------------------------------------------------------------- end to end on SmolLM2 (slow)

@pytest.mark.slow
def test_case_study_runs_end_to_end_on_smollm2(tmp_path):
    """A reduced case study (two traits, three questions) writes every headline section."""
    import json
    import subprocess
    import sys

    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "core.cli", "case_study=personality", "case_study.dictionary=study",
           f"hydra.run.dir={out}",
           "case_study.traits=[O,E]", "case_study.personas.n_questions=3", "case_study.sae.total_tokens=20000",
           "case_study.steer.strengths=[4.0]", "case_study.steer.fluency_questions=1"]
    subprocess.run(cmd, check=True, cwd=Path(__file__).parent.parent, timeout=3000)
    res = json.loads((out / "results.json").read_text())
    assert set(res["inventory"]) == {"O", "E"}
    for v in res["inventory"].values():
        assert 1.0 <= v["mean"] <= 5.0 and v["std"] >= 0 and abs(v["position_bias_gap"]) <= 4.0
    assert set(res["monitor"]["per_trait"]) == {"O", "E"}
    assert {"persona_vector", "prompt"} <= set(res["steering"])
    for method in res["steering"].values():
        for row in method.values():
            assert {"score_shift", "off_target_shift", "fluency"} <= set(row)
    assert (out / "report.html").stat().st_size > 10_000


# ---------------------------------------------------------------- concepts and steering summary

def test_persona_concepts_mark_response_and_prompt_tokens():
    from core.samples import Sample
    from domains.personality.concepts import persona_concepts, sample_labels

    samples = [Sample("O_high_0|q0", "x", {"trait": "O", "pole": "high", "persona": "O_high_0", "n_prompt_tokens": 3}),
               Sample("O_low_0|q0", "y", {"trait": "O", "pole": "low", "persona": "O_low_0", "n_prompt_tokens": 2}),
               Sample("default|q0", "z", {"trait": "none", "pole": "none", "persona": "default", "n_prompt_tokens": 2})]
    tokens = pd.DataFrame({"sample": [0] * 5 + [1] * 4 + [2] * 3, "position": list(range(5)) + list(range(4)) + list(range(3))})
    cm = persona_concepts(samples, tokens)
    dense = pd.DataFrame(cm.values.toarray() > 0, columns=cm.names)
    assert dense["prompt"].tolist() == [1, 1, 1, 0, 0] + [1, 1, 0, 0] + [1, 1, 0]
    assert (dense["response"] == ~dense["prompt"]).all()
    assert dense["O_high@response"].tolist() == [0, 0, 0, 1, 1] + [0] * 7
    assert dense["O_low@response"].sum() == 2
    labels = sample_labels(samples)
    assert labels["trait_pole"].tolist() == ["O_high", "O_low", "none"]


def test_steering_summary_reports_shift_off_target_and_fluency_ratio():
    from domains.personality.steering import summarise_steering

    base = {"split": "score", "trait": "E", "n": 20, "strength": None}
    scores = {"O": 3.0, "C": 3.0, "E": 3.0, "A": 3.0, "N": 3.0}
    rows = [{**base, "method": "none", "behaviour": 3.0, "fluency": 4.0, **{f"score_{t}": v for t, v in scores.items()}},
            {**base, "method": "persona_vector", "strength": 4.0, "behaviour": 3.5, "fluency": 6.0,
             **{f"score_{t}": v for t, v in {**scores, "E": 3.5, "O": 3.2, "N": 2.8}.items()}},
            {**base, "split": "select", "method": "persona_vector", "strength": 8.0, "behaviour": 9.0, "fluency": 1.0,
             **{f"score_{t}": v for t, v in scores.items()}}]
    s = summarise_steering(rows)
    assert len(s) == 1
    r = s.iloc[0]
    assert r["shift"] == pytest.approx(0.5) and r["off_target"] == pytest.approx(0.1)
    assert r["off_target_signed"] == pytest.approx(0.0) and r["fluency_ratio"] == pytest.approx(1.5)
