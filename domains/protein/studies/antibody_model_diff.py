"""Case study ``antibody_model_diff``: what does an antibody masked LM (AntiBERTy) represent
that an antibody autoregressive LM (IgLM) does not, and the reverse?

The same real human heavy and light chains (abnativ paired test set) go through both models;
their residue activations are harvested aligned (each model's special tokens dropped, rows
matched one to one), a BatchTopK crosscoder (Minder et al. 2025) is trained on both at once,
and every latent is classed by its relative decoder norm (shared / AntiBERTy-only / IgLM-only),
then re-checked with Latent Scaling. The enrichment engine (IMGT regions, amino acids, chain,
V-gene family, isotype) says which concepts each class tracks. A second crosscoder reads four
AntiBERTy layers at once and says which concepts persist across depth. IgLM is under a
non-commercial licence; the abnativ data under CC BY-NC-SA 4.0.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from omegaconf import DictConfig, OmegaConf

from core.io import read_json, write_json
from domains.protein.pipeline import Timer, split_by_index, store_tokens

log = logging.getLogger(__name__)


def train_crosscoder(stores: list[Any], out_dir: Path, sc: DictConfig, names: list[str]) -> tuple[Any, dict]:
    """A crosscoder on aligned stores (loaded back when already trained)."""
    from core.checkpoint import load_sae
    from core.dictionaries.base import DictionaryConfig
    from core.store import ActivationDataModule
    from core.training import train_sae

    done = out_dir / "training.json"
    if done.exists() and (out_dir / "sae" / "cfg.json").exists():
        return load_sae(out_dir / "sae", expect="crosscoder"), read_json(done)
    s = OmegaConf.to_container(sc, resolve=True)
    widths = [int(st.d) for st in stores]
    fields = {f.name for f in dataclasses.fields(DictionaryConfig)}
    extra = {k: v for k, v in s.items() if k in fields and v is not None
             and k not in ("d_in", "d_sae", "n_inputs", "n_outputs", "source_widths")}
    cfg = DictionaryConfig(d_in=widths[0], d_sae=int(s["d_sae"]), n_inputs=len(widths), source_widths=widths, **extra)
    dm = ActivationDataModule([st.root for st in stores], batch_size=int(s.get("batch_size", 1024)),
                              holdout_fraction=0.05, seed=int(s.get("seed", 0)))
    sources = [{"name": n, "model": st.model, "hook": st.hook, "d": int(st.d), "store": str(st.root)}
               for n, st in zip(names, stores, strict=True)]
    total = int(s.get("epochs", 2) * stores[0].n_tokens)
    cc, summary = train_sae(cfg, dm, out_dir, trainer_cfg=dict(s.get("trainer") or {"accelerator": "cpu"}),
                            total_tokens=total, lr=s.get("lr"), batch_size=int(s.get("batch_size", 1024)),
                            metadata={"sources": sources, "alignment": stores[0].meta.get("alignment")})
    write_json(done, summary)
    return cc, summary


def enrich(cc: Any, stores: list[Any], cm: Any, splits: dict[int, str], out: Path, ec: DictConfig,
           labels: pd.DataFrame) -> dict:
    """The enrichment engine over the crosscoder's latents (read on all its sources at once)."""
    done = out / "summary.json"
    if done.exists():
        return read_json(done)
    from core.enrich import run_enrichment

    summary = run_enrichment(cc, stores, cm, splits, out, thresholds=tuple(ec.thresholds),
                             min_positives=int(ec.min_positives), neuron_baseline=bool(ec.neuron_baseline),
                             sample_labels=labels, top_k=int(ec.top_k), positional_control=False, umap=False)
    write_json(done, summary)
    return summary


def model_diff(stores: dict, cs: DictConfig, cm: Any, splits: dict, labels: pd.DataFrame, run_dir: Path,
               timer: Timer) -> tuple[dict[str, Any], pd.DataFrame]:
    from core.diff import Cutoffs, class_counts, classify
    from core.diff.concepts import class_concepts
    from core.diff.run import diff_crosscoder

    names = [str(cs.source_a.name), str(cs.source_b.name)]
    pair = [stores[names[0]][f"blocks.{int(cs.source_a.layer)}.hook_resid_post"],
            stores[names[1]][f"blocks.{int(cs.source_b.layer)}.hook_resid_post"]]
    out = run_dir / "model_diff"
    with timer("train_crosscoder"):
        cc, train = train_crosscoder(pair, out, cs.crosscoder, names)
    with timer("diff"):
        summary, latents = diff_crosscoder(cc, pair, out, names=names, cutoffs=Cutoffs(**cs.diff.cutoffs),
                                           tau=float(cs.diff.tau), floor=float(cs.diff.noise_floor))
    with timer("enrich_crosscoder"):
        enrich(cc, pair, cm, splits, out / "enrichment", cs.enrich, labels)
    summary["concepts_before_scaling"] = class_concepts(out / "enrichment", latents["class"])
    summary["concepts_after_scaling"] = class_concepts(out / "enrichment", latents["class_after_scaling"])
    side = Cutoffs(**{**cs.diff.side_cutoffs})  # descriptive: which model a latent leans towards
    sides = np.where(latents["class"] == "dead", "dead", classify(latents["relative_norm"].to_numpy(), side))
    summary["by_side"] = {"cutoffs": dataclasses.asdict(side), "counts": class_counts(sides),
                          "concepts": class_concepts(out / "enrichment", sides)}
    summary["training"] = {k: train.get(k) for k in ("steps", "tokens", "seconds", "dead_frac", "tokens_per_s")}
    summary["layers"] = {names[0]: int(cs.source_a.layer), names[1]: int(cs.source_b.layer)}
    return summary, latents


