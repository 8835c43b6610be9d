"""Case study ``knowledge_conflict``: can SmolLM2 tell when a passage contradicts what it knows,
where does that show, and can SAE features steer which source it answers from?

Steps (each writes its artefacts into the run directory):
1. memorised set: facts the model answers correctly closed-book (cached per model);
2. probes: conflict vs no conflict at the last prompt token, per layer and site, on held-out facts;
3. behaviour: context / memory / neither answers on conflicting prompts (plain and instructed);
4. SAE: a TopK SAE trained on the steering layer's activations of the prompts;
5. features: SAE features ranked by mutual information with using context vs memory (SpARE);
6. steering: SpARE editing vs DiffMean vs probe direction vs prompting, towards memory and
   back towards the context, strengths chosen on one half of the held-out facts and scored
   on the other.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf

from core.io import atomic_path, write_json
from core.samples import Sample
from domains.knowledge_conflict.analysis import plot_probe_curve, probe_curve, split_by_group
from domains.knowledge_conflict.behaviour import ConflictBehaviour, generate_answers, label_answers, rates
from domains.knowledge_conflict.data import ConflictExample, load_conflict_examples
from domains.knowledge_conflict.memorised import memorised_set
from domains.knowledge_conflict.probe_set import builtin_examples
from domains.knowledge_conflict.prompts import INSTRUCTIONS, conflict_samples
from domains.text.dictionary_compare import per_dictionary

log = logging.getLogger(__name__)


def load_examples(kc: DictConfig) -> list[ConflictExample]:
    src = str(kc.get("data", "builtin"))
    if src == "builtin":
        return builtin_examples(seed=int(kc.get("seed", 0)))
    return load_conflict_examples(src, split=str(kc.get("split", "dev")), limit=kc.get("limit"))


def _write_tsv(df: pd.DataFrame, path: Path) -> None:
    with atomic_path(path) as tmp:
        df.to_csv(tmp, sep="\t", index=False)


def _token_activations(adapter: Any, samples: list[Sample], hook: str, last_n: int, batch_size: int) -> torch.Tensor:
    """Activations of the last ``last_n`` real tokens of each prompt (the question block, not the
    shared few-shot prefix, whose activations repeat identically in every prompt)."""
    rows = []
    with torch.no_grad():
        for start in range(0, len(samples), batch_size):
            chunk = samples[start:start + batch_size]
            batch = adapter.tokenize(chunk)
            act = adapter.capture(batch, hooks=[hook])[hook].float().cpu()
            mask = batch.attention_mask.bool().cpu()
            for r in range(len(chunk)):
                real = act[r][mask[r]]
                rows.append(real[-last_n:])
    return torch.cat(rows)


def train_kc_sae(adapter: Any, samples: list[Sample], hook: str, out_dir: Path, sc: DictConfig) -> tuple[Any, dict]:
    """A TopK SAE on the hook's activations of the case-study prompts (resumes if already trained)."""
    from core.checkpoint import load_sae
    from core.dictionaries.base import DictionaryConfig
    from core.training import TensorDataModule, train_sae

    folder = out_dir / "sae"
    if (folder / "cfg.json").exists():
        return load_sae(folder).eval(), {"resumed": True}
    x = _token_activations(adapter, samples, hook, int(sc.last_tokens), int(sc.get("capture_batch", 16)))
    x = x[torch.randperm(len(x), generator=torch.Generator().manual_seed(0))]
    n_val = max(256, len(x) // 20)
    dm = TensorDataModule(x[n_val:], batch_size=int(sc.batch_size), val=x[:n_val])
    cfg = DictionaryConfig(architecture=str(sc.architecture), d_in=int(x.shape[1]), d_sae=int(sc.d_sae),
                           k=int(sc.k), aux_k=int(sc.get("aux_k", 64)))
    sae, summary = train_sae(cfg, dm, out_dir, total_tokens=int(sc.total_tokens), lr=sc.get("lr"), init_encoder_scale=bool(sc.get("init_encoder_scale", True)),
                             trainer_cfg={"enable_progress_bar": False, "logger": "csv", "accelerator": "cpu",
                                          "devices": 1},
                             metadata={"hook_name": hook, "model_name": adapter.name})
    with torch.no_grad():
        f = sae.encode(x[:n_val])
        recon = sae.decode(f)
        fvu = float(((recon - x[:n_val]) ** 2).sum() / ((x[:n_val] - x[:n_val].mean(0)) ** 2).sum())
    summary.update({"train_tokens": int(len(x) - n_val), "val_fvu": fvu, "val_l0": float((f > 0).sum(1).float().mean())})
    return sae.eval(), summary


def _rewrite(kept: dict[str, ConflictExample], instruction: str | None, kc: DictConfig, adapter: Any):
    """A prompt rewrite for the prompting baseline: the same fact and passage, another instruction."""
    def rewrite(s: Sample) -> Sample:
        ex = kept[s.meta["example"]]
        return conflict_samples([ex], n_shot=int(kc.n_shot), fmt=str(kc.format), adapter=adapter,
                                instruction=instruction)[s.meta["conflict"]]
    return rewrite


def _feature_contexts(adapter: Any, sae: Any, hook: str, samples: list[Sample], feats: list[int],
                      n_top: int, last_n: int) -> list[dict[str, Any]]:
    """For each feature, the prompts whose last token activates it most, with per-token activations."""
    from core.steering import last_token_activations

    acts = last_token_activations(adapter, samples, [hook])[hook]
    with torch.no_grad():
        f_last = sae.encode(acts)
    out = []
    for j in feats:
        top = torch.argsort(f_last[:, j], descending=True)[:n_top].tolist()
        ctx = []
        for i in top:
            batch = adapter.tokenize([samples[i]])
            with torch.no_grad():
                a = adapter.capture(batch, hooks=[hook])[hook][0].float()
                fj = sae.encode(a)[:, j]
            ids = batch.input_ids[0][batch.attention_mask[0].bool()].tolist()[-last_n:]
            vals = fj[batch.attention_mask[0].bool()][-last_n:].tolist()
            toks = [adapter.tokenizer.decode([t]) for t in ids]
            ctx.append({"sample": samples[i].id, "tokens": toks, "values": vals, "last": float(f_last[i, j])})
        out.append({"feature": int(j), "contexts": ctx})
    return out


@per_dictionary
def run(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    from core.adapters import load_adapter
    from core.stages.steer import write_outputs
    from core.steering import SteeringTask, feature_scores, last_token_activations, resolve_hook, run_steering

    run_dir = Path(run_dir)
    kc = cfg.kc
    st = cfg.steer
    seed = int(cfg.get("seed") or 0)
    timings: dict[str, float] = {}
    cpu: dict[str, float] = {}
    t0, c0 = time.time(), time.process_time()

    def lap(name: str) -> None:
        nonlocal t0, c0
        timings[name] = round(time.time() - t0, 1)
        cpu[name] = round(time.process_time() - c0, 1)
        log.info("%s done in %.1f s wall, %.1f s CPU", name, timings[name], cpu[name])
        t0, c0 = time.time(), time.process_time()

    adapter = load_adapter(cfg.model)
    hook = resolve_hook(adapter, int(st.layer), str(st.get("site", "resid")))
    lap("load_model")

    # 1. memorised set
    examples = load_examples(kc)
    kept_list, closed = memorised_set(adapter, examples, n_shot=int(kc.n_shot), fmt=str(kc.format),
                                      max_new_tokens=int(kc.max_new_tokens))
    n_known = len(kept_list)
    known_ids = {ex.id for ex in kept_list}
    if kc.get("max_facts"):
        rng = np.random.default_rng(seed)
        idx = sorted(rng.permutation(len(kept_list))[: int(kc.max_facts)].tolist())
        kept_list = [kept_list[i] for i in idx]
    kept = {ex.id: ex for ex in kept_list}
    rel = pd.Series([ex.meta.get("relation", "") for ex in examples])
    known = pd.Series([ex.id in known_ids for ex in examples])
    memo = {"n_facts": len(examples), "n_memorised": n_known,
            "n_used": len(kept_list),
            "by_relation": {str(r): {"n": int((rel == r).sum()), "known": int(known[rel == r].sum())}
                            for r in sorted(set(rel))}}
    write_json(run_dir / "memorised.json", {"summary": memo, "closed_book_answers": closed})
    lap("memorised_set")

    # 2. probes per layer and site
    samples = conflict_samples(kept_list, n_shot=int(kc.n_shot), fmt=str(kc.format), adapter=adapter)
    labels = [s.meta["conflict"] for s in samples]
    groups = [s.meta["example"] for s in samples]
    layers = list(range(0, adapter.n_layers, int(kc.probe.get("layer_stride", 1))))
    if (run_dir / "probe.tsv").exists():
        probe_df = pd.read_csv(run_dir / "probe.tsv", sep="\t")
    else:
        probe_df, _ = probe_curve(adapter, samples, labels, groups, sites=list(kc.probe.sites), layers=layers,
                                  test_fraction=float(kc.probe.test_fraction), seed=seed,
                                  C=OmegaConf.to_container(kc.probe.C) if OmegaConf.is_list(kc.probe.C)
                                  else float(kc.probe.C), batch_size=int(kc.batch_size))
        _write_tsv(probe_df, run_dir / "probe.tsv")
    lap("probes")

    # 3. behaviour on conflicting prompts: which facts build directions, which are steered
    test_mask = split_by_group(sorted(kept), test_fraction=float(kc.steer_fraction), seed=seed + 1)
    eval_ids = {e for e, t in zip(sorted(kept), test_mask, strict=True) if t}
    variants = {"plain": None, **INSTRUCTIONS}
    conflict_by_variant = {
        name: [s for s in conflict_samples(kept_list, n_shot=int(kc.n_shot), fmt=str(kc.format), adapter=adapter,
                                           instruction=instr) if s.meta["conflict"] == 1]
        for name, instr in variants.items()}
    beh_rows = []
    answers_by_variant = {}
    done = pd.read_csv(run_dir / "generations.tsv", sep="\t", dtype=str, keep_default_na=False) \
        if (run_dir / "generations.tsv").exists() else None
    for name, ss in conflict_by_variant.items():
        if done is not None:
            got = done[done["variant"] == name].set_index("id")
            ans, labs = [str(got.loc[s.id, "answer"]) for s in ss], [str(got.loc[s.id, "label"]) for s in ss]
        else:
            ans = generate_answers(adapter, ss, max_new_tokens=int(kc.max_new_tokens))
            labs = label_answers(ss, ans)
        answers_by_variant[name] = (ss, ans, labs)
        beh_rows.append({"prompt": name, "n": len(ss), **rates(labs)})
    behaviour_df = pd.DataFrame(beh_rows)
    _write_tsv(behaviour_df, run_dir / "behaviour.tsv")
    gen_rows = [{"variant": name, "id": s.id, "answer": a, "label": lab, "split": "eval" if
                 s.meta["example"] in eval_ids else "train"}
                for name, (ss, ans, labs) in answers_by_variant.items() for s, a, lab in zip(ss, ans, labs, strict=True)]
    _write_tsv(pd.DataFrame(gen_rows), run_dir / "generations.tsv")
    lap("behaviour")

    # behaviour groups (SpARE's D_C and D_M) from training facts, pooled over the prompt variants
    use_ctx, use_mem = [], []
    for ss, _ans, labs in answers_by_variant.values():
        for s, lab in zip(ss, labs, strict=True):
            if s.meta["example"] in eval_ids:
                continue
            (use_ctx if lab == "context" else use_mem if lab == "memory" else []).append(s)
    group_counts = {"use_context": len(use_ctx), "use_memory": len(use_mem)}

    # 4. SAE on the steering layer
    from domains.text.general import study_dictionary

    sae, sae_summary, dictionary = None, {}, None
    if "spare" in st.methods or "clamp" in st.methods:
        all_prompts = [s for ss in conflict_by_variant.values() for s in ss] + \
            [s for s in samples if s.meta["conflict"] == 0]
        sae, dictionary = study_dictionary(cfg, adapter, hook, run_dir,
                                           lambda: train_kc_sae(adapter, all_prompts, hook, run_dir, kc.sae))
        sae, sae_summary = sae.eval(), dictionary.get("training") or {}
        lap("train_sae")

    # 5. feature scores (use memory = 1, use context = 0) with top contexts
    feature_table = pd.DataFrame()
    feature_contexts: list[dict[str, Any]] = []
    if sae is not None and use_ctx and use_mem:
        grp = use_mem + use_ctx
        y = np.r_[np.ones(len(use_mem), int), np.zeros(len(use_ctx), int)]
        acts = last_token_activations(adapter, grp, [hook], batch_size=int(kc.batch_size))[hook]
        with torch.no_grad():
            f = sae.encode(acts).float()
        sc = feature_scores(f, y, seed=seed)
        order = np.argsort(-sc["mi"])[: int(kc.n_features_report)]
        feature_table = pd.DataFrame({"feature": order, "mi": sc["mi"][order], "mean_diff": sc["mean_diff"][order],
                                      "mean_use_memory": sc["mean_a"][order], "mean_use_context": sc["mean_b"][order],
                                      "frac_active_memory": sc["frac_active_a"][order],
                                      "frac_active_context": sc["frac_active_b"][order]})
        feature_table["marks"] = np.where(feature_table["mean_diff"] > 0, "memory", "context")
        _write_tsv(feature_table, run_dir / "features.tsv")
        feature_contexts = _feature_contexts(adapter, sae, hook, grp, order[: int(kc.n_features_contexts)].tolist(),
                                             n_top=3, last_n=24)
        lap("features")

    # 6. steering both ways on the held-out facts
    steering: dict[str, Any] = {}
    all_rows: list[dict[str, Any]] = []
    outcomes = {}
    strengths = OmegaConf.to_container(st.strengths, resolve=True)
    methods = list(st.methods)
    if sae is None:
        methods = [m for m in methods if m not in ("spare", "clamp")]
    tasks = {
        "to_memory": ("memory", "plain", use_mem, use_ctx, {"use_memory": INSTRUCTIONS["use_memory"]}),
        "to_context": ("context", "use_memory", use_ctx, use_mem, {"use_context": INSTRUCTIONS["use_context"]}),
    }
    for tname, (target, variant, ga, gb, prompt_variants) in tasks.items():
        prompts = [s for s in conflict_by_variant[variant] if s.meta["example"] in eval_ids]
        if len(ga) < int(kc.min_group) or len(gb) < int(kc.min_group):
            steering[tname] = {"skipped": f"too few training examples per behaviour ({len(ga)} vs {len(gb)}; "
                                          f"need {int(kc.min_group)})"}
            continue
        beh = ConflictBehaviour(adapter, hook, target, max_new_tokens=int(kc.max_new_tokens))
        task = SteeringTask(name=tname, prompts=prompts, behaviour_fn=beh, group_a=ga, group_b=gb,
                            behaviour_label=f"{target} answer rate",
                            prompt_variants={k: _rewrite(kept, v, kc, adapter) for k, v in prompt_variants.items()})
        outcome = run_steering(adapter, task, hook=hook, layer=int(st.layer), methods=methods, strengths=strengths,
                               sae=sae, k_features=int(st.k_features), positions=str(st.positions), seed=seed,
                               max_fluency_ratio=st.get("max_fluency_ratio"), batch_size=int(kc.batch_size),
                               progress=log.info)
        for r in outcome.rows:
            r["task"] = tname
        all_rows.extend(outcome.rows)
        outcomes[tname] = outcome
        summary = write_outputs(outcome.rows, run_dir, title=f"Steering {tname}",
                                behaviour_label=f"{target} answer rate", prefix=f"steering_{tname}")
        score_rows = [r for r in outcome.rows if r["split"] == "score"]
        steering[tname] = {r["method"]: {"strength": r["strength"], "context_rate": r["context_rate"],
                                         "memory_rate": r["memory_rate"], "neither_rate": r["neither_rate"],
                                         "fluency": r["fluency"], "n": r["n"]} for r in score_rows}
        steering[tname]["_n_select"] = len(outcome.halves[0])
        _write_tsv(pd.DataFrame(beh.log), run_dir / f"steering_{tname}_answers.tsv")
        del summary
        lap(f"steer_{tname}")

    probe_json: dict[str, dict[str, Any]] = {}
    for site, g in probe_df.groupby("site", sort=False):
        probe_json[str(site)] = {int(r.layer): {"accuracy": float(r.accuracy), "auroc": float(r.auroc)}
                                 for r in g.itertuples()}
    resid = probe_df[probe_df["site"] == "resid"]
    best = resid.loc[resid["auroc"].idxmax()] if len(resid) else None
    results = {
        "model": adapter.name, "hook": hook,
        "memorised": memo,
        "probe": probe_json,
        "probe_best_resid": None if best is None else {"layer": int(best["layer"]), "accuracy": float(best["accuracy"]),
                                                       "auroc": float(best["auroc"])},
        "behaviour": {r["prompt"]: {k: r[k] for k in ("n", "context_rate", "memory_rate", "neither_rate")}
                      for r in beh_rows},
        "groups": group_counts,
        "sae": sae_summary,
        "dictionary": dictionary,
        "features": feature_table.head(10).to_dict("records"),
        "steering": steering,
        "timings_s": timings,
        "cpu_s": cpu,
    }
    _report(run_dir, results, probe_df, behaviour_df, feature_table, feature_contexts, all_rows, outcomes)
    results["timings_s"]["total"] = round(sum(v for k, v in timings.items() if k != "total"), 1)
    results["cpu_s"]["total"] = round(sum(v for k, v in cpu.items() if k != "total"), 1)
    return results


def _report(run_dir: Path, results: dict[str, Any], probe_df: pd.DataFrame, behaviour_df: pd.DataFrame,
            feature_table: pd.DataFrame, contexts: list[dict[str, Any]], rows: list[dict[str, Any]],
            outcomes: dict[str, Any]) -> None:
    from core.report.html import Report
    from core.steering import chosen_rows, plot_sweep

    rep = Report("Knowledge conflict: detection and steering", run_dir)
    m = results["memorised"]
    rep.text(f"Model {results['model']}; {m['n_memorised']} of {m['n_facts']} facts answered correctly "
             f"closed-book, {m['n_used']} used. Steering hook {results['hook']}.")
    rep.heading("Is the conflict linearly detectable?")
    rep.figure(plot_probe_curve(probe_df), "probe_curve",
               "L1 logistic-regression probe, conflict vs no conflict at the last prompt token; facts held out.")
    rep.table(probe_df.drop(columns=["hook"]))
    rep.heading("Which source does the model answer from?")
    rep.table(behaviour_df, caption="Conflicting prompts: rate of context, memory and neither answers")
    if len(feature_table):
        rep.heading("SAE features that separate using context from using memory")
        rep.table(feature_table)
        for item in contexts:
            rep.text(f"feature {item['feature']}: top prompts (last 24 tokens)", muted=True)
            for c in item["contexts"]:
                rep.highlighted_tokens(c["tokens"], c["values"], label=f"{c['sample']} ({c['last']:.2f})")
    for tname, outcome in outcomes.items():
        rep.heading(f"Steering {tname.replace('_', ' ')}")
        rep.table(chosen_rows(outcome.rows), caption="held-out half at the chosen strength")
        rep.figure(plot_sweep(outcome.rows, behaviour_label=tname), f"sweep_{tname}",
                   "select half; circles mark the chosen strength")
    skipped = {k: v for k, v in results["steering"].items() if "skipped" in v}
    for k, v in skipped.items():
        rep.text(f"Steering {k} skipped: {v['skipped']}")
    rep.heading("Time")
    rep.text("Wall-clock and CPU seconds per step (CPU time counts every thread; on a shared machine wall time "
             "grows with the load, CPU time much less).", muted=True)
    rep.table([{"step": k, "wall_s": v, "cpu_s": results["cpu_s"].get(k)} for k, v in results["timings_s"].items()])
    rep.write("report.html")
