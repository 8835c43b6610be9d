"""The ``synthetic`` case study: does each architecture recover a planted dictionary?

Tokens from :class:`ToyModel` go into an activation store (the same on-disk path real models
use), every configured architecture is trained on it through ``train_sae``, and each is scored
by the mean max cosine similarity (MMCS) of the planted directions to its decoder rows, the
fraction recovered at cosine > 0.9, FVU and L0 on the held-out split. Re-running the same
``hydra.run.dir`` resumes: the store, finished dictionaries and Lightning checkpoints are kept.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from domains.synthetic.toy import ToyModel, mmcs

log = logging.getLogger(__name__)

RECOVERED_COSINE = 0.9


def write_store(toy: ToyModel, root: Path, *, n_tokens: int, tokens_per_sample: int,
                chunk_samples: int = 256, shard_tokens: int = 65536):
    """Toy activations as an activation store (resumes a partial one)."""
    from core.store import ActivationStore, ShardWriter

    n_samples = n_tokens // tokens_per_sample
    writer = ShardWriter(root, model=f"toy_superposition_{toy.n_features}x{toy.d}", hook="toy", d=toy.d,
                         shard_tokens=shard_tokens, meta={"toy": vars(toy) | {"directions": None}})
    if not writer.complete:
        for start in range(writer.samples_done, n_samples, chunk_samples):
            stop = min(n_samples, start + chunk_samples)
            n = (stop - start) * tokens_per_sample
            x, _ = toy.sample(n, seed=start)
            sample = torch.arange(start, stop).repeat_interleave(tokens_per_sample)
            position = torch.arange(tokens_per_sample).repeat(stop - start)
            writer.add(x, sample, position, torch.zeros(n, dtype=torch.long), samples_done=stop)
        writer.close()
    return ActivationStore(root)


def score(sae, toy: ToyModel, dm) -> dict[str, float]:
    from core.eval.metrics import evaluate_dictionary

    m, best = mmcs(sae.W_dec.detach().float(), toy.directions)
    metrics = evaluate_dictionary(sae, dm.val_dataloader())
    return {"mmcs": round(m, 4), "recovered_frac": round(float((best > RECOVERED_COSINE).float().mean()), 4),
            "fvu": round(metrics["fvu"], 4), "l0": round(metrics["l0"], 3),
            "dead_frac": round(metrics["dead_frac"], 4), "cosine": round(metrics["cosine"], 4),
            "relative_reconstruction_bias": round(metrics["relative_reconstruction_bias"], 4)}


def train_one(arch: str, overrides: dict[str, Any], cs: dict[str, Any], dm, run_dir: Path):
    from core.checkpoint import load_sae, save_sae
    from core.training import train_sae

    folder = run_dir / f"sae_{arch}"
    if (folder / "cfg.json").exists():
        log.info("%s: already trained, loading %s", arch, folder)
        return load_sae(folder), None
    sae_cfg = {"architecture": arch, "d_in": dm.d, "d_sae": int(cs["d_sae"]), **overrides}
    if arch in ("topk", "batchtopk", "matryoshka"):
        sae_cfg.setdefault("k", int(cs["k"]))
    trainer = dict(cs.get("trainer") or {})
    schedule = {k: trainer.pop(k) for k in ("lr", "warmup_steps", "decay_fraction", "dead_after_tokens",
                                                  "init_encoder_scale")
                if k in trainer}
    sae_cfg.setdefault("dead_after_tokens", int(cs["dead_after_tokens"]))
    t0 = time.time()
    sae, summary = train_sae(sae_cfg, dm, run_dir / "train" / arch, trainer_cfg=trainer,
                             total_tokens=int(cs["train_tokens"]), save=False, **schedule)
    summary["seconds_total"] = round(time.time() - t0, 1)
    save_sae(sae, folder, metadata={"hook_name": "toy", "model_name": dm.store.model, "training": summary})
    return sae, summary


def run(cfg: DictConfig, run_dir: Path) -> dict[str, Any]:
    from core.store import ActivationDataModule

    cs = OmegaConf.to_container(cfg.case_study, resolve=True)
    run_dir = Path(run_dir)
    toy = ToyModel(**cs["toy"])
    store = write_store(toy, run_dir / "activations" / "toy", n_tokens=int(cs["n_tokens"]),
                        tokens_per_sample=int(cs["tokens_per_sample"]))
    dm = ActivationDataModule(store, batch_size=int(cs["batch_size"]), holdout_fraction=float(cs["holdout_fraction"]),
                              seed=int(cfg.get("seed") or 0))
    results: dict[str, Any] = {}
    for arch, overrides in cs["architectures"].items():
        sae, summary = train_one(arch, dict(overrides or {}), cs, dm, run_dir)
        results[arch] = score(sae, toy, dm)
        if summary:
            results[arch]["train_seconds"] = summary["seconds_total"]
        log.info("%s: %s", arch, results[arch])
    table = markdown_table(results)
    from core.io import write_text

    write_text(run_dir / "results.md", table)
    print(table)
    return {"architectures": results,
            "toy": {"d": toy.d, "n_features": toy.n_features, "p_active": toy.p_active,
                    "correlation": toy.correlation, "n_tokens": store.n_tokens},
            "recovered_cosine": RECOVERED_COSINE}


def markdown_table(results: dict[str, dict[str, float]]) -> str:
    cols = ["mmcs", "recovered_frac", "fvu", "l0", "dead_frac", "relative_reconstruction_bias", "train_seconds"]
    lines = ["| architecture | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for arch, r in results.items():
        lines.append(f"| {arch} | " + " | ".join(str(r.get(c, "")) for c in cols) + " |")
    return "\n".join(lines) + "\n"
