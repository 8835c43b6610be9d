"""Small in-memory activation captures for steering and probing (a few hundred prompts).

Large harvests go through ``core.harvest`` into sharded stores; steering needs only one
vector per prompt (usually the last prompt token) at one or a few hooks.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from core.errors import ConfigError
from core.samples import Sample

SITES = {"resid": "hook_resid_post", "mlp_out": "hook_mlp_out", "attn_out": "hook_attn_out",
         "mlp_in": "hook_mlp_in"}


def resolve_hook(adapter: Any, layer: int, site: str = "resid") -> str:
    """Hook name for a layer and site; a clear error for a layer outside the model."""
    n = int(adapter.n_layers)
    if not isinstance(layer, int) or isinstance(layer, bool):
        raise ConfigError(f"layer must be an integer, got {layer!r}", fix=f"use a layer in 0..{n - 1}")
    if layer < 0 or layer >= n:
        raise ConfigError(f"layer {layer} is outside the model, which has {n} layers",
                          fix=f"use a layer in 0..{n - 1}")
    if site not in SITES:
        raise ConfigError(f"unknown site {site!r}", fix=f"use one of {sorted(SITES)}")
    hook = f"blocks.{layer}.{SITES[site]}"
    if hook not in adapter.hook_points:
        raise ConfigError(f"hook {hook} is not available in model {getattr(adapter, 'name', '?')}",
                          fix=f"choose from {adapter.hook_points[:6]}...")
    return hook


def _as_samples(prompts: Sequence[Any]) -> list[Sample]:
    return [p if isinstance(p, Sample) else Sample(id=str(i), text=str(p)) for i, p in enumerate(prompts)]


def last_token_activations(adapter: Any, prompts: Sequence[Any], hooks: Sequence[str], *,
                           batch_size: int = 16) -> dict[str, torch.Tensor]:
    """Activations at the last real token of each prompt: hook -> ``[n, d]`` float32."""
    samples = _as_samples(prompts)
    out: dict[str, list[torch.Tensor]] = {h: [] for h in hooks}
    with torch.no_grad():
        for start in range(0, len(samples), batch_size):
            chunk = samples[start:start + batch_size]
            batch = adapter.tokenize(chunk, sample_index=list(range(start, start + len(chunk))))
            acts = adapter.capture(batch, hooks=list(hooks))
            mask = batch.attention_mask.bool()
            t = mask.shape[1]
            idx = torch.arange(t).expand_as(mask)
            last = torch.where(mask, idx, torch.full_like(idx, -1)).max(dim=1).values
            rows = torch.arange(len(chunk))
            for h in hooks:
                out[h].append(acts[h][rows, last.to(acts[h].device)].float().cpu())
    return {h: torch.cat(v) if v else torch.empty(0) for h, v in out.items()}
