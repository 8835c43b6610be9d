"""Case study ``gender_bias``: where SmolLM2 carries gender-occupation bias, and whether removing it works.

Steps, each leaving its files in the run directory (a rerun with the same directory reuses them):

1. bias profile: male-minus-female pronoun log-probabilities after occupation prompts
   (``bias_profile.tsv``), and the published benchmarks whose files the config names;
2. activations of the built-in probe texts at one residual hook (``activations/``) and a TopK
   SAE trained on them (``sae/``);
3. concepts (gendered words, names, occupations, group/stereotype labels; ``concepts.*``) and
   the shared enrichment engine over SAE latents with the neuron baseline (``enrich/``);
4. gender features ranked on counterfactual pairs, with DiffMean and neuron readouts beside them;
5. SCR on biographies (``scr.tsv``);
6. debiasing by feature ablation vs DiffMean vs prompting (``steering.tsv``);
7. ``report.html`` and the headline numbers returned for ``results.json``.
"""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig

from core.errors import ConfigError
from core.io import atomic_path, read_json, write_json
from core.samples import Sample
from domains.bias import behaviour, loaders, probes
from domains.bias.activations import TextActivations, from_store
from domains.bias.steering import diffmean_from_pairs, gender_feature_ranking, pair_token_sets, run_debias
from domains.text.dictionary_compare import per_dictionary

log = logging.getLogger(__name__)