def depth_diff(stores: dict, cs: DictConfig, cm: Any, splits: dict, labels: pd.DataFrame, run_dir: Path,
               timer: Timer) -> tuple[dict[str, Any], np.ndarray, np.ndarray]:
    from core.diff.concepts import class_concepts
    from core.diff.depth import depth_classes, layer_shares
    from core.diff.norms import source_norms
    from core.diff.run import fire_counts, source_fvu

    name = str(cs.source_a.name)
    layers = [int(x) for x in cs.depth.layers]
    layer_stores = [stores[name][f"blocks.{x}.hook_resid_post"] for x in layers]
    names = [f"L{x}" for x in layers]
    out = run_dir / "depth"
    with timer("train_depth_crosscoder"):
        cc, train = train_crosscoder(layer_stores, out, cs.depth.crosscoder, names)
    shares = layer_shares(source_norms(cc))
    classes = depth_classes(shares, names, alive=fire_counts(cc, layer_stores) > 0)
    pd.DataFrame(shares, columns=names).assign(**{"class": classes}).to_csv(out / "depth.tsv", sep="\t")
    with timer("enrich_depth_crosscoder"):
        enrich(cc, layer_stores, cm, splits, out / "enrichment", cs.enrich, labels)
    counts = pd.Series(classes).value_counts().to_dict()
    summary = {"layers": layers, "n_latents": int((classes != "dead").sum()),
               "classes": {k: int(v) for k, v in counts.items()},
               "persistent_frac": round(float((classes == "persistent").mean()), 4),
               "fvu": dict(zip(names, source_fvu(cc, layer_stores), strict=True)),
               "concepts": class_concepts(out / "enrichment", classes),
               "training": {k: train.get(k) for k in ("steps", "tokens", "seconds", "dead_frac")}}
    return summary, shares, classes


def run(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    from core.adapters import load_adapter
    from core.harvest.aligned import Source, harvest_aligned
    from domains.protein.splits import cached_splits
    from domains.protein.studies.antibody_regions import (
        chain_labels,
        load_chains,
        number_and_filter,
        region_concepts,
    )
    from domains.protein.studies.model_diff_report import write_report

    cs = cfg.case_study
    run_dir = Path(run_dir)
    timer = Timer()
    with timer("load"):
        records = load_chains(cs)
    with timer("imgt_numbering"):
        records, nums, n_unnumbered = number_and_filter(records, cs, run_dir)
    with timer("splits"):
        splits = split_by_index(records, cached_splits(records, cs.split, run_dir))
    with timer("load_models"):
        ad_a, ad_b = load_adapter(cs.source_a.model), load_adapter(cs.source_b.model)
    a_layers = sorted({int(cs.source_a.layer), *[int(x) for x in cs.depth.layers]})
    sources = [Source(str(cs.source_a.name), ad_a, [f"blocks.{x}.hook_resid_post" for x in a_layers]),
               Source(str(cs.source_b.name), ad_b, [f"blocks.{int(cs.source_b.layer)}.hook_resid_post"])]
    with timer("harvest_aligned"):
        stores = harvest_aligned(sources, [r.to_sample() for r in records], run_dir / "activations",
                                 batch_tokens=int(cs.harvest_batch_tokens))
    first = stores[sources[0].name][sources[0].hooks[0]]
    with timer("concepts"):
        rc = region_concepts(nums, include_amino_acids=True, records=records)
        cm = rc.matrix(store_tokens(first))
        labels = chain_labels(records, int(cs.enrich.min_positives))
    diff, latents = model_diff(stores, cs, cm, splits, labels, run_dir, timer)
    depth, shares, dclasses = depth_diff(stores, cs, cm, splits, labels, run_dir, timer) if cs.depth.enabled \
        else (None, None, None)
    with timer("report"):
        write_report(run_dir, cs, diff, latents, depth, shares, dclasses)
    alignment = first.meta.get("alignment") or {}
    return {
        "case_study": "antibody_model_diff",
        "models": {str(cs.source_a.name): "AntiBERTy (MIT)",
                   str(cs.source_b.name): f"{cs.source_b.model.variant} (non-commercial licence, iglm package)"},
        "data": {"n_chains": len(records), "n_unnumbered_dropped": n_unnumbered, "n_tokens": first.n_tokens,
                 "splits": pd.Series(splits).value_counts().to_dict(), "licence": "CC BY-NC-SA 4.0 (abnativ test sets)",
                 "alignment": {"rows_sha256": alignment.get("rows_sha256"),
                               "dropped": {s["name"] + ":" + s["hook"]: s["dropped"] for s in alignment.get("sources", [])}}},
        "diff": diff,
        "depth": depth,
        "seconds": timer.seconds,
        "report": str(run_dir / "report.html"),
    }
