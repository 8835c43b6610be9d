"""Where is a knowledge conflict visible? Linear probes per layer and site at the last prompt token.

Zhao et al. (2024) probe the residual stream, MLP outputs and attention outputs of Llama-2
for "the context contradicts what I know" and find it linearly detectable, best in the
middle layers. Here each (layer, site) gets an L1 logistic-regression probe trained on
the prompts of some facts and scored on the prompts of held-out facts (both prompts of a
fact, original and conflicting, always land in the same split, so a probe cannot succeed
by recognising the fact).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd
import torch

from core.errors import DataError
from core.samples import Sample
from core.steering import last_token_activations, linear_probe, resolve_hook


def split_by_group(groups: Sequence[str], *, test_fraction: float = 0.3, seed: int = 0) -> np.ndarray:
    """Boolean mask of test rows: a seeded random subset of whole groups (facts)."""
    uniq = sorted(set(groups))
    if len(uniq) < 2:
        raise DataError(f"need at least 2 facts to hold some out, got {len(uniq)}",
                        fix="use more facts (the memorised set is too small)")
    rng = np.random.default_rng(seed)
    n_test = min(len(uniq) - 1, max(1, int(round(test_fraction * len(uniq)))))
    test = set(rng.permutation(uniq)[:n_test].tolist())
    return np.array([g in test for g in groups])


def probe_curve(adapter: Any, samples: Sequence[Sample], labels: Sequence[int], groups: Sequence[str], *,
                sites: Sequence[str] = ("resid", "mlp_out", "attn_out"), layers: Sequence[int] | None = None,
                test_fraction: float = 0.3, seed: int = 0,
                C: float | Sequence[float] = (0.01, 0.1, 1.0, 10.0), batch_size: int = 16,
                acts: dict[str, torch.Tensor] | None = None) -> tuple[pd.DataFrame, dict[str, torch.Tensor]]:
    """Held-out accuracy and AUROC of an L1 probe per (layer, site); also returns the activations."""
    layers = list(range(adapter.n_layers)) if layers is None else list(layers)
    hooks = {(layer, site): resolve_hook(adapter, int(layer), site) for layer in layers for site in sites}
    if acts is None:
        acts = last_token_activations(adapter, samples, list(hooks.values()), batch_size=batch_size)
    y = np.asarray(labels, dtype=int)
    test = split_by_group(groups, test_fraction=test_fraction, seed=seed)
    g_train = np.asarray(groups)[~test]
    rows = []
    for (layer, site), hook in hooks.items():
        x = acts[hook].numpy()
        r = linear_probe(x[~test], y[~test], x[test], y[test], penalty="l1", C=C, seed=seed, groups_train=g_train)
        rows.append({"layer": int(layer), "site": site, "hook": hook, **r.as_dict()})
    return pd.DataFrame(rows), acts


def plot_probe_curve(df: pd.DataFrame, *, title: str = "Conflict vs no conflict, held-out facts"):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6), sharex=True)
    for site, g in df.groupby("site", sort=False):
        g = g.sort_values("layer")
        axes[0].plot(g["layer"], g["accuracy"], marker="o", ms=3, label=site)
        axes[1].plot(g["layer"], g["auroc"], marker="o", ms=3, label=site)
    for ax, lab in zip(axes, ("accuracy", "AUROC"), strict=True):
        ax.axhline(0.5, color="grey", ls="--", lw=0.8)
        ax.set_xlabel("layer")
        ax.set_ylabel(lab)
        ax.set_ylim(0.3, 1.02)
    axes[0].legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return fig
