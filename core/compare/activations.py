"""Activation-based matching: the same tokens through both dictionaries.

Decoder cosine says two features write the same direction; activation correlation says they
fire on the same tokens. Both dictionaries encode one shared token sample (held-out samples
of an activation store, so neither was trained on them); the codes are kept sparse
(``scipy.sparse`` CSR), which is what makes an 8k x 8k comparison fit in memory.

- ``correlation``: Pearson correlation of the two activations over the sample (a latent that
  never fires has no variance and gets correlation 0);
- ``coactivation``: ``P(a fires | b fires)``, the share of ``b``'s firing tokens on which
  ``a`` fires too (the measure a splitting tree needs: a parent fires wherever its children do).
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import scipy.sparse as sp
import torch

from core.errors import DataError

log = logging.getLogger(__name__)


def token_sample(store_root: str | Path, *, split: str = "val", holdout_fraction: float = 0.05,
                 split_seed: int = 0, max_tokens: int | None = 32768) -> tuple[torch.Tensor, torch.Tensor]:
    """Up to ``max_tokens`` activations of a store's held-out samples (the same hash split as
    training, ``split="val"``) or of every sample (``split="all"``), in store order, with
    their row numbers in the store (so per-token labels can be looked up)."""
    from core.store import ActivationStore, holdout_mask

    if split not in ("val", "all"):
        raise DataError(f"unknown token-sample split {split!r}", fix="use compare.split=val or compare.split=all")
    store = ActivationStore(store_root)
    xs, rows, have = [], [], 0
    offsets = store.shard_offsets()
    for i, shard in enumerate(store.iter_shards(("acts", "sample"))):
        n = shard["acts"].shape[0]
        keep = holdout_mask(shard["sample"], holdout_fraction, split_seed) if split == "val" else torch.ones(n, dtype=torch.bool)
        idx = keep.nonzero().flatten()
        if max_tokens is not None:
            idx = idx[: int(max_tokens) - have]
        xs.append(shard["acts"][idx])
        rows.append(idx + offsets[i])
        have += len(idx)
        if max_tokens is not None and have >= int(max_tokens):
            break
    if have == 0:
        raise DataError(f"the {split} split of this store holds no tokens", path=str(store.root),
                        fix="use compare.split=all, or a larger compare.holdout_fraction")
    return torch.cat(xs), torch.cat(rows)


@torch.no_grad()
def encode_sparse(sae: torch.nn.Module, x: torch.Tensor, *, batch_tokens: int = 4096,
                  progress: bool = False) -> sp.csr_matrix:
    """The dictionary's latent code of every row of ``x`` as a sparse ``[n, d_sae]`` matrix."""
    from tqdm.auto import tqdm

    was = sae.training
    sae.eval()
    parts = []
    starts = range(0, x.shape[0], int(batch_tokens))
    for i in tqdm(starts, desc="encode", disable=not progress, leave=False):
        f = sae.encode(x[i:i + int(batch_tokens)].to(sae.W_enc.dtype)).float()
        idx = f.nonzero(as_tuple=True)
        parts.append(sp.csr_matrix((f[idx].numpy(), (idx[0].numpy(), idx[1].numpy())), shape=tuple(f.shape)))
    sae.train(was)
    return sp.vstack(parts, format="csr") if parts else sp.csr_matrix((0, sae.cfg.d_sae), dtype=np.float32)


def fired(codes: sp.csr_matrix) -> sp.csr_matrix:
    """The 0/1 firing pattern of a code matrix."""
    out = codes.copy()
    out.data = (out.data != 0).astype(np.float32)
    out.eliminate_zeros()
    return out


def correlation(fa: sp.csr_matrix, fb: sp.csr_matrix) -> np.ndarray:
    """Pearson correlation ``[n_a, n_b]`` between every latent of ``a`` and of ``b`` over the
    same tokens (rows); latents without variance get 0."""
    if fa.shape[0] != fb.shape[0]:
        raise ValueError("codes of different token samples")
    n = fa.shape[0]
    mean_a, sd_a = _moments(fa)
    mean_b, sd_b = _moments(fb)
    out = (fa.T @ fb).toarray().astype(np.float32)
    out /= n
    out -= np.outer(mean_a, mean_b).astype(np.float32)
    denom = np.outer(sd_a, sd_b).astype(np.float32)
    live = denom > 1e-12
    np.divide(out, denom, out=out, where=live)
    out[~live] = 0.0
    return np.clip(out, -1.0, 1.0, out=out)


def _moments(codes: sp.csr_matrix) -> tuple[np.ndarray, np.ndarray]:
    c = codes.astype(np.float64)
    mean = np.asarray(c.mean(axis=0)).ravel()
    sq = np.asarray(c.multiply(c).mean(axis=0)).ravel()
    return mean, np.sqrt(np.maximum(sq - mean ** 2, 0.0))


def coactivation(fa: sp.csr_matrix, fb: sp.csr_matrix) -> np.ndarray:
    """``[n_a, n_b]``: the fraction of the tokens where ``b``'s latent fires on which ``a``'s
    latent fires too (0 for a ``b`` latent that never fires)."""
    ba, bb = fired(fa), fired(fb)
    both = (ba.T @ bb).toarray()
    n_b = np.asarray(bb.sum(axis=0)).ravel()
    return (both / np.maximum(n_b, 1.0)[None, :]).astype(np.float32)


def firing_rates(codes: sp.csr_matrix) -> np.ndarray:
    """Fraction of tokens on which each latent fires."""
    return np.asarray(fired(codes).sum(axis=0)).ravel() / max(codes.shape[0], 1)
