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
