"""The synthetic half of the ``feature_universality`` case study: seeds and stitching where the truth is planted.

The toy model has 64 frequent and 64 rare planted features (``ToyModel`` with ``n_rare``). Two
TopK SAEs with as many latents as planted features (two seeds) should both recover the same
planted directions; a small SAE with half as many latents spends them on the frequent ones
and leaves rare ones out, and stitching should call exactly the large SAE's latents for those
left-out features novel. Truth for the score: a large latent is truly novel when the planted
feature it points at most closely is held by no small latent at cosine >= 0.7. The large
seed-0 run also saves snapshots, so the life cycle is seen against planted features too.

A helper, not a runner: the case study's one runner is
``domains/protein/studies/feature_universality.py``, which calls ``run_part`` through the
config's ``case_study.synthetic.part`` (so the protein domain does not import this one).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from core.compare import universality as U
from core.compare.matching import cosine_matrix
from domains.synthetic.toy import ToyModel

log = logging.getLogger(__name__)
TAG = "synthetic_"


def planted_recovery(sae, toy: ToyModel) -> np.ndarray:
    """Per planted feature, its best decoder cosine in ``sae``."""
    return cosine_matrix(sae.W_dec, toy.directions).max(axis=0)


def train_all(ps: dict[str, Any], store, run_dir: Path) -> dict[str, Any]:
    from core.compare.family import init_seed, train_or_load
    from core.store import ActivationDataModule

    saes = {}
    specs = [f"large_seed{s}" for s in ps["seeds"]] + ["small_seed0"]
    for name in specs:
        width, seed = int(ps["small" if name.startswith("small") else "large"]), init_seed(name)
        dm = ActivationDataModule(store, batch_size=int(ps["batch_size"]), holdout_fraction=float(ps["holdout_fraction"]),
                                  seed=seed)
        cfg = {"architecture": "topk", "d_in": store.d, "d_sae": width, "k": int(ps["k"]),
               "aux_k": 2 * int(ps["k"]), "dead_after_tokens": int(ps["dead_after_tokens"])}
        snaps = ps["snapshots"] if name == "large_seed0" else ()
        saes[name], _ = train_or_load(cfg, dm, run_dir / name, total_tokens=int(ps["train_tokens"]), seed=seed,
                                      trainer_cfg=ps["trainer"], snapshots=snaps, lr=float(ps["lr"]),
                                      metadata={"hook_name": "toy", "model_name": store.model})
    return saes


def stitching_truth(res, small, large, toy: ToyModel) -> dict[str, Any]:
    held = planted_recovery(small, toy)
    planted = cosine_matrix(large.W_dec, toy.directions).argmax(axis=1)
    truth = held[planted] < 0.7
    cls = res.features["class"].to_numpy()
    live, novel = cls != "dead", cls == "novel"
    tp = int((novel & truth & live).sum())
    return {"truth_rule": "truly novel: the planted feature the large latent points at most closely is held "
                          "by no small latent at cosine >= 0.7",
            "n_truly_novel": int((truth & live).sum()), "n_called_novel": int(novel.sum()),
            "precision": round(tp / max(int(novel.sum()), 1), 4), "recall": round(tp / max(int((truth & live).sum()), 1), 4),
            "rare_features_left_out_by_small": int((held[toy.n_features - toy.n_rare:] < 0.7).sum()),
            "frequent_features_left_out_by_small": int((held[: toy.n_features - toy.n_rare] < 0.7).sum())}


def run_part(cfg: DictConfig, run_dir: Path, report: Any = None) -> dict[str, Any]:
    """The synthetic half: returns {seeds, widths, stitching, lifecycle} with planted-truth scores."""
    ps = OmegaConf.to_container(cfg.case_study.synthetic, resolve=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(int(ps.get("threads") or threads))
    try:
        return _run_part(ps, Path(run_dir), report)
    finally:
        torch.set_num_threads(threads)


def _run_part(ps: dict[str, Any], run_dir: Path, report: Any) -> dict[str, Any]:
    from core.compare.activations import token_sample
    from core.compare.snapshots import load_snapshots
    from domains.synthetic.studies.synthetic import write_store

    toy = ToyModel(**ps["toy"])
    store = write_store(toy, run_dir / "activations" / "toy", n_tokens=int(ps["n_tokens"]),
                        tokens_per_sample=int(ps["tokens_per_sample"]))
    saes = train_all(ps, store, run_dir)
    x, _ = token_sample(store.root, split="val", holdout_fraction=float(ps["holdout_fraction"]), max_tokens=None)
    codes = U.Codes(x)
    if report is not None:
        report.heading("Synthetic part: planted features", level=2)
        report.text(f"{toy.n_features} planted directions in {toy.d} dimensions: {toy.n_features - toy.n_rare} fire "
                    f"with p={toy.p_active}, {toy.n_rare} with p={toy.p_rare}. TopK k={ps['k']}; large SAEs "
                    f"{ps['large']} latents (seeds {ps['seeds']}), small {ps['small']}; {x.shape[0]} held-out tokens.")
    other = f"large_seed{ps['seeds'][1]}"
    a, b = saes["large_seed0"], saes[other]
    seeds = U.seeds({f"large {ps['large']}": ("large_seed0", a, other, b)}, codes, report=report, tag=TAG)
    ra, rb = planted_recovery(a, toy), planted_recovery(b, toy)
    both, either = (ra > 0.9) & (rb > 0.9), (ra > 0.9) | (rb > 0.9)
    seeds["planted"] = {"mmcs_truth_seed0": round(float(ra.mean()), 4), "mmcs_truth_seed1": round(float(rb.mean()), 4),
                        "recovered_seed0": int((ra > 0.9).sum()), "recovered_seed1": int((rb > 0.9).sum()),
                        "recovered_by_both": int(both.sum()), "recovered_by_either": int(either.sum()),
                        "jaccard_recovered": round(float(both.sum() / max(either.sum(), 1)), 4)}
    small = saes["small_seed0"]
    widths = U.widths({int(ps["small"]): ("small_seed0", small), int(ps["large"]): ("large_seed0", a)}, codes,
                      report=report, tag=TAG)
    stitch_out, objs = U.stitching([("small_seed0", small, "large_seed0", a)], codes, report=report, tag=TAG)
    key = next(iter(objs))
    stitch_out[key]["truth"] = stitching_truth(objs[key], small, a, toy)
    if report is not None:
        report.table([{"measure": k, "value": v} for k, v in stitch_out[key]["truth"].items()],
                     caption="stitching against the planted truth")
    snaps = load_snapshots(run_dir / "large_seed0" / "snapshots")
    life = U.lifecycle(snaps, a, label="toy large seed 0", report=report, tag=TAG)
    life["planted_recovered"] = {f"{f:g}": int((planted_recovery(s, toy) > 0.9).sum()) for f, s in snaps.items()}
    return {"seeds": seeds, "widths": widths, "stitching": stitch_out, "lifecycle": life,
            "toy": {k: v for k, v in ps["toy"].items()}, "held_out_tokens": int(x.shape[0])}

