"""Interventions the adapters' own evaluation needs: splice a dictionary in, or ablate.

Steering interventions (add a direction, clamp features) live in ``core.steering``; these
are the ones spliced-loss evaluation compares: the dictionary's reconstruction (with or
without its error term), a transcoder's prediction of an MLP's output from its input
(``TranscoderSplice``, one layer or a cross-layer transcoder's every layer), zero-ablation
and mean-ablation. Each is a callable
``fn(act [B, T, d], batch) -> act`` for ``adapter.intervene``; only real tokens are
replaced when ``only_real`` is set, so padding never depends on the dictionary.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from core.adapters.base import Batch


def _keep_mask(batch: Batch, act: torch.Tensor, only_real: bool, skip_special: bool,
               skip_first: bool = False) -> torch.Tensor | None:
    """``[B, T]`` tokens to replace; ``skip_first`` leaves each row's first real token (an
    attention sink in many LMs, which harvest's ``positions=skip_first`` also leaves out)."""
    if not only_real or act.shape[:2] != batch.input_ids.shape:
        return None
    keep = batch.attention_mask.bool()
    if skip_special:
        keep = keep & ~batch.special_mask
    if skip_first:
        real = batch.attention_mask.bool()
        keep = keep & ~((real.long().cumsum(-1) == 1) & real)
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
                 skip_special: bool = False, skip_first: bool = False) -> None:
        self.dictionary = dictionary
        self.error_term = error_term
        self.only_real = only_real
        self.skip_special = skip_special
        self.skip_first = skip_first

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
        return _merge(act, recon, _keep_mask(batch, act, self.only_real, self.skip_special, self.skip_first))


class Ablate:
    """Replace the activation by a constant: zeros, or a mean activation ``[d]``."""

    def __init__(self, value: torch.Tensor | None = None, *, only_real: bool = True, skip_special: bool = False,
                 skip_first: bool = False) -> None:
        self.value = value
        self.only_real = only_real
        self.skip_special = skip_special
        self.skip_first = skip_first

    def __call__(self, act: torch.Tensor, batch: Batch) -> torch.Tensor:
        if self.value is None:
            new = torch.zeros_like(act)
        else:
            new = self.value.to(act.device, act.dtype).expand_as(act)
        return _merge(act, new, _keep_mask(batch, act, self.only_real, self.skip_special, self.skip_first))


class TranscoderSplice:
    """Replace MLP outputs by a transcoder's prediction from the MLP inputs of the same pass.

    ``sites`` lists ``(hook_in, hook_out)`` per layer of the dictionary: one pair for a
    per-layer (or skip) transcoder, one per layer of its range for a cross-layer transcoder
    (whose prediction at layer ``t`` sums the latents of every layer up to ``t``). Each input
    hook records its activation and leaves it unchanged; each output hook in ``write``
    (default: all) is replaced. Splicing every layer of a CLT at once is its replacement
    model: later inputs then already see the earlier predictions. With ``error_term`` the
    output is ``prediction + (mlp_out - prediction)``, numerically the clean pass.
    """

    def __init__(self, dictionary: nn.Module, sites: list[tuple[str, str]], *, write: list[int] | None = None,
                 error_term: bool = False, only_real: bool = True, skip_special: bool = False,
                 skip_first: bool = False) -> None:
        self.dictionary, self.sites = dictionary, list(sites)
        self.write = list(range(len(self.sites))) if write is None else [int(i) for i in write]
        self.error_term = error_term
        self.keep = (only_real, skip_special, skip_first)
        self._x: dict[int, torch.Tensor] = {}
        self._f: dict[int, torch.Tensor] = {}

    def interventions(self) -> dict[str, Callable[[torch.Tensor, Batch], torch.Tensor]]:
        """``{hook: fn}`` for ``adapter.intervene``: readers at the inputs, writers at the outputs."""
        last = max(self.write)
        out: dict[str, Callable[[torch.Tensor, Batch], torch.Tensor]] = {}
        for i, (hook_in, _) in enumerate(self.sites[:last + 1]):
            out[hook_in] = self._reader(i)
        for i in self.write:
            out[self.sites[i][1]] = self._writer(i)
        return out

    def _dtype(self) -> torch.dtype:
        return next(iter(self.dictionary.parameters())).dtype

    def _reader(self, i: int):
        def read(act: torch.Tensor, batch: Batch) -> torch.Tensor:
            x = act.reshape(-1, act.shape[-1]).to(self._dtype())
            self._x[i] = x
            if len(self.sites) > 1:
                self._f[i] = self.dictionary.layer_view(i).encode(x)
            return act
        return read

    def _writer(self, i: int):
        def write(act: torch.Tensor, batch: Batch) -> torch.Tensor:
            d = self.dictionary
            if len(self.sites) > 1:
                pred = d.predict_layer(i, [self._f[j] for j in range(i + 1)], self._x[i])
            else:
                pred = d.decode_flat(d.encode(self._x[i])) + d.skip(self._x[i])
            pred = pred.to(act.dtype).reshape(act.shape)
            if self.error_term:
                pred = pred + (act - pred).detach()
            return _merge(act, pred, _keep_mask(batch, act, *self.keep))
        return write
