"""An activation store with planted sparse features, written in a second: ``n_features`` random
unit directions in ``d`` dimensions, each token the sum of ``k`` of them (drawn with replacement) with magnitudes in
[0.5, 1.5]. An SAE that recovers the directions reconstructs the held-out split well; one that
does not, does not, so trained dictionaries can be compared by their held-out FVU."""

from __future__ import annotations

from pathlib import Path

import torch

from core.store import ShardWriter


def planted_tokens(n_tokens: int, d: int = 16, n_features: int = 48, k: int = 3, seed: int = 0
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """``(x [n_tokens, d], directions [n_features, d])``."""
    g = torch.Generator().manual_seed(seed)
    directions = torch.nn.functional.normalize(torch.randn(n_features, d, generator=g), dim=1)
    idx = torch.randint(0, n_features, (n_tokens, k), generator=g)  # with replacement: fast at any size
    mags = 0.5 + torch.rand(n_tokens, k, generator=g)
    chunks = []
    for lo in range(0, n_tokens, 8192):  # dense codes a chunk at a time, then one matmul
        codes = torch.zeros(min(8192, n_tokens - lo), n_features)
        codes.scatter_add_(1, idx[lo:lo + 8192], mags[lo:lo + 8192])
        chunks.append(codes @ directions)
    x = torch.cat(chunks)
    return x, directions


def write_planted_store(root: Path, *, n_samples: int = 256, tokens_per_sample: int = 32,
                        shard_tokens: int = 1024, seed: int = 0, **kw) -> Path:
    """A complete store at ``root`` (``n_samples`` samples of ``tokens_per_sample`` tokens)."""
    x, _ = planted_tokens(n_samples * tokens_per_sample, seed=seed, **kw)
    with ShardWriter(root, model="planted", hook="blocks.0.hook_resid_post", d=x.shape[1],
                     shard_tokens=shard_tokens) as w:
        for s in range(n_samples):
            rows = slice(s * tokens_per_sample, (s + 1) * tokens_per_sample)
            w.add(x[rows], torch.full((tokens_per_sample,), s), torch.arange(tokens_per_sample),
                  torch.zeros(tokens_per_sample, dtype=torch.long), samples_done=s + 1)
    return Path(root)
