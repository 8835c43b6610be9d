"""Bias domain: loaders, probe sets, concepts, behaviour measures, SCR and a planted-bias toy model."""

from __future__ import annotations

import csv
import functools
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from core.errors import ConfigError, DataError
from domains.bias import behaviour, loaders, probes, scr
from domains.bias.vocab import check_names

FIX = Path(__file__).parent / "fixtures" / "bias"


# ----------------------------------------------------------------------------- loaders
def test_crows_pairs_reads_fixture_and_filters_by_type():
    all_pairs = loaders.load_crows_pairs(FIX / "crows_pairs.csv")
    assert len(all_pairs) == 4
    assert all_pairs[0].meta["sent_less"].startswith("Men are")
    gender = loaders.load_crows_pairs(FIX / "crows_pairs.csv", bias_types=["gender"])
    assert {s.meta["bias_type"] for s in gender} == {"gender"} and len(gender) == 3
    assert {s.meta["stereo_antistereo"] for s in gender} == {"stereo", "antistereo"}


def test_stereoset_reads_fixture():
    items = loaders.load_stereoset(FIX / "stereoset_dev.json")
    assert [s.meta["target"] for s in items] == ["nurse", "mother"]
    assert set(items[0].meta["sentences"]) == {"stereotype", "anti-stereotype", "unrelated"}
    assert len(loaders.load_stereoset(FIX / "stereoset_dev.json", bias_types=["gender"])) == 1


def test_bbq_reads_fixture():
    items = loaders.load_bbq(FIX / "bbq_gender.jsonl")
    assert len(items) == 6
    assert {s.meta["context_condition"] for s in items} == {"ambig", "disambig"}
    assert items[0].meta["stereotyped_groups"] == ["F"]
    assert items[0].meta["answers"][1] == "Can't be determined"


def test_bias_in_bios_maps_class_indices():
    bios = loaders.load_bias_in_bios(FIX / "bias_in_bios.jsonl")
    assert bios[0].meta == {"occupation": "nurse", "gender": "female", "group": "female", "source": "bias_in_bios"}
    assert {b.meta["occupation"] for b in bios} == {"nurse", "professor", "software_engineer", "surgeon"}
    assert len(loaders.load_bias_in_bios(FIX / "bias_in_bios.jsonl", professions=["professor"])) == 2


def _drop_json_field(src: Path, dst: Path, field: str, line: int) -> None:
    lines = src.read_text().splitlines()
    rec = json.loads(lines[line])
    del rec[field]
    lines[line] = json.dumps(rec)
    dst.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("field", loaders.CROWS_FIELDS)
