"""Case study ``feature_universality``: the same features across seeds, widths and training time?

Two parts, one run, one ``results.json`` (keys ``seeds``, ``widths``, ``stitching``,
``lifecycle``, each with a ``synthetic`` and an ``antiberty`` entry) and one ``report.html``:

- synthetic: planted features, where the truth is known
  (the helper ``domains/synthetic/universality.py``, named by the config's
  ``case_study.synthetic.part``; this module is the case study's one runner);
- antiberty (this module): real human antibody chains (abnativ paired set) through AntiBERTy,
  the residual stream after one block; TopK SAEs of 1k / 2k / 4k / 8k latents, each with two
  seeds, a Matryoshka SAE with those widths as its prefixes, snapshots through the training of
  one of them; all compared on the held-out chains (whole chains held out by a hash of their
  index). Novel and reconstruction latents of each stitching are described by the IMGT regions
  (ANARCII numbering) and amino acids they fire on.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from core.compare import universality as U
from domains.protein.pipeline import Timer

log = logging.getLogger(__name__)
TAG = "antiberty_"


def harvest_and_concepts(cfg: DictConfig, ab: dict[str, Any], run_dir: Path, timer: Timer):
    """Chains, IMGT numbering, one layer's residue activations and the token x concept matrix."""
    from core.adapters import load_adapter
    from domains.protein.pipeline import harvest_layers, layer_hooks, store_tokens
    from domains.protein.studies.antibody_regions import load_chains, number_and_filter, region_concepts

    cs = cfg.case_study
    with timer("load"):
        records = load_chains(cs)
    with timer("imgt_numbering"):
        records, nums, dropped = number_and_filter(records, cs, run_dir)
    with timer("load_model"):
        adapter = load_adapter(cfg.model)
    hook = layer_hooks([int(ab["layer"])], adapter.n_layers)[0]
    with timer("harvest"):
        store = harvest_layers(adapter, records, [hook], run_dir / "activations",
                               batch_tokens=int(ab["harvest_batch_tokens"]))[hook]
    del adapter
    with timer("concepts"):
        cm = region_concepts(nums, include_amino_acids=True, records=records).matrix(store_tokens(store))
    data = {"n_chains": len(records), "n_unnumbered_dropped": dropped, "hook": hook, "n_tokens": store.n_tokens,
            "licence": "CC BY-NC-SA 4.0 (abnativ test sets)"}
    return store, cm, data


def specs(ab: dict[str, Any]) -> list[tuple[str, dict[str, Any], int, tuple[float, ...]]]:
    """(name, dictionary config, seed, snapshot fractions) of every dictionary the study trains."""
    k = int(ab["k"])
    base = {"k": k, "aux_k": int(ab["aux_k"]), "dead_after_tokens": int(ab["dead_after_tokens"])}
    out = []
    for seed in ab["seeds"]:
        for w in ab["widths"]:
            if seed != ab["seeds"][0] and w not in ab["seed_widths"]:
                continue
            snaps = tuple(ab["snapshots"]) if (seed == ab["seeds"][0] and w == ab["lifecycle_width"]) else ()
            out.append((f"topk{w}_seed{seed}", {"architecture": "topk", "d_sae": int(w), **base}, int(seed), snaps))
    m = ab["matryoshka"]
    out.append((f"matryoshka{m['d_sae']}_seed{ab['seeds'][0]}",
                {"architecture": "matryoshka", "d_sae": int(m["d_sae"]), "matryoshka_prefixes": list(m["prefixes"]),
                 "batchtopk_token_warmup": float(m["batchtopk_token_warmup"]), **base}, int(ab["seeds"][0]), ()))
    return out


def train_all(ab: dict[str, Any], store, run_dir: Path, timer: Timer) -> dict[str, Any]:
    from core.compare.family import init_seed, train_or_load
    from core.store import ActivationDataModule

    saes, summaries = {}, {}
    epochs_tokens = None
    for name, sae_cfg, _, snaps in specs(ab):
        seed = init_seed(name)
        dm = ActivationDataModule(store, batch_size=int(ab["batch_size"]), holdout_fraction=float(ab["holdout_fraction"]),
                                  seed=seed)
        epochs_tokens = epochs_tokens or int(float(ab["epochs"]) * dm.n_train_tokens)
        with timer(f"train_{name}"):
            saes[name], summary = train_or_load({**sae_cfg, "d_in": store.d}, dm, run_dir / name,
                                                total_tokens=epochs_tokens, seed=seed, trainer_cfg=ab["trainer"],
                                                snapshots=snaps, metadata={"hook_name": store.hook,
                                                                           "model_name": store.model})
        summaries[name] = {k: summary.get(k) for k in ("steps", "tokens", "seconds", "tokens_per_s", "dead_frac", "lr")}
        summaries[name]["init_seed"] = seed
        summaries[name]["val_fvu"] = (summary.get("metrics") or {}).get("val/fvu")
    return {"saes": saes, "training": summaries, "tokens_per_training": epochs_tokens}


