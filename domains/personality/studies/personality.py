"""Case study ``personality``: which Big Five profile SmolLM2 shows, where personas live, and steering them.

Steps, each leaving its files in the run directory (a rerun with the same directory reuses them):

1. the model's own inventory profile in both option orders (``inventory_default.tsv``);
2. the inventory under every persona instruction (``inventory_personas.tsv``);
3. greedy answers to neutral questions under every persona (``persona_samples.jsonl``);
4. per-layer response means and last-prompt hidden states (``persona_acts.safetensors``),
   persona vectors and their per-layer separation (``separation.tsv``);
5. the monitor: last-prompt projection vs inventory score across personas (``monitor.tsv``);
6. activations at the chosen layer, a TopK SAE trained on them, concepts and the shared
   enrichment engine with the neuron baseline (``activations/``, ``sae_train/``, ``enrich/``);
7. steering each trait by persona vector, SAE features and prompting (``steering.tsv``);
8. ``report.html`` and the headline numbers for ``results.json``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig

from core.errors import ConfigError
from core.io import atomic_path, write_text
from core.samples import Sample
from domains.personality.inventory import TRAITS, Item, builtin_inventory, load_inventory
from domains.personality.personas import NEUTRAL_QUESTIONS, Persona, builtin_personas
from domains.personality.scoring import (
    ANSWER_PREFIX,
    letter_preference,
    position_bias,
    score_queries,
    trait_profile,
)
from domains.text.dictionary_compare import per_dictionary

log = logging.getLogger(__name__)


class _Timer:
    """Wall and CPU seconds per step: on a shared machine the CPU time says what the work costs."""

    def __init__(self) -> None:
        self.t0 = time.time()
        self.c0 = time.process_time()
        self.steps: dict[str, float] = {}
        self.cpu: dict[str, float] = {}

    def mark(self, name: str) -> None:
        now, cpu = time.time(), time.process_time()
        self.steps[name] = round(now - self.t0, 1)
        self.cpu[name] = round(cpu - self.c0, 1)
        log.info("%s done in %.1f s (%.1f s CPU)", name, now - self.t0, cpu - self.c0)
        self.t0, self.c0 = now, cpu


def _tsv_cached(path: Path, build: Callable[[], pd.DataFrame]) -> pd.DataFrame:
    """Read ``path`` if an earlier run wrote it, else build it and write it atomically."""
    if path.exists():
        return pd.read_csv(path, sep="\t", keep_default_na=False, na_values=[""])
    df = build()
    with atomic_path(path) as tmp:
        df.to_csv(tmp, sep="\t", index=False)
    return df


def _split_of(question_index: int, n_questions: int) -> str:
    """Split answers by question (last question test, the one before valid, the rest train), so
    held-out answers come from questions never used to select a feature."""
    if n_questions < 3:
        raise ConfigError(f"feature enrichment needs at least 3 neutral questions (train/valid/test), got {n_questions}",
                          fix="set case_study.personas.n_questions >= 3")
    if question_index == n_questions - 1:
        return "test"
    return "valid" if question_index == n_questions - 2 else "train"


def load_items(cs: DictConfig) -> list[Item]:
    traits = list(cs.get("traits") or TRAITS)
    if cs.get("inventory"):
        return load_inventory(cs.inventory, traits=traits)
    return builtin_inventory(traits=traits)


# ------------------------------------------------------------------ inventory

def inventory_default(adapter: Any, items: list[Item], prefix: str) -> pd.DataFrame:
    from domains.personality.scoring import Query

    queries = [Query(it, None, order, "default") for order in ("original", "reversed") for it in items]
    return score_queries(adapter, queries, answer_prefix=prefix)


def inventory_personas(adapter: Any, items: list[Item], personas: list[Persona], prefix: str) -> pd.DataFrame:
    from tqdm.auto import tqdm

    from domains.personality.scoring import Query

    parts = []
    for p in tqdm(personas, desc="inventory under personas", unit="persona"):
        parts.append(score_queries(adapter, [Query(it, p.instruction, "original", p.name) for it in items],
                                   answer_prefix=prefix))
    return pd.concat(parts, ignore_index=True)


# ------------------------------------------------------------------ persona answers

def _samples_cached(path: Path, build: Callable[[], list[Sample]]) -> list[Sample]:
    if path.exists():
        return [Sample(**json.loads(line)) for line in path.read_text().splitlines() if line.strip()]
    samples = build()
    write_text(path, "".join(json.dumps({"id": s.id, "text": s.text, "meta": s.meta}) + "\n" for s in samples))
    return samples


def _acts_cached(path: Path, build: Callable[[], dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file, save_file

    if path.exists():
        return load_file(str(path))
    acts = build()
    with atomic_path(path) as tmp:
        save_file({k: v.contiguous() for k, v in acts.items()}, str(tmp))
    return acts


# ------------------------------------------------------------------ SAE and enrichment

def store_tokens(store: Any) -> pd.DataFrame:
    cols = store.load(columns=("sample", "position"))
    return pd.DataFrame({"sample": cols["sample"].numpy(), "position": cols["position"].numpy()})


def enrichment(sae: Any, store: Any, samples: list[Sample], run_dir: Path, cs: DictConfig,
               n_questions: int) -> tuple[dict[str, Any], Any]:
    from core.enrich import run_enrichment
    from domains.personality.concepts import persona_concepts, sample_labels

    cm = persona_concepts(samples, store_tokens(store))
    cm.save(run_dir / "concepts")
    splits = {i: _split_of(int(s.meta["question_index"]), n_questions) for i, s in enumerate(samples)}
    labels = sample_labels(samples)[["trait", "pole", "trait_pole"]]
    ec = cs.enrich
    summary = run_enrichment(sae, store, cm, splits, run_dir / "enrich", thresholds=tuple(ec.thresholds),
                             min_positives=int(ec.min_positives), neuron_baseline=True, sample_labels=labels,
                             umap=False, title="Personality: trait features")
    return summary, cm


def trait_features(enrich_dir: Path, traits: list[str], k: int) -> dict[str, dict[str, list[int]]]:
    """Trait -> pole -> the top ``k`` SAE features for ``<T>_<pole>@response``, ranked on the validation split."""
    table = pd.read_csv(enrich_dir / "enrichment.tsv", sep="\t")
    sae = table[(table["basis"] == "sae")]
    valid = sae[sae["split"] == sae["split"].iloc[0]] if len(sae) else sae
    out: dict[str, dict[str, list[int]]] = {}
    for t in traits:
        out[t] = {}
        for pole in ("high", "low"):
            g = valid[valid["concept"] == f"{t}_{pole}@response"].sort_values("rank")
            out[t][pole] = [int(f) for f in g["feature"].head(k)]
    return out


def feature_contexts(sae: Any, store: Any, samples: list[Sample], features: list[int], tokenizer: Any,
                     per_feature: int) -> dict[int, list[dict[str, Any]]]:
    """The answers where each feature fires most, with per-token activations for highlighting."""
    cols = store.load(columns=("acts", "sample", "position", "token"))
    with torch.no_grad():
        f = sae.encode(cols["acts"].float())[:, features].float()
    sample = cols["sample"].numpy()
    out: dict[int, list[dict[str, Any]]] = {}
    for c, j in enumerate(features):
        fj = f[:, c].numpy()
        peak = pd.Series(fj).groupby(sample).max().sort_values(ascending=False)
        items = []
        for s_idx in peak.index[:per_feature]:
            rows = np.flatnonzero(sample == s_idx)
            rows = rows[np.argsort(cols["position"].numpy()[rows])]
            toks = [tokenizer.decode([int(t)]) for t in cols["token"].numpy()[rows]]
            items.append({"sample": samples[int(s_idx)].id, "persona": samples[int(s_idx)].meta["persona"],
                          "tokens": toks, "values": fj[rows].tolist(), "max": float(peak[s_idx])})
        out[j] = items
    return out


# ------------------------------------------------------------------ runner

@per_dictionary
def run(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    from core.adapters import load_adapter
    from domains.personality.concepts import sample_labels
    from domains.personality.report import write_report
    from domains.personality.responses import persona_samples
    from domains.personality.steering import feature_direction, steer_trait, summarise_steering
    from domains.personality.vectors import (
        monitor_correlations,
        monitor_table,
        persona_vectors,
        sample_activations,
        separation,
    )

    cs = cfg.case_study
    run_dir = Path(run_dir)
    timer = _Timer()
    traits = [t.upper() for t in (cs.get("traits") or TRAITS)]
    prefix = str(cs.get("answer_prefix", ANSWER_PREFIX))
    items = load_items(cs)
    pc = cs.personas
    personas = builtin_personas(traits=traits, n_variants=int(pc.n_variants))
    n_q = int(pc.n_questions)
    if not 1 <= n_q <= len(NEUTRAL_QUESTIONS):
        raise ConfigError(f"case_study.personas.n_questions must be between 1 and {len(NEUTRAL_QUESTIONS)}, got {n_q}")
    questions = list(NEUTRAL_QUESTIONS[:n_q])
    adapter = load_adapter(cfg.model)
    layer = int(cs.layer)
    if not 0 <= layer < adapter.n_layers:
        raise ConfigError(f"case_study.layer={layer} is outside the model's {adapter.n_layers} layers",
                          fix=f"use a layer between 0 and {adapter.n_layers - 1}")
    hook = f"blocks.{layer}.hook_resid_post"
    timer.mark("load")

    # 1-2. inventory
    inv_default = _tsv_cached(run_dir / "inventory_default.tsv", lambda: inventory_default(adapter, items, prefix))
    profile = trait_profile(inv_default)
    bias = position_bias(inv_default)
    timer.mark("inventory_default")
    inv_personas = _tsv_cached(run_dir / "inventory_personas.tsv",
                               lambda: inventory_personas(adapter, items, personas, prefix))
    timer.mark("inventory_personas")

    # 3-4. persona answers, activations, vectors
    samples = _samples_cached(run_dir / "persona_samples.jsonl",
                              lambda: persona_samples(adapter, personas, questions,
                                                      max_new_tokens=int(pc.max_new_tokens)))
    timer.mark("persona_answers")
    acts = _acts_cached(run_dir / "persona_acts.safetensors", lambda: sample_activations(adapter, samples))
    labels = sample_labels(samples)
    vectors = persona_vectors(acts["response_mean"], labels)
    sep = separation(acts["response_mean"], labels, vectors)
    with atomic_path(run_dir / "separation.tsv") as tmp:
        sep.to_csv(tmp, sep="\t", index=False)
    li = int((acts["layers"] == layer).nonzero()[0, 0])
    vec_layer = {t: v[li] for t, v in vectors.items()}
    from safetensors.torch import save_file

    with atomic_path(run_dir / "persona_vectors.safetensors") as tmp:
        save_file({t: v.contiguous() for t, v in vectors.items()}, str(tmp))
    timer.mark("persona_vectors")

    # 5. monitor: personas (and the default prompt) as points
    orig = inv_default[inv_default["order"] == "original"]
    inv_all = pd.concat([orig, inv_personas], ignore_index=True)
    per_persona = trait_profile(inv_all)
    mon = monitor_table(acts["last_prompt"][:, li], labels, vec_layer, per_persona)
    with atomic_path(run_dir / "monitor.tsv") as tmp:
        mon.to_csv(tmp, sep="\t", index=False)
    mon_corr = monitor_correlations(mon)
    timer.mark("monitor")

    # 6. SAE and enrichment
    from domains.text.general import harvest_and_choose
    sae, store, dictionary = harvest_and_choose(adapter, samples, hook, run_dir, cs, cfg)
    train_summary = dictionary.get("training") or {}
    timer.mark("sae")
    enrich_summary, _ = enrichment(sae, store, samples, run_dir, cs, n_q)
    feats = trait_features(run_dir / "enrich", traits, int(cs.features_per_pole))
    shown = list(dict.fromkeys(f for t in traits for pole in ("high", "low") for f in feats[t][pole][:1]))
    contexts = feature_contexts(sae, store, samples, shown, adapter.tokenizer, int(cs.contexts_per_feature))
    timer.mark("enrichment")

    # 7. steering
    st = cs.steer
    fq = questions[: int(st.fluency_questions)]
    w_dec = sae.W_dec.detach().float().cpu()
    by_trait = {p.trait: p for p in personas if p.pole == "high" and p.variant == 0}
    rows_path = run_dir / "steering.tsv"

    def build_steering() -> pd.DataFrame:
        rows = []
        for t in traits:
            pv = vec_layer[t]
            fd = feature_direction(w_dec, feats[t]["high"], feats[t]["low"]) if (feats[t]["high"] or feats[t]["low"]) \
                else None
            directions = {"persona_vector": pv}
            if fd is not None and float(fd.norm()) > 0:
                directions["sae_features"] = fd / fd.norm() * pv.norm()
            rows.extend(steer_trait(adapter, t, hook, layer, items, directions, list(st.strengths),
                                    prompt_instruction=by_trait[t].instruction, fluency_questions=fq,
                                    max_new_tokens=int(st.max_new_tokens), seed=int(cfg.get("seed") or 0),
                                    max_fluency_ratio=st.get("max_fluency_ratio"), answer_prefix=prefix,
                                    progress=lambda m, t=t: log.info("steer %s: %s", t, m)))
        return pd.DataFrame(rows)

    steering_rows = _tsv_cached(rows_path, build_steering)
    steer_summary = summarise_steering(steering_rows.to_dict("records"))
    timer.mark("steering")

    results = _results(profile, bias, inv_default, mon_corr, steer_summary, sep, layer, enrich_summary,
                       feats, train_summary, timer, samples)
    write_report(run_dir, results, profile=profile, bias=bias, inv_personas=inv_all, separation=sep, monitor=mon,
                 steering_rows=steering_rows, steer_summary=steer_summary, contexts=contexts, features=feats,
                 samples=samples)
    timer.mark("report")
    results["dictionary"] = dictionary
    results["timings_s"] = timer.steps
    results["cpu_s"] = timer.cpu
    results["cpu_s_total"] = round(sum(timer.cpu.values()), 1)
    return results


def _results(profile: pd.DataFrame, bias: pd.DataFrame, inv_default: pd.DataFrame, mon_corr: dict[str, Any],
             steer_summary: pd.DataFrame, sep: pd.DataFrame, layer: int, enrich_summary: Any,
             feats: dict[str, Any], train_summary: dict[str, Any], timer: _Timer,
             samples: list[Sample]) -> dict[str, Any]:
    orig = profile[profile["order"] == "original"].set_index("trait")
    gap = bias.set_index("trait")
    inventory = {t: {"name": TRAITS[t], "mean": float(orig.loc[t, "mean"]), "std": float(orig.loc[t, "std"]),
                     "argmax_mean": float(orig.loc[t, "argmax_mean"]),
                     "mean_reversed_order": float(gap.loc[t, "reversed"]),
                     "position_bias_gap": float(gap.loc[t, "gap"]),
                     "position_bias_item_abs_gap": float(gap.loc[t, "item_abs_gap"])}
                 for t in orig.index}
    steering: dict[str, Any] = {}
    for r in steer_summary.itertuples():
        steering.setdefault(r.method, {})[r.trait] = {
            "strength": None if pd.isna(r.strength) else float(r.strength), "score_shift": float(r.shift),
            "off_target_shift": float(r.off_target), "fluency": float(r.fluency),
            "fluency_ratio": float(r.fluency_ratio), "score": float(r.score), "unsteered": float(r.unsteered)}
    at_layer = sep[sep["layer"] == layer].set_index("trait")
    sae_summary = enrich_summary.get("sae", {}) if isinstance(enrich_summary, dict) else {}
    neuron_summary = enrich_summary.get("neuron", {}) if isinstance(enrich_summary, dict) else {}
    return {
        "inventory": inventory,
        "inventory_overall": {"option_mass": float(inv_default["option_mass"].mean()),
                              "letter_preference": letter_preference(inv_default[inv_default["order"] == "original"]),
                              "mean_abs_gap": float(gap["gap"].abs().mean()),
                              "mean_item_abs_gap": float(gap["item_abs_gap"].mean())},
        "monitor": {"layer": layer, **mon_corr},
        "persona_vectors": {"layer": layer, "cohens_d": {t: float(at_layer.loc[t, "cohens_d"]) for t in at_layer.index},
                            "best_layer": {t: int(g.loc[g["cohens_d"].idxmax(), "layer"])
                                           for t, g in sep.groupby("trait")}},
        "features": {"per_trait": feats,
                     "sae_mean_best_f1_test": sae_summary.get("mean_best_f1_test"),
                     "neuron_mean_best_f1_test": neuron_summary.get("mean_best_f1_test"),
                     "sae_concepts_f1_gt_0.5": sae_summary.get("n_concepts_f1_gt_0.5"),
                     "neuron_concepts_f1_gt_0.5": neuron_summary.get("n_concepts_f1_gt_0.5")},
        "steering": steering,
        "sae_training": {k: v for k, v in (train_summary or {}).items() if isinstance(v, (int, float, str))},
        "n_persona_answers": len(samples),
    }
