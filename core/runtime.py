"""Process-wide settings taken from the config: seed, device, threads."""

from __future__ import annotations

import os

import torch
from omegaconf import DictConfig


def configure_runtime(cfg: DictConfig) -> None:
    threads = cfg.get("threads")
    torch.set_num_threads(int(threads) if threads else max(1, os.cpu_count() or 1))
    seed = cfg.get("seed")
    if seed is not None:
        import lightning

        lightning.seed_everything(int(seed), workers=True, verbose=False)


def resolve_device(spec: str | None) -> torch.device:
    """``auto`` picks CUDA when present, else CPU."""
    if spec in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(spec)


def is_global_zero() -> bool:
    """Whether this process is rank 0 of its run (always, outside multi-process runs).

    Under Lightning DDP every process runs the same command; only rank 0 may write the run's
    shared files (results.json). Read from torch.distributed when a group is up, else from the
    variables launchers set (Lightning's LOCAL_RANK/NODE_RANK, torchrun's RANK, SLURM_PROCID)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank() == 0
    for var in ("RANK", "SLURM_PROCID", "LOCAL_RANK", "NODE_RANK"):
        if int(os.environ.get(var, 0) or 0) != 0:
            return False
    return True