def test_crows_pairs_rejects_missing_column(tmp_path, field):
    with open(FIX / "crows_pairs.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    out = tmp_path / "crows.csv"
    with open(out, "w", newline="") as fh:
        cols = [c for c in rows[0] if c != field]
        w = csv.DictWriter(fh, fieldnames=cols, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    with pytest.raises(DataError, match=rf"line 2.*missing field '{field}'"):
        loaders.load_crows_pairs(out)


@pytest.mark.parametrize("field", loaders.STEREOSET_FIELDS)
def test_stereoset_rejects_missing_field(tmp_path, field):
    data = json.loads((FIX / "stereoset_dev.json").read_text())
    del data["data"]["intrasentence"][1][field]
    out = tmp_path / "dev.json"
    out.write_text(json.dumps(data))
    with pytest.raises(DataError, match=rf"intrasentence item 1.*missing field '{field}'"):
        loaders.load_stereoset(out)


def test_stereoset_rejects_sentence_without_gold_label(tmp_path):
    data = json.loads((FIX / "stereoset_dev.json").read_text())
    del data["data"]["intrasentence"][0]["sentences"][2]["gold_label"]
    out = tmp_path / "dev.json"
    out.write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"item 0 sentence 2.*missing field 'gold_label'"):
        loaders.load_stereoset(out)


@pytest.mark.parametrize("field", loaders.BBQ_FIELDS)
def test_bbq_rejects_missing_field(tmp_path, field):
    out = tmp_path / "bbq.jsonl"
    _drop_json_field(FIX / "bbq_gender.jsonl", out, field, 3)
    with pytest.raises(DataError, match=rf"line 4.*missing field '{field}'"):
        loaders.load_bbq(out)


def test_bbq_rejects_missing_stereotyped_groups(tmp_path):
    lines = (FIX / "bbq_gender.jsonl").read_text().splitlines()
    rec = json.loads(lines[0])
    del rec["additional_metadata"]["stereotyped_groups"]
    out = tmp_path / "bbq.jsonl"
    out.write_text(json.dumps(rec) + "\n")
    with pytest.raises(DataError, match=r"line 1 additional_metadata.*'stereotyped_groups'"):
        loaders.load_bbq(out)


@pytest.mark.parametrize("field", loaders.BIOS_FIELDS)
def test_bias_in_bios_rejects_missing_field(tmp_path, field):
    out = tmp_path / "bios.jsonl"
    _drop_json_field(FIX / "bias_in_bios.jsonl", out, field, 2)
    with pytest.raises(DataError, match=rf"line 3.*missing field '{field}'"):
        loaders.load_bias_in_bios(out)


def test_unknown_bias_category_is_named():
    with pytest.raises(ConfigError, match="unknown bias category 'gendr'.*fix: use one of"):
        loaders.load_crows_pairs(FIX / "crows_pairs.csv", bias_types=["gendr"])
    with pytest.raises(ConfigError, match="unknown bias category 'Gender'"):
        loaders.load_bbq(FIX / "bbq_gender.jsonl", categories=["Gender"])


def test_loader_accepts_other_table_formats(tmp_path):
    out = tmp_path / "bios.csv"
    shutil.copy(FIX / "bias_in_bios.jsonl", tmp_path / "b.jsonl")
    rows = [json.loads(x) for x in (tmp_path / "b.jsonl").read_text().splitlines()]
    with open(out, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["hard_text", "profession", "gender"])
        w.writeheader()
        for r in rows:
            w.writerow({"hard_text": r["hard_text"], "profession": loaders.BIOS_PROFESSIONS[r["profession"]],
                        "gender": ["m", "f"][r["gender"]]})
    bios = loaders.load_bias_in_bios(out)
    assert [b.meta["gender"] for b in bios] == ["female", "male", "male", "female", "male", "female"]


# ----------------------------------------------------------------------------- probe sets
def test_counterfactual_pairs_differ_in_exactly_one_word():
    pairs = probes.counterfactual_pairs()
    assert len(pairs) > 300
    kinds = set()
    for m, f in pairs:
        wm, wf = m.text.split(), f.text.split()
        assert len(wm) == len(wf)
        diff = [(a, b) for a, b in zip(wm, wf, strict=True) if a != b]
        assert len(diff) == 1, (m.text, f.text)
        assert m.meta["occupation"] == f.meta["occupation"] and m.meta["pair"] == f.meta["pair"]
        assert {m.meta["gender"], f.meta["gender"]} == {"male", "female"}
        assert {m.meta["label"], f.meta["label"]} == {"stereotype", "anti-stereotype"}
        kinds.add(m.meta["kind"])
    assert kinds == {"pronoun", "name", "kin"}


def test_pronoun_prompts_cover_roles_and_occupations():
    pp = probes.pronoun_prompts(occupations=["nurse", "carpenter"])
    assert {p.meta["role"] for p in pp} == {"subject", "object", "possessive"}
    assert {(p.meta["male"], p.meta["female"]) for p in pp} == {("he", "she"), ("him", "her"), ("his", "her")}
    assert any(p.text == "The nurse said that" for p in pp)


def test_biographies_balanced_and_distinct():
    bios = probes.biographies(("professor", "nurse"), n_per_cell=30)
    cells = {}
    for b in bios:
        cells[(b.meta["occupation"], b.meta["gender"])] = cells.get((b.meta["occupation"], b.meta["gender"]), 0) + 1
    assert cells == {(o, g): 30 for o in ("professor", "nurse") for g in ("male", "female")}
    assert len({b.text for b in bios}) == len(bios)
    assert all("professor" not in b.text and "nurse" not in b.text for b in bios)


def test_bad_probe_inputs_have_clear_messages():
    with pytest.raises(ConfigError, match="sentence templates are empty"):
        probes.counterfactual_pairs(templates=[])
    with pytest.raises(ConfigError, match="template 0 is empty"):
        probes.counterfactual_pairs(templates=["  "])
    with pytest.raises(ConfigError, match="needs exactly one"):
        probes.counterfactual_pairs(templates=["The {occupation} sings."])
    with pytest.raises(ConfigError, match="unknown slots"):
        probes.counterfactual_pairs(templates=["{person} is a {job}."])
    with pytest.raises(ConfigError, match="duplicate name 'Mary'"):
        probes.counterfactual_pairs(names={"male": ["John", "Paul"], "female": ["Mary", "Ann", "mary"]})
    with pytest.raises(ConfigError, match="duplicate name 'Sam'.*both"):
        check_names({"male": ["Sam"], "female": ["Sam"]})
    with pytest.raises(ConfigError, match="pronoun prompt templates are empty"):
        probes.pronoun_prompts(templates={"subject": []})
    with pytest.raises(ConfigError, match="no known stereotype direction"):
        probes.pronoun_prompts(occupations=["astronaut"])
    with pytest.raises(ConfigError, match="unknown bias category"):
        from domains.bias.vocab import check_categories
        check_categories(["gender", "height"], "probes")


# ----------------------------------------------------------------------------- behaviour maths
def test_bbq_bias_scores_on_planted_predictions():
    items = loaders.load_bbq(FIX / "bbq_gender.jsonl")
    targets = [behaviour.bbq_target_answers(s.meta) for s in items]
    assert targets[0] == ({0}, 1) and targets[4] == ({1}, 2)
    import pandas as pd

    def frame(preds):
        return pd.DataFrame([{"pred": p, "label": s.meta["label"], "context_condition": s.meta["context_condition"],
                              "question_polarity": s.meta["question_polarity"], "target": t, "unknown": u}
                             for p, s, (t, u) in zip(preds, items, targets, strict=True)])

    # always the stereotyped answer: neg -> target (Donna / the woman), nonneg -> non-target (Robert)
    biased = behaviour.bbq_metrics(frame([0, 0, 2, 2, 1, 1]))
    assert biased["disambig"]["bias_score"] == pytest.approx(1.0)
    assert biased["ambig"]["accuracy"] == 0.0 and biased["ambig"]["bias_score"] == pytest.approx(1.0)
    # always correct: ambiguous answers 'unknown', disambiguated ones follow the context
    right = behaviour.bbq_metrics(frame([s.meta["label"] for s in items]))
    assert right["ambig"]["accuracy"] == 1.0 and right["disambig"]["accuracy"] == 1.0
    assert right["ambig"]["bias_score"] == 0.0
    # counter-stereotyped answers everywhere
    anti = behaviour.bbq_metrics(frame([2, 2, 0, 0, 0, 0]))
    assert anti["disambig"]["bias_score"] == pytest.approx(-1.0)


def test_summarise_pronoun_bias_on_planted_numbers():
    import pandas as pd

    df = pd.DataFrame({"occupation": ["nurse", "nurse", "carpenter", "carpenter"],
                       "stereotype": ["female", "female", "male", "male"], "role": ["subject"] * 4,
                       "diff": [-1.0, -3.0, 2.0, 4.0]})
    s = behaviour.summarise_pronoun_bias(df)
    assert s["per_occupation"]["nurse"]["diff"] == -2.0 and s["per_occupation"]["carpenter"]["diff"] == 3.0
    assert s["overall"]["mean_abs_diff"] == 2.5 and s["overall"]["mean_diff"] == 0.5
    assert s["overall"]["stereotype_gap"] == 5.0


# ----------------------------------------------------------------------------- SCR
def test_scr_normalisation_on_planted_numbers():
    assert scr.scr_score(0.9, 0.6, 0.9) == pytest.approx(1.0)
    assert scr.scr_score(0.6, 0.6, 0.9) == pytest.approx(0.0)
    assert scr.scr_score(0.75, 0.6, 0.9) == pytest.approx(0.5)
    assert scr.scr_score(0.5, 0.6, 0.9) == pytest.approx(-1 / 3)
    assert np.isnan(scr.scr_score(0.7, 0.8, 0.8))


class _SignSAE(torch.nn.Module):
    """An exact dictionary: latent i is relu(x_i), latent d+i is relu(-x_i)."""

    def __init__(self, d: int) -> None:
        super().__init__()
        eye = torch.eye(d)
        self.W_enc = torch.nn.Parameter(torch.cat([eye, -eye], 1))
        self.W_dec = torch.nn.Parameter(torch.cat([eye, -eye], 0))

    def encode(self, x):
        return torch.relu(x @ self.W_enc)

    def decode(self, f):
        return f @ self.W_dec


def test_scr_recovers_a_planted_spurious_feature():
    rng = np.random.default_rng(0)
    n, t, d = 400, 4, 12
    occ = np.repeat([0, 1], n // 2)
    gen = np.tile([0, 1], n // 2)
    acts = rng.normal(size=(n, t, d))
    acts[:, :, 0] += (2 * occ[:, None] - 1) * 0.6   # weak occupation signal
    acts[:, :, 1] += (2 * gen[:, None] - 1) * 2.0   # strong gender signal, the spurious shortcut
    out = scr.run_scr(torch.tensor(acts, dtype=torch.float32), torch.ones(n, t), occ, gen,
                      sae=_SignSAE(d), top_ns=(2, 5))
    base = out["base"]
    assert base["chosen_direction"] == "ablate_gender"
    assert base["oracle_occupation_acc"] - base["biased_probe_occupation_acc"] > 0.2
    sae2 = next(r for r in out["rows"] if r["method"] == "sae" and r["n"] == 2
                and r["direction"] == "ablate_gender")
    assert set(sae2["features"]) == {1, d + 1}
    assert sae2["scr"] > 0.8
    assert abs(sae2["gender_probe_acc"] - 0.5) < 0.1          # gender gone, as SHIFT reports
    assert sae2["oracle_occupation_acc"] > 0.8                # occupation kept
    rand2 = next(r for r in out["rows"] if r["method"] == "sae_random" and r["n"] == 2
                 and r["direction"] == "ablate_gender")
    assert rand2["scr"] < sae2["scr"]


def test_scr_split_is_biased_then_balanced():
    occ = np.repeat([0, 1], 80)
    gen = np.tile([0, 1], 80)
    idx = scr.split_biased_balanced(occ, gen)
    assert (occ[idx["biased"]] == gen[idx["biased"]]).all()
    for k in ("balanced", "test"):
        cells = {(o, g): int(((occ[idx[k]] == o) & (gen[idx[k]] == g)).sum()) for o in (0, 1) for g in (0, 1)}
        assert len(set(cells.values())) == 1
    assert not set(idx["test"]) & (set(idx["biased"]) | set(idx["balanced"]))
    with pytest.raises(DataError, match="at least 8 texts"):
        scr.split_biased_balanced(occ[:20], gen[:20])


# ----------------------------------------------------------------------------- toy causal LM
VOCAB = ["[PAD]", "[UNK]", "<|endoftext|>", "the", "nurse", "carpenter", "teacher", "said", "that", "he", "she",
         "him", "her", "his", "Mary", "John", "is", "a", "."]


@functools.lru_cache(maxsize=2)
def _toy_adapter(planted: float = 1.0):
    """A one-layer Llama whose layer adds nothing, so the last position's residual is its token embedding.

    Planted: occupation embeddings carry +/- ``planted`` along a gender direction g, and the
    unembedding reads g into he/him/his minus she/her; so log P(he) - log P(she) after "the nurse"
    is negative, after "the carpenter" positive.
    """
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    from core.adapters.causal_lm import CausalLMAdapter

    tk = Tokenizer(WordLevel({w: i for i, w in enumerate(VOCAB)}, unk_token="[UNK]"))
    tk.pre_tokenizer = Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, unk_token="[UNK]", pad_token="[PAD]",
                                  eos_token="<|endoftext|>")
    torch.manual_seed(0)
    d = 16
    cfg = LlamaConfig(vocab_size=len(VOCAB), hidden_size=d, intermediate_size=32, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=64, tie_word_embeddings=False)
    model = LlamaForCausalLM(cfg)
    g = torch.zeros(d)
    g[0] = 1.0
    with torch.no_grad():
        layer = model.model.layers[0]
        layer.self_attn.o_proj.weight.zero_()
        layer.mlp.down_proj.weight.zero_()
        emb = model.model.embed_tokens.weight
        emb[:, 0] = 0.0
        ix = {w: i for i, w in enumerate(VOCAB)}
        emb[ix["nurse"], 0] = -planted
        emb[ix["carpenter"], 0] = planted
        head = model.lm_head.weight
        head[:, 0] = 0.0
        for w, sign in (("he", 1), ("him", 1), ("his", 1), ("she", -1), ("her", -1)):
            head[ix[w]] = 0.0
            head[ix[w], 0] = 3.0 * sign
    return CausalLMAdapter(model, tok, name="toy", device="cpu", batch_size=8), g


def _toy_prompts():
    return probes.pronoun_prompts(occupations={"nurse": "female", "carpenter": "male", "teacher": "female"},
                                  templates={"subject": ["the {occupation}"]})


def test_pronoun_bias_on_toy_model_has_planted_sign():
    adapter, _ = _toy_adapter()
    df = behaviour.pronoun_logprobs(adapter, _toy_prompts())
    per = df.set_index("occupation")["diff"]
    assert per["nurse"] < -1.0 and per["carpenter"] > 1.0 and abs(per["teacher"]) < 1e-4
    s = behaviour.summarise_pronoun_bias(df)
    assert s["overall"]["stereotype_gap"] > 2.0


def test_ablating_planted_gender_direction_removes_bias():
    from core.steering import AblateFeatures, ProjectOut

    adapter, g = _toy_adapter()
    prompts = _toy_prompts()
    hook = "blocks.0.hook_resid_post"
    before = behaviour.bias_metric(adapter, prompts)
    assert before["mean_abs_diff"] > 1.0
    with adapter.intervene(hook, ProjectOut(g)):
        after = behaviour.bias_metric(adapter, prompts)
    assert after["mean_abs_diff"] < 1e-3 * before["mean_abs_diff"]
    # the same through SAE features: the sign dictionary holds g as latents 0 and d
    sae = _SignSAE(g.numel())
    with adapter.intervene(hook, AblateFeatures(sae, [0, g.numel()])):
        after_sae = behaviour.bias_metric(adapter, prompts)
    assert after_sae["mean_abs_diff"] < 1e-3 * before["mean_abs_diff"]
    with adapter.intervene(hook, AblateFeatures(sae, [3, 3 + g.numel()])):
        unrelated = behaviour.bias_metric(adapter, prompts)
    assert unrelated["mean_abs_diff"] == pytest.approx(before["mean_abs_diff"], rel=0.05)


def test_sentence_preference_and_bbq_run_on_toy_model():
    adapter, _ = _toy_adapter()
    crows = loaders.load_crows_pairs(FIX / "crows_pairs.csv")
    pref = behaviour.crows_pairs_preference(adapter, crows)
    assert 0.0 <= pref["metric_score"] <= 1.0 and pref["n"] == 4
    res = behaviour.bbq_scores(adapter, loaders.load_bbq(FIX / "bbq_gender.jsonl"))
    assert set(res) == {"ambig", "disambig"} and res["ambig"]["n"] == 3


def test_concepts_mark_gendered_tokens_at_adapter_positions():
    from domains.bias.concepts import annotate

    adapter, _ = _toy_adapter()
    from core.samples import Sample

    samples = [Sample("a", "the nurse said that she", {"occupation": "nurse", "group": "female"}),
               Sample("b", "John is a carpenter .", {"occupation": "carpenter", "group": "male"})]
    cm, labels = annotate(adapter, samples, names={"male": ["John"], "female": ["Mary"]})
    ind = cm.indicator().toarray()
    col = {n: i for i, n in enumerate(cm.names)}
    tok = cm.tokens
    def pos(concept):
        return sorted(map(tuple, tok[ind[:, col[concept]] > 0][["sample", "position"]].to_numpy().tolist()))
    assert pos("female_word") == [(0, 4)]
    assert pos("male_name") == [(1, 0)]
    assert pos("occupation_word") == [(0, 1), (1, 3)]
    assert len(pos("group=female")) == 5 and len(pos("occupation=carpenter")) == 5
    assert labels.loc[1, "occupation"] == "carpenter"


def test_stereoset_scores_run_on_toy_model():
    adapter, _ = _toy_adapter()
    res = behaviour.stereoset_scores(adapter, loaders.load_stereoset(FIX / "stereoset_dev.json"))
    assert res["n"] == 2 and 0.0 <= res["ss"] <= 100.0 and 0.0 <= res["icat"] <= 100.0


@pytest.mark.slow
def test_gender_bias_case_study_end_to_end(tmp_path):
    """The whole case study on SmolLM2 (offline), shrunk: results.json keys and report."""
    from hydra import compose, initialize_config_dir

    from core.cli import CONF_DIR, execute

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("config", overrides=[
            "case_study=gender_bias", "case_study.dictionary=study", "threads=1", "case_study.sae.total_tokens=20000",
            "case_study.sae.d_sae=1152", "case_study.probes.sae_bios_per_cell=6", "case_study.scr.bios_per_cell=24",
            "case_study.steer.feature_counts=[2,10]", "case_study.steer.add_strengths=[-1.0]",
            "case_study.steer.fluency_prompts=4", "case_study.steer.max_new_tokens=6"])
    res = execute(cfg, tmp_path)
    assert set(res["bias"]) == {"overall", "per_occupation"} and len(res["bias"]["per_occupation"]) == 24
    assert set(res["scr"]["per_n"]) == {"2", "5", "10", "20", "50"}
    assert {"none", "sae_ablation", "diffmean_projection", "diffmean_add", "prompt"} <= set(res["steering"])
    assert all("bias_metric" in v and "fluency" in v for v in res["steering"].values())
    assert (tmp_path / "report.html").exists() and (tmp_path / "results.json").exists()


def test_debias_sweep_on_toy_model_prefers_the_planted_features():
    from domains.bias.steering import run_debias

    adapter, g = _toy_adapter()
    prompts = probes.pronoun_prompts(occupations={"nurse": "female", "carpenter": "male"},
                                     templates={"subject": ["the {occupation}", "he said that the {occupation}"],
                                                "object": ["she is the {occupation}"]})
    d = g.numel()
    ranking = np.r_[[0, d], [i for i in range(2 * d) if i not in (0, d)]]
    rows = run_debias(adapter, "blocks.0.hook_resid_post", prompts, sae=_SignSAE(d), ranking=ranking,
                      direction=g * 2.0, feature_counts=(2, 4), add_strengths=(-1.0,), max_fluency_ratio=None,
                      fluency_prompts=2, max_new_tokens=3)
    score = {r["method"]: r for r in rows if r["split"] == "score" and (r["chosen"] or r["method"] == "none")}
    assert {"none", "sae_ablation", "diffmean_projection", "diffmean_add", "prompt"} <= set(score)
    assert score["none"]["behaviour"] > 1.0
    assert score["sae_ablation"]["behaviour"] < 1e-3 and score["diffmean_projection"]["behaviour"] < 1e-3
    assert score["sae_ablation"]["strength"] == 2.0   # the smaller N reaching the same bias wins the tie
