"""Interventions the adapters' own evaluation needs: splice a dictionary in, or ablate.

Steering interventions (add a direction, clamp features) live in ``core.steering``; these
are the ones spliced-loss evaluation compares: the dictionary's reconstruction (with or
without its error term), zero-ablation and mean-ablation. Each is a callable
``fn(act [B, T, d], batch) -> act`` for ``adapter.intervene``; only real tokens are
replaced when ``only_real`` is set, so padding never depends on the dictionary.
"""

from __future__ import annotations

import torch
from torch import nn

from core.adapters.base import Batch


def _keep_mask(batch: Batch, act: torch.Tensor, only_real: bool, skip_special: bool) -> torch.Tensor | None:
    if not only_real or act.shape[:2] != batch.input_ids.shape:
        return None
    keep = batch.attention_mask.bool()
    if skip_special:
        keep = keep & ~batch.special_mask
    return keep.to(act.device)


def _merge(act: torch.Tensor, new: torch.Tensor, keep: torch.Tensor | None) -> torch.Tensor:
    if keep is None:
        return new
    return torch.where(keep[..., None], new, act)


class Splice:
    """Replace the activation by the dictionary's reconstruction; ``error_term`` adds back
    ``act - reconstruction`` computed on the clean activation, which leaves the forward pass
    unchanged but lets gradients or downstream edits flow through the latents."""

    def __init__(self, dictionary: nn.Module, *, error_term: bool = False, only_real: bool = True,
                 skip_special: bool = False) -> None:
        self.dictionary = dictionary
        self.error_term = error_term
        self.only_real = only_real
        self.skip_special = skip_special

    def reconstruct(self, x: torch.Tensor) -> torch.Tensor:
        d = self.dictionary
        if hasattr(d, "encode") and hasattr(d, "decode"):
            return d.decode(d.encode(x))
        out = d(x)
        return out[0] if isinstance(out, tuple) else out

    def __call__(self, act: torch.Tensor, batch: Batch) -> torch.Tensor:
        flat = act.reshape(-1, act.shape[-1])
        param = next(iter(self.dictionary.parameters()), None)
        x = flat.to(param.dtype) if param is not None else flat
        recon = self.reconstruct(x).to(act.dtype).reshape(act.shape)
        if self.error_term:
            recon = recon + (act - recon).detach()
        return _merge(act, recon, _keep_mask(batch, act, self.only_real, self.skip_special))


class Ablate:
    """Replace the activation by a constant: zeros, or a mean activation ``[d]``."""

    def __init__(self, value: torch.Tensor | None = None, *, only_real: bool = True, skip_special: bool = False) -> None:
        self.value = value
        self.only_real = only_real
        self.skip_special = skip_special

    def __call__(self, act: torch.Tensor, batch: Batch) -> torch.Tensor:
        if self.value is None:
            new = torch.zeros_like(act)
        else:
            new = self.value.to(act.device, act.dtype).expand_as(act)
        return _merge(act, new, _keep_mask(batch, act, self.only_real, self.skip_special))