def concepts_of_stitching(objs, codes, large_of: dict[str, tuple[str, Any]], cm, rows: np.ndarray,
                          report) -> dict[str, Any]:
    """IMGT region / amino-acid profile of the novel vs reconstruction latents of each stitching."""
    from domains.protein.latent_concepts import by_group, cdr_token_share, latent_concepts

    ind = cm.indicator()[rows]
    names = cm.names
    base = {"cdr_token_share": round(cdr_token_share(ind, names), 4)}
    out: dict[str, Any] = {}
    for key, res in objs.items():
        lat = latent_concepts(codes(*large_of[key]), ind, names)
        out[key] = by_group(lat, res.features["class"].to_numpy(), codes.x.shape[0])
    if report is not None and out:
        report.text(f"Concepts of the large SAE's latents by class (held-out residues; {base['cdr_token_share']:.1%} of "
                    "residues are CDR residues). CDR latent: the region holding most of its firing residues is a CDR; "
                    "region-specific: >= 80% of its firing residues in one region; residue-specific: >= 50% one amino acid.")
        report.table([{"pair": k, "class": c, **{m: v for m, v in row.items() if m != "regions"}}
                      for k, per in out.items() for c, row in per.items()])
    return {"baseline": base, "pairs": out}


def antiberty_part(cfg: DictConfig, run_dir: Path, report: Any, timer: Timer) -> dict[str, Any]:
    from core.compare.activations import token_sample
    from core.compare.snapshots import load_snapshots

    ab = OmegaConf.to_container(cfg.case_study.antiberty, resolve=True)
    store, cm, data = harvest_and_concepts(cfg, ab, run_dir, timer)
    fam = train_all(ab, store, run_dir, timer)
    saes = fam["saes"]
    x, rows = token_sample(store.root, split="val", holdout_fraction=float(ab["holdout_fraction"]),
                           max_tokens=ab["max_tokens"])
    codes = U.Codes(x)
    s0, s1 = ab["seeds"][0], ab["seeds"][1]
    if report is not None:
        report.heading("AntiBERTy part: real antibody chains", level=2)
        report.text(f"{data['n_chains']} chains, {data['hook']}, {store.n_tokens} residues; {x.shape[0]} held-out residues "
                    f"(whole chains, hash split {ab['holdout_fraction']:g}); TopK k={ab['k']}, "
                    f"{fam['tokens_per_training']} training tokens per dictionary.")
    out: dict[str, Any] = {"data": data, "training": fam["training"], "held_out_tokens": int(x.shape[0])}
    with timer("compare_seeds"):
        out["seeds"] = U.seeds({str(w): (f"topk{w}_seed{s0}", saes[f"topk{w}_seed{s0}"],
                                         f"topk{w}_seed{s1}", saes[f"topk{w}_seed{s1}"]) for w in ab["seed_widths"]},
                               codes, report=report, tag=TAG)
    topk = {int(w): (f"topk{w}_seed{s0}", saes[f"topk{w}_seed{s0}"]) for w in ab["widths"]}
    with timer("compare_widths"):
        out["widths"] = U.widths(topk, codes, report=report, tag=TAG)
        m = ab["matryoshka"]
        mname = f"matryoshka{m['d_sae']}_seed{s0}"
        out["widths"]["matryoshka"] = U.matryoshka(mname, saes[mname], topk, codes, report=report, tag=TAG)
    with timer("stitching"):
        sizes = sorted(topk)
        pairs = [(*topk[a], *topk[b]) for a, b in zip(sizes[:-1], sizes[1:], strict=True)]
        out["stitching"], objs = U.stitching(pairs, codes, report=report, tag=TAG)
        large_of = {f"{a}->{b}": topk[b] for a, b in zip(sizes[:-1], sizes[1:], strict=True)}
        out["stitching"]["concepts"] = concepts_of_stitching(objs, codes, large_of, cm, rows.numpy(), report)
    with timer("lifecycle"):
        name = f"topk{ab['lifecycle_width']}_seed{s0}"
        snaps = load_snapshots(run_dir / name / "snapshots")
        out["lifecycle"] = U.lifecycle(snaps, saes[name], label=f"AntiBERTy TopK {ab['lifecycle_width']}",
                                       report=report, tag=TAG)
    return out


def run(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    from core.cli import resolve_callable
    from core.report.html import Report

    cs = cfg.case_study
    run_dir = Path(run_dir)
    timer = Timer()
    report = Report("feature_universality: the same features across seeds, widths and training time?", run_dir)
    with timer("synthetic"):
        syn = resolve_callable(str(cs.synthetic.part))(cfg, run_dir / "synthetic", report)
    ab = antiberty_part(cfg, run_dir / "antiberty", report, timer)
    with timer("report"):
        page = report.write()
    results: dict[str, Any] = {key: {"synthetic": syn[key], "antiberty": ab[key]}
                               for key in ("seeds", "widths", "stitching", "lifecycle")}
    results.update({"case_study": "feature_universality", "data": ab["data"], "training": ab["training"],
                    "held_out_tokens": {"synthetic": syn["held_out_tokens"], "antiberty": ab["held_out_tokens"]},
                    "toy": syn["toy"], "seconds": timer.seconds, "report": str(page)})
    return results
