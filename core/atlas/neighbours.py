"""Nearest features by decoder direction: what each feature writes, compared by cosine."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch


@torch.no_grad()
def decoder_neighbours(W_dec: Any, k: int = 8, *, block: int = 2048) -> tuple[np.ndarray, np.ndarray]:
    """For each row of ``W_dec`` ``[d_sae, d]`` its ``k`` most similar other rows: indices and
    cosines ``[d_sae, k]``, computed in blocks of rows so memory stays ``block x d_sae``."""
    W = torch.as_tensor(W_dec).detach().float().cpu()
    W = W / W.norm(dim=1, keepdim=True).clamp(min=1e-12)
    n = W.shape[0]
    k = max(0, min(int(k), n - 1))
    idx = np.zeros((n, k), dtype=np.int64)
    cos = np.zeros((n, k), dtype=np.float32)
    for a in range(0, n, block):
        sim = W[a:a + block] @ W.T
        sim[torch.arange(sim.shape[0]), torch.arange(a, a + sim.shape[0])] = -2.0
        top = sim.topk(k, dim=1)
        idx[a:a + block] = top.indices.numpy()
        cos[a:a + block] = top.values.numpy()
    return idx, cos
