"""What multi-process training needs beyond Lightning's DDP strategy: the world size before the
run (to turn a token budget into steps at the global batch) and a check that ranks agree.

Under DDP each process holds a full copy of the dictionary and sees its own share of the
shards (``core.store.StoreStream``); gradients are averaged, so a step at per-process batch
``b`` on ``n`` processes is a step at global batch ``n * b``. ``trainer.total_tokens`` counts
tokens over all processes, so ``max_steps = total_tokens // (b * n)`` and a run on 2 processes
at batch 2048 takes the steps of one process at 4096. Dead-latent counters are summed over
ranks every step (``DictionaryModule._count_fires``).
"""

from __future__ import annotations

import logging
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback


def planned_world_size(trainer_cfg: dict[str, Any] | None) -> int:
    """The number of processes the configured Trainer will run on (devices x nodes), resolved by
    Lightning itself ("auto", -1 and device lists included) without launching anything."""
    cfg = trainer_cfg or {}
    quiet = logging.getLogger("lightning.pytorch.utilities.rank_zero")
    level = quiet.level
    quiet.setLevel(logging.WARNING)  # the probe would print the accelerator summary a second time
    try:
        probe = L.Trainer(accelerator=cfg.get("accelerator", "auto"), devices=cfg.get("devices", "auto"),
                          strategy=cfg.get("strategy", "auto"), num_nodes=int(cfg.get("num_nodes", 1)),
                          logger=False, enable_checkpointing=False, enable_progress_bar=False,
                          enable_model_summary=False)
    finally:
        quiet.setLevel(level)
    return int(probe.world_size)


def _fingerprint(module: torch.nn.Module) -> torch.Tensor:
    """Per tensor: sum, sum of squares and a fixed pseudo-random projection (cheap to gather,
    and any differing element changes it)."""
    out = []
    for p in [*module.parameters(), *module.buffers()]:
        flat = p.detach().double().reshape(-1)
        g = torch.Generator(device="cpu").manual_seed(flat.numel())
        w = torch.rand(flat.numel(), generator=g, dtype=torch.float64).to(flat.device)
        out.extend([flat.sum(), flat.pow(2).sum(), (flat * w).sum()])
    return torch.stack(out)


class RankAgreement(Callback):
    """At the end of a multi-process fit, gather from every rank its decoder row norms, a
    fingerprint of every parameter and buffer, and its dead-latent count; ``report`` holds the
    largest difference between ranks (0.0 when the copies are identical, as DDP promises)."""

    def __init__(self) -> None:
        self.report: dict[str, Any] | None = None

    def on_train_end(self, trainer, pl_module) -> None:
        if trainer.world_size <= 1:
            return
        sae = pl_module.sae
        norms = pl_module.all_gather(sae.W_dec.detach().float().norm(dim=-1))  # [world, d_sae]
        prints = pl_module.all_gather(_fingerprint(pl_module))
        dead = pl_module.all_gather(pl_module.dead_mask().sum())
        self.report = {
            "world_size": int(trainer.world_size),
            "decoder_norm_max_diff_across_ranks": float((norms - norms[0]).abs().max()),
            "state_fingerprint_max_diff_across_ranks": float((prints - prints[0]).abs().max()),
            "dead_latents_per_rank": [int(v) for v in dead.reshape(-1).tolist()],
        }
        if self.report["state_fingerprint_max_diff_across_ranks"] > 0:
            logging.getLogger(__name__).warning("DDP ranks disagree: %s", self.report)
