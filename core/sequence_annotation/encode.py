"""Run new samples through the model and a run's dictionaries: sparse features per kept token.

One forward pass per packed batch captures every hook the dictionaries read (the pass stops
at the deepest one), special tokens are dropped as harvest drops them, and each dictionary's
latents are kept sparse, so a batch never holds more than one dense block of latents.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch

from core.adapters.base import ModelAdapter
from core.enrich.features import encode_sparse
from core.harvest import keep_mask, pack_batches, processing_order, token_estimator
from core.samples import Sample


@dataclass
class TokenFeatures:
    """Kept tokens of a list of samples, sorted by (sample, position), and each dictionary's
    latents on them (``X[name]``: CSR ``[n_tokens, d_sae]``)."""

    sample: np.ndarray
    position: np.ndarray
    token: np.ndarray
    X: dict[str, sp.csr_matrix]

    def rows_of(self) -> dict[int, slice]:
        """Sample index -> its slice of rows."""
        if not len(self.sample):
            return {}
        starts = np.concatenate([[0], np.flatnonzero(np.diff(self.sample)) + 1, [len(self.sample)]])
        return {int(self.sample[a]): slice(int(a), int(b)) for a, b in zip(starts[:-1], starts[1:], strict=True)}


@torch.no_grad()
def encode_samples(adapter: ModelAdapter, samples: Sequence[Sample], dictionaries: dict[str, tuple[str, object]],
                   *, batch_tokens: int = 8192, max_batch: int = 256, sae_batch_tokens: int = 4096,
                   device: str | torch.device = "cpu") -> TokenFeatures:
    """``dictionaries``: name -> (hook, dictionary). Sample indices refer to ``samples``."""
    hooks = list(dict.fromkeys(h for h, _ in dictionaries.values()))
    order = processing_order(samples, sort_window=max(1, len(samples)))
    spans = pack_batches(samples, order, 0, batch_tokens, max_batch, token_estimator(adapter))
    cols: dict[str, list[np.ndarray]] = {"sample": [], "position": [], "token": []}
    blocks: dict[str, list[sp.csr_matrix]] = {name: [] for name in dictionaries}
    for begin, end in spans:
        index = order[begin:end]
        batch = adapter.tokenize([samples[i] for i in index], sample_index=index)
        if not len(batch):
            continue
        acts = adapter.capture(batch, hooks)
        keep = keep_mask(batch, "all", drop_special=True).cpu()
        cols["sample"].append(batch.sample_index[:, None].expand_as(keep)[keep].numpy())
        cols["position"].append(batch.positions.cpu()[keep].numpy())
        cols["token"].append(batch.input_ids.cpu()[keep].numpy())
        for name, (hook, sae) in dictionaries.items():
            blocks[name].append(encode_sparse(sae, acts[hook].cpu()[keep].float(), batch_tokens=sae_batch_tokens,
                                              device=device))
    if not cols["sample"]:
        empty = np.zeros(0, np.int64)
        return TokenFeatures(empty, empty, empty,
                             {n: sp.csr_matrix((0, int(s.cfg.d_sae)), dtype=np.float32)
                              for n, (_, s) in dictionaries.items()})
    sample, position, token = (np.concatenate(cols[k]).astype(np.int64) for k in ("sample", "position", "token"))
    perm = np.lexsort((position, sample))
    X = {name: sp.vstack(b, format="csr")[perm] for name, b in blocks.items()}
    return TokenFeatures(sample[perm], position[perm], token[perm], X)
