"""Spliced evaluation of transcoders: the model's own loss when MLP outputs are replaced by a
transcoder's prediction from the MLP inputs (``core.adapters.interventions.TranscoderSplice``).

Baselines are zero- and mean-ablating the same MLP outputs (the same tokens: with
``skip_first`` each row's first token, an attention sink the dictionaries were not trained on,
keeps its clean MLP output under every condition). Several parts spliced together (every
layer's per-layer transcoder at once, or a cross-layer transcoder's replacement model) are
compared with ablating all of their MLPs. Causal LMs score next-token cross-entropy, masked
protein LMs a pseudo-log-likelihood on masked residues (``score_conditions``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from core.adapters.base import ModelAdapter
from core.adapters.interventions import Ablate, TranscoderSplice
from core.errors import ConfigError
from core.eval.scoring import mean_activations, score_conditions, summarise, text_batches
from core.samples import Sample

Sites = list[tuple[str, str]]
Part = tuple[nn.Module, Sites]


def sites_of(dictionary: nn.Module) -> Sites:
    """``(hook_in, hook_out)`` per layer from a transcoder's metadata (lists for a CLT)."""
    meta = dict(getattr(dictionary, "metadata", None) or {})
    src, dst = meta.get("hook_name"), meta.get("hook_name_out")
    if not src or not dst:
        raise ConfigError("the transcoder's metadata names no input and output hooks (hook_name, hook_name_out)",
                          fix="train it with stage=train data.root=<input store> data.targets=<output store>, "
                              "or pass the sites explicitly")
    src = src if isinstance(src, list) else [src]
    dst = dst if isinstance(dst, list) else [dst]
    return list(zip(src, dst, strict=True))


def check_sites(adapter: ModelAdapter, sites: Sites, where: str | None = None) -> None:
    """Every site's block exists in the model (a CLT's layer range must fit the model)."""
    layers = [int(m.group(1)) for pair in sites for h in pair if (m := re.match(r"blocks\.(\d+)\.", h))]
    if layers and max(layers) >= adapter.n_layers:
        raise ConfigError(f"the dictionary covers layers {min(layers)}..{max(layers)}, but {adapter.name} has "
                          f"{adapter.n_layers} layers (0..{adapter.n_layers - 1})", path=where,
                          fix="use a dictionary trained on this model, or a layer range inside the model")
    adapter.check_hooks([h for pair in sites for h in pair])


def splice_conditions(parts: Sequence[Part], means: dict[str, torch.Tensor], *, write: Sequence[int] | None = None,
                      error_term: bool = True, skip_first: bool = False) -> dict[str, dict[str, Any]]:
    """The standard conditions for ``parts`` spliced together: ``spliced``, optionally
    ``spliced_with_error``, ``zero_ablation`` and ``mean_ablation`` of the same MLP outputs."""
    kw = {"skip_first": skip_first}
    spliced: dict[str, Any] = {}
    with_error: dict[str, Any] = {}
    outs: list[str] = []
    for dictionary, sites in parts:
        chosen = list(range(len(sites))) if write is None else list(write)
        spliced.update(TranscoderSplice(dictionary, sites, write=chosen, **kw).interventions())
        with_error.update(TranscoderSplice(dictionary, sites, write=chosen, error_term=True, **kw).interventions())
        outs += [sites[i][1] for i in chosen]
    conditions = {"spliced": spliced}
    if error_term:
        conditions["spliced_with_error"] = with_error
    conditions["zero_ablation"] = {h: Ablate(None, **kw) for h in outs}
    conditions["mean_ablation"] = {h: Ablate(means[h], **kw) for h in outs}
    return conditions


@torch.no_grad()
def transcoder_spliced_metrics(adapter: ModelAdapter, parts: Sequence[Part], samples: Sequence[Sample], *,
                               write: Sequence[int] | None = None, batch_tokens: int = 4096,
                               mask_fraction: float = 0.15, seed: int = 0, skip_first: bool = False,
                               error_term: bool = True) -> dict[str, Any]:
    """CE/KL (clean, spliced, with error, zero- and mean-ablated) and loss recovered for
    ``parts`` spliced together; ``write`` picks layers of a single CLT (default: all)."""
    for _, sites in parts:
        check_sites(adapter, sites)
    batches = text_batches(adapter, samples, batch_tokens)
    outs = [sites[i][1] for _, sites in parts for i in (range(len(sites)) if write is None else write)]
    means = mean_activations(adapter, outs, batches, skip_first=skip_first)
    conditions = splice_conditions(parts, means, write=write, error_term=error_term, skip_first=skip_first)
    scores = score_conditions(adapter, batches, conditions, mask_fraction=mask_fraction, seed=seed)
    return summarise(scores, hooks=sorted(set(outs)), n_samples=len(samples), mask_fraction=mask_fraction)