def _split_of(key: str, seed: int = 0) -> str:
    h = int(hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    return "train" if h < 0.6 else ("valid" if h < 0.8 else "test")


def _tsv(df: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, sep="\t", index=False)


class _Timer:
    def __init__(self) -> None:
        self.t0 = time.time()
        self.steps: dict[str, float] = {}

    def mark(self, name: str) -> None:
        now = time.time()
        self.steps[name] = round(now - self.t0, 1)
        log.info("%s done in %.1f s", name, now - self.t0)
        self.t0 = now


def with_start(sample: Sample, start: str) -> Sample:
    return Sample(sample.id, start + sample.text, dict(sample.meta))


def probe_texts(cs: DictConfig) -> tuple[list[tuple[Sample, Sample]], list[Sample], list[Sample]]:
    """Counterfactual pairs, biographies for SAE training, and pronoun prompts."""
    pc = cs.probes
    pairs = probes.counterfactual_pairs(names_per_template=int(pc.names_per_template))
    bios = probes.biographies(tuple(probes.BIO_ACTIVITIES), n_per_cell=int(pc.sae_bios_per_cell), seed=1)
    prompts = probes.pronoun_prompts()
    return pairs, bios, prompts


def scr_biographies(cs: DictConfig) -> list[Sample]:
    occ = list(cs.scr.occupations)
    if len(occ) != 2:
        raise ConfigError(f"case_study.scr.occupations needs two occupations, got {occ}",
                          fix="e.g. [professor, nurse]")
    path = cs.data.get("bias_in_bios")
    if path:
        bios = loaders.load_bias_in_bios(path, professions=occ)
        per_cell = int(cs.scr.bios_per_cell)
        kept, count = [], {}
        for b in bios:
            key = (b.meta["occupation"], b.meta["gender"])
            if count.get(key, 0) < per_cell:
                kept.append(b)
                count[key] = count.get(key, 0) + 1
        return kept
    return probes.biographies(tuple(occ), n_per_cell=int(cs.scr.bios_per_cell), seed=0)


def benchmark_scores(adapter: Any, cs: DictConfig) -> dict[str, Any]:
    """Published benchmarks whose local files the config names (none by default: offline)."""
    out: dict[str, Any] = {}
    data = cs.data
    if data.get("crows_pairs"):
        out["crows_pairs"] = behaviour.crows_pairs_preference(
            adapter, loaders.load_crows_pairs(data.crows_pairs, bias_types=data.get("bias_types")))
    if data.get("stereoset"):
        out["stereoset"] = behaviour.stereoset_scores(adapter, loaders.load_stereoset(data.stereoset))
    if data.get("bbq"):
        out["bbq"] = behaviour.bbq_scores(adapter, loaders.load_bbq(data.bbq, categories=data.get("bbq_categories")))
    return out


def enrichment(sae: Any, store: Any, adapter: Any, texts: list[Sample], run_dir: Path, cs: DictConfig) -> dict[str, Any]:
    """Concepts for the harvested texts and the shared enrichment engine over SAE latents and neurons."""
    from core.enrich import run_enrichment
    from domains.bias.concepts import annotate

    done = run_dir / "enrich" / "enrichment_summary.json"
    if done.exists():
        return read_json(done)
    cm, labels = annotate(adapter, texts)
    cm.save(run_dir / "concepts")
    splits = {i: _split_of(str(s.meta.get("pair", s.id))) for i, s in enumerate(texts)}
    ec = cs.enrich
    summary = run_enrichment(sae, store, cm, splits, run_dir / "enrich", thresholds=tuple(ec.thresholds),
                             min_positives=int(ec.min_positives), neuron_baseline=True, sample_labels=labels)
    return summary


def gender_enrichment(enrich_dir: Path) -> list[dict[str, Any]]:
    """Best latent and best neuron per gender concept on the test split, from the enrichment table."""
    path = enrich_dir / "enrichment_best.tsv"
    if not path.exists():
        return []
    best = pd.read_csv(path, sep="\t")
    wanted = ["male_word", "female_word", "male_name", "female_name", "gendered", "occupation_word"]
    cols = [c for c in ("concept", "basis", "feature", "threshold", "f1_test", "precision_test", "recall_test",
                        "auroc_test") if c in best.columns]
    return _jsonable(best[best["concept"].isin(wanted)][cols].to_dict("records"))


def gender_readouts(pairs_ta: TextActivations, sae: Any, ranking: np.ndarray, direction: torch.Tensor,
                    pair_split: np.ndarray) -> list[dict[str, Any]]:
    """How well one number separates male from female counterfactual sentences on held-out pairs:
    the top SAE feature, the best neuron (chosen on training pairs) and the DiffMean projection."""
    from sklearn.metrics import roc_auc_score

    male, female = pair_token_sets(pairs_ta.acts, pairs_ta.mask, pairs_ta.ids)
    xm = torch.stack([m.mean(0) for m in male]).numpy()
    xf = torch.stack([f.mean(0) for f in female]).numpy()
    test, train = pair_split == "test", pair_split != "test"
    y = np.r_[np.ones(int(test.sum())), np.zeros(int(test.sum()))]
    rows = []
    with torch.no_grad():
        fm = torch.stack([sae.encode(m.float()).float().mean(0) for m in male]).numpy()
        ff = torch.stack([sae.encode(f.float()).float().mean(0) for f in female]).numpy()
    for rank in range(3):
        j = int(ranking[rank])
        s = np.r_[fm[test, j], ff[test, j]]
        auc = roc_auc_score(y, s)
        rows.append({"readout": f"SAE latent {j} (rank {rank + 1})", "auroc": float(max(auc, 1 - auc))})
    diff = xm[train].mean(0) - xf[train].mean(0)
    best = int(np.argmax(np.abs(diff) / (np.r_[xm[train], xf[train]].std(0) + 1e-6)))
    s = np.r_[xm[test, best], xf[test, best]]
    auc = roc_auc_score(y, s)
    rows.append({"readout": f"neuron {best} (best on train pairs)", "auroc": float(max(auc, 1 - auc))})
    s = np.r_[xm[test], xf[test]] @ direction.numpy()
    rows.append({"readout": "DiffMean projection", "auroc": float(roc_auc_score(y, s))})
    return rows


def feature_contexts(sae: Any, ta: TextActivations, texts: list[Sample], features: list[int], tokenizer: Any,
                     per_feature: int = 4) -> dict[int, list[dict[str, Any]]]:
    """Texts where each feature fires most, with per-token activations for highlighting."""
    out: dict[int, list[dict[str, Any]]] = {}
    with torch.no_grad():
        f = torch.stack([sae.encode(ta.acts[i].float())[:, features] for i in range(len(texts))])
    f = f * ta.mask.unsqueeze(-1)
    peak = f.max(1).values
    for c, j in enumerate(features):
        best = torch.argsort(peak[:, c], descending=True)[:per_feature].tolist()
        items = []
        for i in best:
            real = ta.ids[i] >= 0
            toks = [tokenizer.decode([int(t)]) for t in ta.ids[i][real]]
            items.append({"text": texts[i].text, "tokens": toks, "values": f[i, :len(toks), c].tolist(),
                          "max": float(peak[i, c])})
        out[j] = items
    return out


@per_dictionary
def run(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    from core.adapters import load_adapter
    from core.steering import resolve_hook
    from domains.bias.report import write_report
    from domains.bias.scr import run_scr

    cs = cfg.case_study
    run_dir = Path(run_dir)
    timer = _Timer()
    adapter = load_adapter(cfg.model)
    hook = resolve_hook(adapter, int(cs.layer), "resid")
    timer.mark("load model")

    # every text starts after the document-start token, which takes the first position's
    # massive "attention sink" activation and is dropped from harvests and interventions
    start = behaviour.document_start(adapter.tokenizer)
    pairs, bios, prompts = probe_texts(cs)
    pairs = [(with_start(m, start), with_start(f, start)) for m, f in pairs]
    bios = [with_start(b, start) for b in bios]
    prompts = [with_start(p, start) for p in prompts]
    scr_bios = [with_start(b, start) for b in scr_biographies(cs)]
    prof_path = run_dir / "bias_profile.tsv"
    if prof_path.exists():
        prof = pd.read_csv(prof_path, sep="\t")
    else:
        prof = behaviour.pronoun_logprobs(adapter, prompts)
        _tsv(prof, prof_path)
    bias = behaviour.summarise_pronoun_bias(prof)
    bench = benchmark_scores(adapter, cs)
    timer.mark("bias profile")

    pair_texts = [s for p in pairs for s in p]
    texts = pair_texts + bios + scr_bios + prompts
    from domains.text.general import harvest_and_choose
    sae, store, dictionary = harvest_and_choose(adapter, texts, hook, run_dir, cs, cfg)
    sae.eval()
    timer.mark("harvest and SAE")

    enrich_summary = enrichment(sae, store, adapter, texts, run_dir, cs)
    timer.mark("enrichment")

    pairs_ta = from_store(store, range(len(pair_texts)))
    male, female = pair_token_sets(pairs_ta.acts, pairs_ta.mask, pairs_ta.ids)
    pair_split = np.array([_split_of(p[0].meta["pair"]) for p in pairs])
    train_m = [m for m, s in zip(male, pair_split, strict=True) if s != "test"]
    train_f = [f for f, s in zip(female, pair_split, strict=True) if s != "test"]
    direction = diffmean_from_pairs(train_m, train_f)
    ranking, effect = gender_feature_ranking(sae, train_m, train_f, direction)
    readouts = gender_readouts(pairs_ta, sae, ranking, direction, pair_split)
    top = [int(j) for j in ranking[:int(cs.top_features)]]
    contexts = feature_contexts(sae, pairs_ta, pair_texts, top, adapter.tokenizer, int(cs.contexts_per_feature))
    timer.mark("gender features")

    scr_path = run_dir / "scr.json"
    if scr_path.exists():
        scr_res = read_json(scr_path)
    else:
        first = len(pair_texts) + len(bios)
        ta = from_store(store, range(first, first + len(scr_bios)))
        occ_names = list(cs.scr.occupations)
        occ = [occ_names.index(b.meta["occupation"]) for b in scr_bios]
        gen = [int(b.meta["gender"] == "female") for b in scr_bios]
        scr_res = run_scr(ta.acts, ta.mask, occ, gen, sae=sae, top_ns=tuple(cs.scr.top_n),
                          seed=int(cfg.get("seed") or 0), test_fraction=float(cs.scr.test_fraction))
        write_json(scr_path, scr_res)
    timer.mark("SCR")

    st_path = run_dir / "steering.json"
    if st_path.exists():
        rows = read_json(st_path)
    else:
        sc = cs.steer
        keep = int(sc.get("templates_per_role") or 0)
        steer_prompts = [p for p in prompts if not keep or p.meta["template_index"] < keep]
        rows = run_debias(adapter, hook, steer_prompts, sae=sae, ranking=ranking, direction=direction, layer=int(cs.layer),
                          feature_counts=tuple(sc.feature_counts), add_strengths=tuple(sc.add_strengths),
                          instruction=str(sc.instruction), max_fluency_ratio=sc.get("max_fluency_ratio"),
                          seed=int(cfg.get("seed") or 0), fluency_prompts=int(sc.fluency_prompts),
                          max_new_tokens=int(sc.max_new_tokens), start=start, progress=lambda m: log.info("steer: %s", m))
        write_json(st_path, rows)
        _tsv(pd.DataFrame(rows), run_dir / "steering.tsv")
    timer.mark("steering")

    held_out = {}
    for r in rows:
        if r["split"] == "score" and (r["chosen"] or r["method"] == "none"):
            held_out[r["method"]] = {"bias_metric": r["behaviour"], "fluency": r["fluency"],
                                     "stereotype_gap": r.get("stereotype_gap"), "mean_diff": r.get("mean_diff"),
                                     "strength": r["strength"], "n": r["n"]}
    chosen_dir = scr_res["base"]["chosen_direction"]
    scr_by_dir: dict[str, dict[str, dict[str, Any]]] = {}
    for r in scr_res["rows"]:
        scr_by_dir.setdefault(r["direction"], {}).setdefault(r["method"], {})[str(r["n"])] = r["scr"]
    results = {
        "bias": {"overall": bias["overall"], "per_occupation": bias["per_occupation"]},
        "benchmarks": bench,
        "scr": {"per_n": scr_by_dir.get(chosen_dir, {}).get("sae", {}), "direction": chosen_dir,
                "ablate_gender": scr_by_dir.get("ablate_gender", {}),
                "ablate_occupation": scr_by_dir.get("ablate_occupation", {}), "base": scr_res["base"]},
        "steering": held_out,
        "gender_features": {"top": top, "effect": [float(effect[j]) for j in top], "readouts": readouts},
        "enrichment": {"gender_concepts": gender_enrichment(run_dir / "enrich"),
                       "n_concepts_scored": _jsonable(enrich_summary).get("n_concepts_scored")},
        "hook": hook,
        "dictionary": dictionary,
        "timings_s": timer.steps,
    }
    write_report(run_dir, results, prof=prof, scr_rows=scr_res["rows"], steer_rows=rows, contexts=contexts,
                 model_name=adapter.name)
    timer.mark("report")
    results["timings_s"] = timer.steps
    return results


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.generic,)):
        return obj.item()
    if isinstance(obj, float) and obj != obj:
        return None
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    if isinstance(obj, pd.DataFrame):
        return obj.to_dict("records")
    return str(obj)
